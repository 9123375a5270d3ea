"""Which GRPO recipe learns steadily: a small sweep of one change at a time from the current recipe.

``python -m benchmarks --only recipe --out benchmarks/results/grpo_recipe.json`` (or
``python -m benchmarks.bench_recipe``) writes the JSON the Performance chapter reads.

Every setting trains the policy on the ``ci`` profile's data (its training posts with the synthetic
targets the reward chapter uses, the arm in which a book run once took off) for the same few steps
under each seed; seeds alternate with settings, so a slower stretch of a shared CPU falls on all of
them. After training, the trained and the base policy reply to the probe posts with the same
sampling seeds; a run's *gain* is the mean over probe posts of trained minus base BERTScore F1
against the post's own targets, and its *KL* the mean log-prob the base policy's replies lose
under the trained one (held-out and probe posts: :func:`simlib.train.evaluate.sample_policy`'s shift).

The rule, fixed before any number (:data:`RULE`): a setting is eligible if its mean gain is positive;
the winner is the eligible setting with the smallest seed-to-seed SD per unit of mean gain
(SD/mean); it replaces the current recipe only if it is *separated* from it, i.e. a one-sided F test
of the two settings' variances of gain/mean (``k - 1`` degrees of freedom each) rejects at 5%.
Otherwise the sweep cannot tell them apart at its size, and the tie-break decides: among eligible
settings whose step costs at most :data:`MAX_COST` times the current one's and that move towards the
study's recipe (lower learning rate, warmup, more prompts per step), the smallest SD/mean; if
there is none, the current recipe stays.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

from benchmarks.bench_grpo import step_timer
from simlib import config
from simlib.lm import weights  # noqa: F401  (models: offline environment)

# one change at a time from the current recipe; LoRA with the learning rate adapters usually need
SETTINGS: dict[str, dict[str, Any]] = {
    "current": {},
    "warmup": {"warmup_ratio": 0.3},
    "lr_3e-6": {"learning_rate": 3e-6},
    "lr_1e-6": {"learning_rate": 1e-6},
    "warmup_lr_3e-6": {"warmup_ratio": 0.3, "learning_rate": 3e-6},
    "prompts_4": {"prompts_per_step": 4},
    "generations_8": {"num_generations": 8},
    "scale_batch": {"scale_rewards": "batch"},
    "scale_none": {"scale_rewards": "none"},
    "beta_0.04": {"beta": 0.04},
    "lora_lr_1e-4": {"use_lora": True, "learning_rate": 1e-4},
}
# what the default sweep runs: scale_rewards=batch equals group with one prompt a step; warmup and the
# lower lr apart, lr 1e-6 and 8 generations did not fit the sweep's budget on a shared 2-core CPU
DEFAULT_SETTINGS = ("current", "warmup_lr_3e-6", "lora_lr_1e-4", "scale_none", "beta_0.04", "prompts_4")
# settings that move towards the study's recipe (lr 1e-6, 32 prompts a step): the tie-break's pool
STUDY_DIRECTION = ("warmup", "lr_3e-6", "lr_1e-6", "warmup_lr_3e-6", "prompts_4")
MAX_COST = 1.25
ALPHA = 0.05
RULE = ("eligible: mean gain > 0; winner: smallest seed-to-seed SD / mean gain; it replaces the current recipe "
        "if a one-sided F test of the variances of gain/mean (winner vs current, k-1 df each) rejects at 5%; "
        f"otherwise tie-break: among eligible settings costing <= {MAX_COST}x the current step and moving towards "
        "the study's recipe (lower lr, warmup, more prompts per step), the smallest SD / mean gain; if none, "
        "the current recipe stays")


def _data(cfg) -> tuple[Any, dict, dict]:
    """The reward chapter's design on this profile: training prompts, their synthetic targets, the design."""
    from simlib import steps

    real, _ = steps.real_responses(cfg)
    posts = steps.test_posts(cfg, real)
    design = steps.reward_design(cfg, real, posts)
    return design.train, design.train_refs["synthetic"], design


