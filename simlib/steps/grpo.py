"""The reward experiment's steps: policy prompts, targets, the design, the GRPO runs and their
paired evaluations."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simlib import progress
from simlib.cache import atomic_write_json, content_hash
from simlib.config import Config
from simlib.steps.artifacts import cached_artifact, code_hash, load_tokenizer
from simlib.steps.scoring import own_samples

__all__ = ["policy_prompts", "reward_targets", "reward_design", "train_spec", "grpo_runs", "eval_seed",
           "policy_evaluation", "reward_evaluations", "reference_agreement", "target_table"]


def policy_prompts(cfg: Config, posts: pd.DataFrame) -> pd.DataFrame:
    """``post_id`` + chat ``prompt`` for the policy: the `plain` request, the simulator's task, with
    posts cut to ``policy_max_post_chars`` (``max_post_chars`` when 0)."""
    from simlib.generate import build_messages

    chars = cfg.policy_max_post_chars or cfg.max_post_chars
    return pd.DataFrame({"post_id": posts["post_id"].astype(str).tolist(),
                         "prompt": [build_messages("plain", p, max_post_chars=chars)
                                    for p in posts.to_dict("records")]})


def reward_targets(cfg: Config, real: pd.DataFrame, posts: pd.DataFrame,
                   synthetic: pd.DataFrame | None = None) -> dict[str, dict[str, list[str]]]:
    """Targets per post and kind for the reward experiment, each cut to the completion budget
    (``max_completion_length`` of the policy's tokens, on a word boundary: :func:`simlib.train.examples.cap_tokens`).

    ``real``: a seeded random draw from each post's replies. ``synthetic``: the replies of
    ``cfg.reward_synthetic_from`` (the generator's styles, taken in turn, or a local model's samples).
    When the policy wrote the gap chapter's replies (``synthetic`` given, generator = policy), they
    come as a third, evaluation-only kind ``policy_own``: how much closer the untrained policy is to
    its own text than to another model's measures what self-similarity would cost.
    """
    from simlib.train import examples

    n = max(cfg.reward_targets_per_post, cfg.eval_refs)
    tok = load_tokenizer(cfg.policy)
    targets = {"real": examples.draw(examples.by_post(real, "response_text"), n, cfg.seed)}
    if cfg.reward_synthetic_from == "generator":
        if synthetic is None:
            raise ValueError("reward_synthetic_from=generator needs the generator's replies (synthetic=...)")
        targets["synthetic"] = examples.first(_in_turn(synthetic), n)
    else:
        own = own_samples(cfg, posts, model_name=cfg.reward_synthetic_from, n=max(n, cfg.n_per_group))
        targets["synthetic"] = examples.first(examples.by_post(own, "text"), n)
        if synthetic is not None and cfg.generator == cfg.policy:
            targets["policy_own"] = examples.first(_in_turn(synthetic), n)
    wanted = set(posts["post_id"].astype(str))
    return {kind: _capped(cfg, by, tok, wanted) for kind, by in targets.items()}


def _capped(cfg: Config, by_post: dict[str, list[str]], tok, wanted: set[str] | None = None) -> dict[str, list[str]]:
    # one rule for every kind of target: cut to the policy's completion budget on a word boundary
    from simlib.train import examples

    return {p: [examples.cap_tokens(t, tok, cfg.max_completion_length) for t in ts]
            for p, ts in by_post.items() if wanted is None or p in wanted}


def _in_turn(synthetic: pd.DataFrame) -> dict[str, list[str]]:
    # sample 0 of each style, then sample 1, ...: every style is represented from the first targets on
    from simlib.train import examples

    return examples.by_post(synthetic.sort_values(["post_id", "sample_index", "style"], kind="stable"), "text")


def reward_design(cfg: Config, real: pd.DataFrame, posts: pd.DataFrame, synthetic: pd.DataFrame | None = None,
                  extra: dict[str, pd.DataFrame] | None = None):
    """The :class:`simlib.train.examples.Design` of the reward experiment: training examples from the
    training posts, the probe set, and the held-out test posts with their references.

    ``extra``: further target kinds (``{name: table with post_id, text}``, e.g. the remedy styles),
    drawn and capped like the synthetic ones.
    """
    from simlib.train import examples

    targets = reward_targets(cfg, real, posts, synthetic)
    n = max(cfg.reward_targets_per_post, cfg.eval_refs)
    tok = load_tokenizer(cfg.policy) if extra else None
    for name, table in (extra or {}).items():
        targets[name] = _capped(cfg, examples.first(_in_turn(table), n), tok)
    split = posts.set_index(posts["post_id"].astype(str))["split"]
    prompts = policy_prompts(cfg, posts)
    train = prompts[prompts["post_id"].map(split) == "train"]
    test = prompts[prompts["post_id"].map(split) == "test"]
    eval_only = tuple(k for k in targets if k == "policy_own")
    return examples.design(train, test, targets, k=cfg.reward_targets_per_post, r=cfg.eval_refs,
                           probe_posts=cfg.probe_posts, eval_only=eval_only)


def train_spec(cfg: Config, seed: int):
    """The TrainSpec of one seed (:func:`simlib.train.spec.from_config`)."""
    from simlib.train.spec import from_config

    return from_config(cfg, seed)


def grpo_runs(cfg: Config, prompts: pd.DataFrame, refs: dict[str, dict],
              seeds: list[int] | None = None) -> dict[tuple[str, int], Path]:
    """One GRPO run per target in ``refs`` (``{target: {post_id: texts}}``) and seed; every run
    resumes, or is skipped when done. Run folders are keyed by spec, prompts and references, so a
    run with other parameters or data never meets an old one's checkpoints, and a chapter asking
    for a run another chapter trained (same target data, same settings) gets it without training."""
    from simlib.train import run_dir, train

    done = {}
    for seed in seeds or cfg.grpo_seeds:
        base = train_spec(cfg, seed)
        for target, target_refs in refs.items():
            spec = run_dir(base, target, prompts, target_refs)
            done[(target, seed)] = Path(train(spec, prompts, target_refs))
    return done


def eval_seed(cfg: Config, run_seed: int) -> int:
    """The sampling seed of every evaluation paired with run seed ``run_seed`` (the base policy's too)."""
    return 100_000 + 1_000 * int(run_seed) + int(cfg.seed)


def policy_evaluation(cfg: Config, model: str, design, run_seed: int, base: dict | None = None) -> dict:
    """``model``'s replies to the design's probe and test posts, sampled with the seed paired with
    ``run_seed`` and cached by content (:func:`simlib.train.evaluate.sample_policy`; with ``base``, the base
    policy's evaluation of that seed, also the log-prob shift), then scored against every kind of
    reference of the design (:func:`simlib.train.evaluate.score_replies`, cheap, not cached), so designs that
    differ only in their references share the sampling."""
    from simlib.train.evaluate import sample_policy, score_replies

    probe, test = design.probe, design.test
    prompts = probe["prompt"].tolist() + test["prompt"].tolist()
    ids = [f"probe:{p}" for p in probe["post_id"]] + [f"test:{p}" for p in test["post_id"]]
    refs = {k: {**{f"probe:{p}": v for p, v in design.probe_refs.get(k, {}).items()},
                **{f"test:{p}": v for p, v in design.test_refs[k].items()}} for k in design.kinds}
    sampling = {"n": cfg.eval_samples, "max_new_tokens": cfg.max_completion_length, "temperature": cfg.temperature,
                "seed": eval_seed(cfg, run_seed), "max_rows": cfg.sample_rows, "dtype": cfg.resolved_inference_dtype()}
    key = {"model": str(model), "prompts": prompts, **sampling, "base": base["responses"] if base else None,
           "code": code_hash("train", "lm/sampling.py", "lm/logprob.py", "lm/forward.py")}
    # how far a run moved is measured on the held-out posts only: each measure reads the prompts again
    res = cached_artifact(cfg.path("eval", f"{content_hash(key)}.json"),
                          lambda: sample_policy(str(model), prompts, **sampling,
                                                shift_of=base["responses"] if base else None,
                                                base_logprobs=base["self_logprob"] if base else None,
                                                logprob_rows=range(len(probe), len(prompts))),
                          lambda p: json.loads(p.read_text()), atomic_write_json)
    return {"post_id": ids, **res, "scores": score_replies(res["responses"], ids, refs, cfg.encoder)}


def reward_evaluations(cfg: Config, design, runs: dict[tuple[str, int], Path]) -> dict:
    """The base policy once per run seed and every run, on the design's probe and test posts:
    ``{("base", seed): eval, (kind, seed): eval}``."""
    out = {("base", s): policy_evaluation(cfg, cfg.policy, design, s) for s in sorted({s for _, s in runs})}
    for i, ((kind, s), run) in enumerate(runs.items()):
        progress.report("evaluating trained policies", i, len(runs), run=f"{kind} seed {s}")
        out[(kind, s)] = policy_evaluation(cfg, str(run), design, s, base=out[("base", s)])
    return out


def reference_agreement(cfg: Config, design, kind: str = "real") -> dict[str, float]:
    """Per held-out post with at least two references of ``kind``: the mean BERTScore F1 of each
    reference against the post's other references, scored as a policy's reply is
    (:func:`simlib.train.evaluate.score_replies`): how close one real reply comes to the others,
    the ceiling the margin rule measures headroom against (:func:`simlib.findings.claim.margin`)."""
    from simlib.train.evaluate import score_replies

    refs = {p: list(v) for p, v in design.test_refs[kind].items() if len(v) >= 2}
    ids = [f"{p}{_SEP}{i}" for p, v in refs.items() for i in range(len(v))]
    others = {f"{p}{_SEP}{i}": v[:i] + v[i + 1:] for p, v in refs.items() for i in range(len(v))}
    got = score_replies([[refs[i.rsplit(_SEP, 1)[0]][int(i.rsplit(_SEP, 1)[1])]] for i in ids], ids,
                        {kind: others}, cfg.encoder)[kind]
    per: dict[str, list[float]] = {}
    for i, f in zip(ids, got):
        per.setdefault(i.rsplit(_SEP, 1)[0], []).append(f)
    return {p: sum(v) / len(v) for p, v in per.items()}


_SEP = "@"  # reference id = f"{post_id}@{i}" (post ids never contain it)


def target_table(cfg: Config, real: pd.DataFrame, posts: pd.DataFrame,
                 synthetic: pd.DataFrame | None = None) -> pd.DataFrame:
    """The reward chapter's capped targets as a long table (post_id, source, text): what the runs are
    trained towards, for the homogeneity check of :mod:`simlib.findings.targets`. When the policy also
    wrote the gap chapter's replies, they come too (source ``policy_own``, cut alike): the one
    instruction-tuned writer this project ships, measured as the alternative to the targets' writer."""
    targets = reward_targets(cfg, real, posts, synthetic)
    return pd.DataFrame([{"post_id": p, "source": kind, "text": t} for kind in ("real", "synthetic", "policy_own")
                         for p, ts in targets.get(kind, {}).items() for t in ts])