def _train(cfg, seed: int, change: dict, prompts, refs, steps: int):
    """One run in memory (nothing saved): the trained model, its log and its step times."""
    import dataclasses

    from simlib.measures.reward import BertScoreReward
    from simlib.train import build_trainer
    from simlib.train.run import prompt_records
    from simlib.train.spec import from_config, grpo_config

    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        spec = dataclasses.replace(from_config(cfg, seed), steps=steps, output_dir=tmp, save_steps=0, **change)
        reward = BertScoreReward(spec.encoder, refs, aggregate=spec.reward_aggregate, device="cpu")
        timer = step_timer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer = build_trainer(spec, prompt_records(prompts), reward, grpo_config(spec, cpu=True), callbacks=[timer])
            trainer.train()
    hist = [h for h in trainer.state.log_history if "reward" in h]
    model = trainer.model
    if spec.use_lora:
        model = model.merge_and_unload()
    return model.eval(), hist, timer.seconds


def _evaluate(cfg, model, tok, design, seed: int, base: dict | None = None) -> dict:
    """Replies to probe and test posts with the seed paired with ``seed``, their F1 against the
    synthetic targets, and (with ``base``) the log-prob shift of the base replies."""
    import math

    import torch

    from simlib import steps
    from simlib.train import generate_responses
    from simlib.train.evaluate import mean_logprobs, score_replies

    prompts = design.probe["prompt"].tolist() + design.test["prompt"].tolist()
    ids = [f"probe:{p}" for p in design.probe["post_id"]] + [f"test:{p}" for p in design.test["post_id"]]
    refs = {"synthetic": {f"probe:{p}": v for p, v in design.probe_refs["synthetic"].items()}}
    with torch.no_grad():
        replies = generate_responses("", prompts, n=cfg.eval_samples, max_new_tokens=cfg.max_completion_length,
                                     seed=steps.eval_seed(cfg, seed), temperature=cfg.temperature, model=model,
                                     tokenizer=tok, max_rows=cfg.sample_rows)
        lp = mean_logprobs(model, tok, prompts, base["replies"] if base else replies, cfg.max_completion_length)
    f1 = score_replies(replies, ids, refs, cfg.encoder)["synthetic"]
    out = {"replies": replies, "logprob": lp, "probe_f1": [x for x in f1 if not math.isnan(x)]}
    if base:
        out["gain"] = statistics.fmean(a - b for a, b in zip(out["probe_f1"], base["probe_f1"]))
        out["kl"] = -statistics.fmean(a - b for a, b in zip(lp, base["logprob"]) if not math.isnan(a - b))
    return out


def _run_record(ev: dict, hist: list[dict], seconds: list[float]) -> dict:
    rewards = [h["reward"] for h in hist]
    k = max(1, len(rewards) // 3)
    return {"gain": round(ev["gain"], 5), "kl": round(ev["kl"], 5),
            "median_step_s": round(statistics.median(seconds[1:] or seconds), 3),
            "reward_first_third": round(statistics.fmean(rewards[:k]), 4),
            "reward_last_third": round(statistics.fmean(rewards[-k:]), 4),
            "grad_norm_median": round(statistics.median(h.get("grad_norm", float("nan")) for h in hist), 3)}


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Per setting: mean gain, seed-to-seed SD, SD/mean, mean KL and median step time."""
    out = {}
    for name, rs in runs.items():
        gains = [r["gain"] for r in rs]
        mean, sd = statistics.fmean(gains), statistics.stdev(gains) if len(gains) > 1 else None
        out[name] = {"seeds": len(rs), "mean_gain": round(mean, 5), "sd_gain": None if sd is None else round(sd, 5),
                     "sd_per_gain": round(sd / mean, 3) if mean > 0 and len(gains) > 1 else None,
                     "mean_kl": round(statistics.fmean(r["kl"] for r in rs), 5),
                     "median_step_s": round(statistics.median(r["median_step_s"] for r in rs), 3)}
    # cost: the median over seeds of the step time over the current recipe's in the same seed (run beside it)
    base = {r["seed"]: r["median_step_s"] for r in runs["current"] if "seed" in r}
    for name, rs in runs.items():
        ratios = [r["median_step_s"] / base[r["seed"]] for r in rs if r.get("seed") in base]
        out[name]["step_cost_vs_current"] = round(statistics.median(ratios), 2) if ratios else None
    return out


def choose(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rule of :data:`RULE` applied to :func:`summarise`'s table."""
    from scipy import stats

    eligible = {k: v for k, v in table.items() if v["sd_per_gain"] is not None and v["seeds"] >= 2}
    if not eligible:
        return {"winner": None, "separated": False, "choice": "current",
                "reason": "no setting raised the probe reward on average: nothing to choose by SD per gain"}
    winner = min(eligible, key=lambda k: eligible[k]["sd_per_gain"])
    cur = table["current"]
    separated, p = False, None
    if winner != "current" and cur["sd_per_gain"] is not None and eligible[winner]["sd_per_gain"] > 0:
        f = (cur["sd_per_gain"] / eligible[winner]["sd_per_gain"]) ** 2
        p = float(stats.f.sf(f, cur["seeds"] - 1, eligible[winner]["seeds"] - 1))
        separated = p < ALPHA
    elif winner != "current":
        separated = cur["sd_per_gain"] is None  # the current recipe did not learn at all: any learner beats it
    if winner == "current":  # said with how far it stands from the next best: whether the sweep told them apart
        rest = {k: v for k, v in eligible.items() if k != "current"}
        nxt = min(rest, key=lambda k: rest[k]["sd_per_gain"]) if rest else None
        if nxt and cur["sd_per_gain"] > 0:
            p = float(stats.f.sf((rest[nxt]["sd_per_gain"] / cur["sd_per_gain"]) ** 2,
                                 rest[nxt]["seeds"] - 1, cur["seeds"] - 1))
        return {"winner": winner, "runner_up": nxt, "separated": bool(p is not None and p < ALPHA), "f_test_p": p,
                "choice": winner, "reason": "the current recipe has the smallest SD per gain and stays" + (
                    f" (against the next, {nxt}, one-sided F test p = {p:.2f})" if p is not None else "")}
    if separated:
        return {"winner": winner, "separated": True, "f_test_p": p, "choice": winner,
                "reason": f"{winner} has the smallest SD per gain and is separated from the current recipe "
                          f"(one-sided F test p = {p:.2f})" if p is not None else f"{winner} learns where the current recipe does not"}
    pool = {k: v for k, v in eligible.items() if k in STUDY_DIRECTION and (v["step_cost_vs_current"] or 0) <= MAX_COST}
    pick = min(pool, key=lambda k: pool[k]["sd_per_gain"]) if pool else "current"
    return {"winner": winner, "separated": False, "f_test_p": p, "choice": pick,
            "reason": f"{winner} has the smallest SD per gain but the sweep cannot separate it from the current recipe "
                      f"at its size (one-sided F test p = {p if p is None else round(p, 2)}); the tie-break " +
                      (f"keeps {pick}" if pool else "finds no eligible setting in the study's direction, so the current "
                                                    "recipe stays")}


def run(quick: bool = True, threads: int | None = None, seeds: int = 3, steps: int = 4,
        settings: tuple[str, ...] | None = DEFAULT_SETTINGS, post_chars: int = 200,
        partial: str | None = None, first_seed: int = 0) -> dict[str, Any]:
    """The sweep on the ``ci`` data with posts cut to ``post_chars`` characters in the policy's
    prompts; ``partial``: a JSON file rewritten after each seed (a stopped sweep keeps its seeds).
    ``quick``: two settings, two seeds, two steps (the wiring, not the answer)."""
    import torch

    from simlib.train import load_policy

    if threads:
        torch.set_num_threads(threads)
    cfg = config.load("ci", {"work_dir": "runs/bench-recipe", "policy_max_post_chars": post_chars})
    if quick:
        seeds, steps, settings = 2, 2, ("current", "warmup")
    names = list(settings or DEFAULT_SETTINGS)
    prompts, refs, design = _data(cfg)
    tok, base_model = load_policy(cfg.policy, "float32")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        base = _evaluate(cfg, base_model, tok, design, seed)
        for name in names:  # settings alternate within each seed
            model, hist, seconds = _train(cfg, seed, SETTINGS[name], prompts, refs, steps)
            ev = _evaluate(cfg, model, tok, design, seed, base)
            runs[name].append({"seed": seed, **_run_record(ev, hist, seconds)})
            del model
            gc.collect()
            print(f"[recipe] seed {seed} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
            if partial:
                with open(partial, "w") as fh:
                    json.dump(_result(cfg, design, prompts, names, runs, steps, seed + 1, quick, t0), fh, indent=2)
    return _result(cfg, design, prompts, names, runs, steps, seeds, quick, t0)


def _result(cfg, design, prompts, names, runs, steps, seeds, quick, t0) -> dict[str, Any]:
    import torch

    runs = {n: r for n, r in runs.items() if r}
    table = summarise(runs)
    current = {"learning_rate": cfg.learning_rate, "prompts_per_step": cfg.prompts_per_step,
               "num_generations": cfg.num_generations, "beta": cfg.beta, "warmup_ratio": cfg.warmup_ratio,
               "scale_rewards": cfg.scale_rewards, "use_lora": cfg.use_lora}
    decision = choose(table)
    decision["recipe"] = {**current, **SETTINGS[decision["choice"]]}
    return {"setup": {"profile": cfg.profile, "train_examples": len(prompts), "probe_posts": len(design.probe),
                      "test_posts": len(design.test), "target": "synthetic", "steps": steps, "seeds": seeds,
                      "eval_samples": cfg.eval_samples, "policy_max_post_chars": cfg.policy_max_post_chars,
                      "max_completion_length": cfg.max_completion_length, "torch_threads": torch.get_num_threads(), "quick": quick,
                      "current": current,
                      "wall_min": round((time.perf_counter() - t0) / 60, 1)},
            "settings": {n: SETTINGS[n] for n in names if n in runs}, "rule": RULE, "runs": runs, "table": table,
            "decision": decision}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_recipe", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ... (to extend a sweep)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--post-chars", type=int, default=200, help="posts cut to this many characters in the prompts")
    ap.add_argument("--only", action="append", choices=list(SETTINGS), help="settings to run (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the result here (JSON)")
    ap.add_argument("--partial", default=None, help="rewrite this JSON after every run (a stopped sweep keeps them)")
    ns = ap.parse_args(argv)
    res = run(quick=False, threads=ns.threads, seeds=ns.seeds, steps=ns.steps, post_chars=ns.post_chars,
              settings=tuple(ns.only or ()) or DEFAULT_SETTINGS, partial=ns.partial, first_seed=ns.first_seed)
    text = json.dumps(wrap(res), indent=2)
    if ns.out:
        with open(ns.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


def wrap(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as ``python -m benchmarks --only recipe`` writes it (machine, load, commit)."""
    from benchmarks.__main__ import machine_info

    machine = machine_info()
    machine["loadavg_end"] = machine["loadavg_start"]  # the load when the result was written (the sweep's is long)
    return {"quick": bool(result["setup"]["quick"]), "threads": result["setup"]["torch_threads"],
            "machine": machine, "benchmarks": {"recipe": {"status": "ok", "result": result}}}


if __name__ == "__main__":
    sys.exit(main())
