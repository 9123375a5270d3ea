"""The pipeline's cached steps, each a function of the Config.

Every step writes its artefact under ``<work_dir>/`` keyed by a hash of exactly the inputs it
depends on (config subset, upstream artefacts, the code that computes it), so a notebook can call
the steps it needs in any order, alone under papermill or in ``simlib run``, and a step runs only
when one of its inputs changed.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import atomic_write_json, atomic_write_text, content_hash
from .config import REPO_ROOT, Config


def _code_hash(*parts: str) -> str:
    from .runner import tree_hash

    return content_hash([tree_hash(REPO_ROOT / "simlib" / p, "**/*.py") if (REPO_ROOT / "simlib" / p).is_dir()
                         else tree_hash(REPO_ROOT / "simlib", p) for p in parts])


def _dtype_key(cfg: Config) -> dict:
    from .logprob import precision_key

    return precision_key(cfg.resolved_inference_dtype())


def _dump_stamp(paths: list) -> list:
    # size + mtime: hashing multi-GB dumps on every call would cost more than reading them.
    return [[str(p), Path(p).stat().st_size, int(Path(p).stat().st_mtime)] for p in paths]


def real_responses(cfg: Config) -> tuple[pd.DataFrame, dict]:
    """Real posts and top-level responses, filtered and split chronologically by post (cached).

    The source is the pinned crawl, or the Pushshift/Arctic-Shift ``dumps`` when set; either way
    ``subreddits`` (case-insensitive) and ``n_posts`` select the threads read by one rule
    (:mod:`simlib.data.select`), so every step downstream, and any count made from this table,
    sees the same posts whatever the source.
    """
    from . import data

    subset = {k: getattr(cfg, k) for k in ("subreddits", "n_posts", "min_chars", "min_responses",
                                           "max_responses", "train_frac", "val_frac")}
    dumps = [list(pair) for pair in cfg.dumps]
    key = content_hash({"cfg": subset, "dumps": [_dump_stamp(p) for p in dumps],
                        "code": _code_hash("data"), "registry": (REPO_ROOT / "simlib/data/crawler_registry.txt").read_text()})
    table, meta = cfg.path("data", f"real-{key}.jsonl"), cfg.path("data", f"real-{key}.report.json")
    if table.exists() and meta.exists():
        return _read_responses(table), json.loads(meta.read_text())

    fractions = (cfg.train_frac, cfg.val_frac, 1 - cfg.train_frac - cfg.val_frac)
    kw = dict(min_chars=cfg.min_chars, min_responses=cfg.min_responses,
              max_responses_per_post=cfg.max_responses, fractions=fractions)
    if dumps:
        df, report = data.load_dumps(dumps, cfg.subreddits, max_posts=cfg.n_posts or None, **kw)
    else:
        # data_dir=None lets the registry read $SIMLIB_DATA_DIR itself, so a missing file's error
        # names the setting the user actually made (the parameter or the environment variable).
        df, report = data.load_posts(cfg.subreddits, max_posts=cfg.n_posts or None,
                                     data_dir=cfg.data_dir or None, **kw)
    atomic_write_text(table, df.to_json(orient="records", lines=True, force_ascii=False))
    atomic_write_json(meta, report)  # written last: its presence marks the step complete
    return df, report


def _read_responses(path: Path) -> pd.DataFrame:
    """A cached responses table with the dtypes it was computed with (:mod:`simlib.data.schema`),
    so a warm run returns exactly what a cold one does (JSON alone loses the Int64 and boolean dtypes)."""
    from .data.schema import COLUMNS

    df = pd.read_json(path, lines=True, dtype=False)
    if df.columns.empty:  # an empty table is written as a bare newline
        df = pd.DataFrame(columns=[*COLUMNS, "split"])
    return df.astype({c: COLUMNS.get(c, "object") for c in df.columns})


# --------------------------------------------------------------------------- generation


@contextlib.contextmanager
def openai_endpoint(cfg: Config):
    """(base_url, model) of the endpoint the config names; starts the local server when empty.

    The ``ci`` and ``smoke`` profiles serve SmolLM2 from its package through llama.cpp on
    127.0.0.1 (``cfg.local_server``) and stop it afterwards; ``paper`` names the OpenAI API. The key is read by the
    client from the environment only.
    """
    if cfg.api_base_url:
        yield cfg.api_base_url, cfg.generator
        return
    from .generate import LocalServer

    if cfg.generator != "smollm2-135m":
        raise ValueError(f"the local server serves smollm2-135m only; generator is {cfg.generator!r} "
                         "(set api_base_url to use another model)")
    # All cores: while the server generates, the notebook kernel only waits for it. The parallel
    # server decodes cfg.concurrency requests together: one slot for each request in flight.
    with LocalServer(seed=cfg.seed, n_threads=os.cpu_count(), log_path=cfg.path("logs", "llama-server.log"),
                     backend=cfg.local_server, slots=cfg.concurrency) as srv:
        yield srv.base_url, srv.model


def test_posts(cfg: Config, df: pd.DataFrame) -> pd.DataFrame:
    """The posts synthetic responses are generated for: every post (train for GRPO, test for evaluation)."""
    from .data import posts_table

    return posts_table(df)


def endpoint_model(cfg: Config) -> str:
    """The model name requests carry (and cache keys hash) for the configured endpoint."""
    if cfg.api_base_url:
        return cfg.generator
    from .generate.server import model_alias

    return model_alias(cfg.local_server)


def style_kwargs(cfg: Config, styles: list[str], real: pd.DataFrame | None = None) -> dict:
    """Per-sample builder arguments of the styles that need them: one persona per sample
    (``persona``), and ``seed_examples`` real replies from *training* posts (``seeded``)."""
    from .generate.prompts import persona_kwargs
    from .seeding import seeded_kwargs

    out: dict = {}
    if "persona" in styles:
        out["persona"] = persona_kwargs
    if "seeded" in styles:
        if real is None:
            raise ValueError("the seeded style needs the real responses (real=...) to draw its examples from")
        out["seeded"] = seeded_kwargs(real, k=cfg.seed_examples, seed=cfg.seed, max_chars=cfg.seed_example_chars)
    return out


def synthetic_responses(cfg: Config, posts: pd.DataFrame, styles: list[str] | None = None,
                        endpoint: tuple[str, str] | None = None,
                        real: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """``n_samples`` synthetic responses per post and style, through the OpenAI-compatible client.

    Responses are appended to ``<work_dir>/generations.jsonl`` the moment they arrive, keyed by
    (post, style, sample index, model, prompt, sampling parameters), so a re-run sends only what is
    missing; when nothing is missing no server is started. ``real`` (the real responses with their
    split) is needed by the ``seeded`` style only. Returns the store rows for these requests and the
    run report.
    """
    from .generate import generate, load_store, make_requests

    styles = styles or cfg.styles
    store = cfg.path("generations.jsonl")
    model = endpoint[1] if endpoint else endpoint_model(cfg)
    reqs = make_requests(posts, styles, cfg.n_samples, model, temperature=cfg.temperature,
                         top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed,
                         max_post_chars=cfg.max_post_chars, style_kwargs=style_kwargs(cfg, styles, real))
    keys = {r.key for r in reqs}
    have = set(load_store(store)["key"]) if store.exists() else set()
    if keys <= have:
        report = {"n_requested": len(keys), "n_cached": len(keys), "n_ok": 0, "n_failed": 0, "n_retries": 0,
                  "tokens_in": 0, "tokens_out": 0, "cost_usd": None}
    elif cfg.use_batch_api and cfg.api_base_url:
        from .generate import run_batch

        # Batch API: half the price, results within 24 h; a re-run resumes submitted batches.
        prices = {k: v / 2 for k, v in _prices(model).items()}
        report = run_batch(reqs, store, cfg.api_base_url, model, **prices).to_dict()
    else:
        with contextlib.ExitStack() as stack:
            base_url, model = endpoint or stack.enter_context(openai_endpoint(cfg))
            # The local server decodes every request it accepted, even one whose client gave up: a
            # short timeout on a busy machine only queues retries behind the abandoned requests.
            report = generate(reqs, store, base_url, model, concurrency=cfg.concurrency, progress=True,
                              timeout=60.0 if cfg.api_base_url else 900.0, **_prices(model)).to_dict()
    out = load_store(store)
    out = out[out["key"].isin(keys)].reset_index(drop=True)
    return out, report


def _prices(model: str) -> dict:
    # USD per 1k tokens, for the cost estimate of paper runs (gpt-4o-mini list price, 2025).
    return {"price_per_1k_in": 0.00015, "price_per_1k_out": 0.0006} if model.startswith("gpt-4o-mini") else {}


def judge_labels(cfg: Config, items: pd.DataFrame, endpoint: tuple[str, str] | None = None,
                 questions: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Stance and register labels for ``items`` (columns item_id, title, text; optional subreddit),
    chosen by the judge model's log-prob over fixed label sets (:mod:`simlib.judge`), cached by
    content in ``judge/<model>.jsonl``. One row per item: ``stance``, ``register`` with their
    margins, and ``label`` (the register, what the remedy chapter counts); ``questions`` limits the
    questions asked (e.g. ``("stance",)``). ``endpoint`` is accepted for compatibility and unused:
    the judge reads the replies, it writes nothing."""
    from .judge import choose, judge_requests
    from .logprob import score_cached

    del endpoint
    if cfg.judge == cfg.generator:
        raise ValueError(f"the judge must not label replies it wrote: judge and generator are both {cfg.judge!r}; "
                         "set judge to another local causal LM (e.g. the scorer)")
    recs = items.to_dict("records")
    reqs = judge_requests(recs, max_chars=JUDGE_CHARS, questions=questions)
    scored = score_cached(reqs, cfg.path("judge", f"{cfg.judge.replace('/', '_')}.jsonl"), cfg.judge,
                          max_response_tokens=16, batch_size=cfg.logprob_batch_size,
                          dtype=cfg.resolved_inference_dtype())
    out = choose(pd.DataFrame(scored), {str(r["item_id"]): str(r["title"]) for r in recs})
    return out.assign(label=out["register"] if "register" in out else None)


JUDGE_CHARS = 600  # the judge reads a reply's first 600 characters: a verdict and its reasons come first


def embeddings(cfg: Config, texts: list[str]) -> np.ndarray:
    """Sentence embeddings of ``texts`` with the config's encoder, cached by content."""
    from .embed import embed_texts
    from .models import resolve

    key = content_hash({"encoder": cfg.encoder, "texts": texts, "code": _code_hash("embed.py")})
    path = cfg.path("embeddings", f"{key}.npy")
    if path.exists():
        return np.load(path)
    emb = embed_texts(texts, resolve(cfg.encoder))
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb


# --------------------------------------------------------------------------- log-probs


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from .models import resolve

    return AutoTokenizer.from_pretrained(resolve(name))


def own_samples(cfg: Config, posts: pd.DataFrame, model_name: str | None = None, n: int | None = None,
                temperature: float | None = None) -> pd.DataFrame:
    """``n`` replies sampled from ``model_name`` (default: the scorer) to each post, under the
    scorer's own conditioning (:func:`simlib.logprob.build_prompt`), at ``temperature`` (default:
    the profile's), cached in a JSONL store keyed by all of these."""
    from .cache import JsonlStore
    from .logprob import build_prompt, sample_own

    model_name = model_name or cfg.scorer
    n = n or cfg.n_per_group
    temperature = cfg.temperature if temperature is None else float(temperature)
    tok = _load_tokenizer(model_name)
    store = JsonlStore(cfg.path("own", f"{model_name.replace('/', '_')}.jsonl"))
    have = {r["key"]: r for r in store}
    settings = {"model": model_name, "n": n, "max_new_tokens": cfg.max_tokens, "temperature": temperature,
                "seed": cfg.seed, "max_post_chars": cfg.max_post_chars, "code": _code_hash("sampling.py"),
                **_dtype_key(cfg)}
    todo, keys = [], {}
    for post in posts.itertuples():
        prompt = build_prompt(post.title, post.body, post.subreddit, tok, max_post_chars=cfg.max_post_chars)
        keys[post.post_id] = content_hash({**settings, "prompt": prompt})
        if keys[post.post_id] not in have:
            todo.append((post.post_id, prompt))
    if todo:
        from .models import load_causal_lm

        tok, model = load_causal_lm(model_name, dtype=cfg.resolved_inference_dtype(), device=_device(cfg))
        per = max(1, cfg.sample_rows // n)
        todo.sort(key=lambda t: -len(t[1]))  # similar lengths decode together (little padding)
        for i in range(0, len(todo), per):  # each batch of posts is stored as soon as it is sampled
            chunk = todo[i:i + per]
            texts = sample_own([p for _, p in chunk], tok, model, n=n, max_new_tokens=cfg.max_tokens,
                               temperature=temperature, seed=cfg.seed, stop_strings=["\n\n"],
                               max_rows=cfg.sample_rows)
            recs = [{"key": keys[pid], "post_id": pid, "texts": t} for (pid, _), t in zip(chunk, texts)]
            store.append(recs)
            have.update({r["key"]: r for r in recs})
    rows = [{"post_id": pid, "source": "own", "text": t.strip()} for pid, k in keys.items() for t in have[k]["texts"]]
    return pd.DataFrame(rows, columns=["post_id", "source", "text"])


def _device(cfg: Config) -> str | None:
    # "auto" passes None, so $SIMLIB_DEVICE still applies (simlib.hardware.pick_device)
    d = getattr(cfg, "device", "auto")
    return None if d == "auto" else d


def logprob_scores(cfg: Config, table: pd.DataFrame, posts: pd.DataFrame, scorer: str | None = None,
                   max_response_tokens: int | None = None) -> pd.DataFrame:
    """Mean token log-prob of every row of ``table`` (post_id, source, text) given its post,
    under ``scorer`` (default: the config's scorer), prefix-shared and cached by content.

    Adds ``mean_logprob`` and ``n_tokens`` over the first ``max_response_tokens`` tokens (default:
    the config's), and ``mean_logprob_eq`` / ``n_tokens_eq`` over the first L tokens
    (:func:`equal_tokens`), the same cap for every source, computed from the stored per-token
    log-probs without scoring again.
    """
    from .convergence import equal_length_mean
    from .logprob import ScoreRequest, build_prompt, score_cached

    scorer = scorer or cfg.scorer
    cap = max_response_tokens or cfg.max_response_tokens
    L = min(equal_tokens(cfg), cap)
    tok = _load_tokenizer(scorer)
    by_id = posts.set_index("post_id")
    prompts = {pid: build_prompt(p.title, p.body, p.subreddit, tok, max_post_chars=cfg.max_post_chars)
               for pid, p in by_id.iterrows()}
    reqs = [ScoreRequest(post_id=r.post_id, response_id=str(i), prompt=prompts[r.post_id], response=r.text)
            for i, r in zip(table.index, table.itertuples())]
    scored = score_cached(reqs, cfg.path("logprob", f"{scorer.replace('/', '_')}.jsonl"), scorer,
                          max_response_tokens=cap, batch_size=cfg.logprob_batch_size,
                          dtype=cfg.resolved_inference_dtype(), keep_tokens=True)
    eq = [equal_length_mean(s["token_logprobs"], L) for s in scored]
    out = table.copy()
    out["scorer"] = scorer
    out["mean_logprob"] = [s["mean_logprob"] for s in scored]
    out["n_tokens"] = [s["n_tokens"] for s in scored]
    out["mean_logprob_eq"] = [m for m, _ in eq]
    out["n_tokens_eq"] = [k for _, k in eq]
    return out


def hidden_features(cfg: Config, texts: list[str], model_name: str, max_length: int = 256) -> np.ndarray:
    """Mean-pooled last-layer hidden states of ``texts`` under ``model_name``, each text cut to its
    first ``max_length`` tokens (cached by content); the encoder (MiniLM) gives its sentence embeddings."""
    if model_name == cfg.encoder:
        return embeddings(cfg, texts)
    from .alignment import mean_pooled_hidden
    from .models import load_causal_lm

    key = content_hash({"model": model_name, "texts": texts, "code": _code_hash("alignment.py"), **_dtype_key(cfg),
                        **({"max_length": max_length} if max_length != 256 else {})})
    path = cfg.path("hidden", f"{key}.npy")
    if path.exists():
        return np.load(path)
    tok, model = load_causal_lm(model_name, dtype=cfg.resolved_inference_dtype(), device=_device(cfg))
    feats = mean_pooled_hidden(texts, tok, model, max_length=max_length)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)
    return feats


# --------------------------------------------------------------------------- GRPO


def policy_prompts(cfg: Config, posts: pd.DataFrame) -> pd.DataFrame:
    """``post_id`` + chat ``prompt`` for the policy: the `plain` request, the simulator's task, with
    posts cut to ``policy_max_post_chars`` (``max_post_chars`` when 0)."""
    from .generate import build_messages

    chars = cfg.policy_max_post_chars or cfg.max_post_chars
    return pd.DataFrame({"post_id": posts["post_id"].astype(str).tolist(),
                         "prompt": [build_messages("plain", p, max_post_chars=chars)
                                    for p in posts.to_dict("records")]})


def reward_targets(cfg: Config, real: pd.DataFrame, posts: pd.DataFrame,
                   synthetic: pd.DataFrame | None = None) -> dict[str, dict[str, list[str]]]:
    """Targets per post and kind for the reward experiment, each cut to the completion budget
    (``max_completion_length`` of the policy's tokens, on a word boundary: :func:`simlib.examples.cap_tokens`).

    ``real``: a seeded random draw from each post's replies. ``synthetic``: the replies of
    ``cfg.reward_synthetic_from`` (the generator's styles, taken in turn, or a local model's samples).
    When the policy wrote the gap chapter's replies (``synthetic`` given, generator = policy), they
    come as a third, evaluation-only kind ``policy_own``: how much closer the untrained policy is to
    its own text than to another model's measures what self-similarity would cost.
    """
    from . import examples

    n = max(cfg.reward_targets_per_post, cfg.eval_refs)
    tok = _load_tokenizer(cfg.policy)
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
    return {kind: {p: [examples.cap_tokens(t, tok, cfg.max_completion_length) for t in ts]
                   for p, ts in by.items() if p in wanted}
            for kind, by in targets.items()}


def _in_turn(synthetic: pd.DataFrame) -> dict[str, list[str]]:
    # sample 0 of each style, then sample 1, ...: every style is represented from the first targets on
    from . import examples

    return examples.by_post(synthetic.sort_values(["post_id", "sample_index", "style"], kind="stable"), "text")


def reward_design(cfg: Config, real: pd.DataFrame, posts: pd.DataFrame, synthetic: pd.DataFrame | None = None,
                  extra: dict[str, pd.DataFrame] | None = None):
    """The :class:`simlib.examples.Design` of the reward experiment: training examples from the
    training posts, the probe set, and the held-out test posts with their references.

    ``extra``: further target kinds (``{name: table with post_id, text}``, e.g. the remedy styles),
    drawn and capped like the synthetic ones.
    """
    from . import examples

    targets = reward_targets(cfg, real, posts, synthetic)
    n = max(cfg.reward_targets_per_post, cfg.eval_refs)
    tok = _load_tokenizer(cfg.policy) if extra else None
    for name, table in (extra or {}).items():
        targets[name] = {p: [examples.cap_tokens(t, tok, cfg.max_completion_length) for t in ts]
                         for p, ts in examples.first(_in_turn(table), n).items()}
    split = posts.set_index(posts["post_id"].astype(str))["split"]
    prompts = policy_prompts(cfg, posts)
    train = prompts[prompts["post_id"].map(split) == "train"]
    test = prompts[prompts["post_id"].map(split) == "test"]
    eval_only = tuple(k for k in targets if k == "policy_own")
    return examples.design(train, test, targets, k=cfg.reward_targets_per_post, r=cfg.eval_refs,
                           probe_posts=cfg.probe_posts, eval_only=eval_only)


def train_spec(cfg: Config, seed: int):
    """The TrainSpec of one seed, from the config (the runs of a seed differ only in their target).

    ``prompts_per_step`` counts the prompts of a whole step; with ``num_processes`` > 1 (a launch
    through accelerate, :mod:`simlib.launch`) each process takes an equal share. vLLM rollouts are
    asked for only where vllm is importable and a GPU trains; elsewhere a warning says they are off.
    """
    import importlib.util
    import warnings

    from .train import TrainSpec

    n = cfg.resolved_num_processes()
    if cfg.prompts_per_step % n:
        raise ValueError(f"prompts_per_step ({cfg.prompts_per_step}) is not a multiple of the {n} training "
                         "processes; set num_processes or prompts_per_step")
    vllm: dict = {}
    if cfg.vllm_mode != "off":
        if importlib.util.find_spec("vllm") is not None and cfg.resolved_device() == "cuda":
            vllm = dict(use_vllm=True, vllm_mode=cfg.vllm_mode,
                        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
        else:
            warnings.warn(f"vllm_mode={cfg.vllm_mode!r} but vllm is not importable or no GPU trains: "
                          "GRPO rolls out with simlib's sampler", stacklevel=2)
    return TrainSpec(policy=cfg.policy, seed=seed, steps=cfg.grpo_steps, num_generations=cfg.num_generations,
                     prompts_per_step=cfg.prompts_per_step // n, beta=cfg.beta, loss_type=cfg.loss_type,
                     learning_rate=cfg.learning_rate, max_completion_length=cfg.max_completion_length,
                     temperature=cfg.temperature,  # one temperature for targets, rollouts and evaluation
                     use_lora=cfg.use_lora, bf16=cfg.resolved_bf16(), encoder=cfg.encoder,
                     reward_aggregate=cfg.reward_aggregate, output_dir=str(cfg.path("grpo", "x").parent),
                     # devices and scale: the defaults (float32, no checkpointing, auto device, 1 process)
                     # leave the spec, and so the run folders of CPU profiles, as they were
                     dtype=cfg.resolved_policy_dtype(), gradient_checkpointing=cfg.gradient_checkpointing,
                     use_cpu={"auto": None, "cpu": True, "cuda": False}[cfg.device],
                     num_processes=n, **vllm,
                     accelerate_config=cfg.accelerate_config if cfg.resolved_device() == "cuda" else "")


def grpo_runs(cfg: Config, prompts: pd.DataFrame, refs: dict[str, dict],
              seeds: list[int] | None = None) -> dict[tuple[str, int], Path]:
    """One GRPO run per target in ``refs`` (``{target: {post_id: texts}}``) and seed; every run
    resumes, or is skipped when done. Run folders are keyed by spec, prompts and references, so a
    run with other parameters or data never meets an old one's checkpoints, and a chapter asking
    for a run another chapter trained (same target data, same settings) gets it without training."""
    from .train import run_dir, train

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
    ``run_seed`` and cached by content (:func:`simlib.evaluate.sample_policy`; with ``base``, the base
    policy's evaluation of that seed, also the log-prob shift), then scored against every kind of
    reference of the design (:func:`simlib.evaluate.score_replies`, cheap, not cached), so designs that
    differ only in their references share the sampling."""
    from .evaluate import sample_policy, score_replies

    probe, test = design.probe, design.test
    prompts = probe["prompt"].tolist() + test["prompt"].tolist()
    ids = [f"probe:{p}" for p in probe["post_id"]] + [f"test:{p}" for p in test["post_id"]]
    refs = {k: {**{f"probe:{p}": v for p, v in design.probe_refs.get(k, {}).items()},
                **{f"test:{p}": v for p, v in design.test_refs[k].items()}} for k in design.kinds}
    sampling = {"n": cfg.eval_samples, "max_new_tokens": cfg.max_completion_length, "temperature": cfg.temperature,
                "seed": eval_seed(cfg, run_seed), "max_rows": cfg.sample_rows, "dtype": cfg.resolved_inference_dtype()}
    key = {"model": str(model), "prompts": prompts, **sampling, "base": base["responses"] if base else None,
           "code": _code_hash("evaluate.py", "train.py", "sampling.py", "logprob.py")}
    path = cfg.path("eval", f"{content_hash(key)}.json")
    if path.exists():
        res = json.loads(path.read_text())
    else:
        # how far a run moved is measured on the held-out posts only: each measure reads the prompts again
        res = sample_policy(str(model), prompts, **sampling, shift_of=base["responses"] if base else None,
                            base_logprobs=base["self_logprob"] if base else None,
                            logprob_rows=range(len(probe), len(prompts)))
        atomic_write_json(path, res)
    return {"post_id": ids, **res, "scores": score_replies(res["responses"], ids, refs, cfg.encoder)}


def reward_evaluations(cfg: Config, design, runs: dict[tuple[str, int], Path]) -> dict:
    """The base policy once per run seed and every run, on the design's probe and test posts:
    ``{("base", seed): eval, (kind, seed): eval}``."""
    out = {("base", s): policy_evaluation(cfg, cfg.policy, design, s) for s in sorted({s for _, s in runs})}
    for (kind, s), run in runs.items():
        out[(kind, s)] = policy_evaluation(cfg, str(run), design, s, base=out[("base", s)])
    return out


# --- quality and judge


def reply_quality(cfg: Config, responses: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """``responses`` (post_id, source, text) with the quality components of :mod:`simlib.quality`:
    ``relevance`` (encoder cosine between reply and post) and ``fluency`` (mean token log-prob under
    the scorer, the same cached scores the log-prob chapter reads)."""
    from . import gap

    reply_emb = embeddings(cfg, responses["text"].tolist())
    texts = gap.post_texts(posts, cfg.max_post_chars)
    post_emb = pd.DataFrame(embeddings(cfg, texts.tolist()), index=texts.index)
    scores = logprob_scores(cfg, responses[["post_id", "source", "text"]], posts)
    return gap.with_quality(responses, reply_emb, post_emb, scores["mean_logprob"].to_numpy())


def judge_validation_items(real: pd.DataFrame, posts: pd.DataFrame, per_post: int, seed: int = 0) -> pd.DataFrame:
    """Real replies that state an AITA verdict (the judge's ground truth): up to ``per_post`` per
    post, drawn at random with ``seed``; columns item_id, post_id, title, subreddit, text, verdict."""
    from .diversity import parse_verdict

    r = real.assign(text=real["response_text"].fillna("").astype(str))
    r = r.assign(verdict=r["text"].map(parse_verdict)).dropna(subset=["verdict"])
    r = r.sample(frac=1.0, random_state=seed).groupby("post_id", sort=False).head(per_post).sort_index()
    by = posts.set_index("post_id")
    return pd.DataFrame({"item_id": "truth:" + r["response_id"].astype(str), "post_id": r["post_id"],
                         "title": r["post_id"].map(by["title"]), "subreddit": r["post_id"].map(by["subreddit"]),
                         "text": r["text"], "verdict": r["verdict"]}).reset_index(drop=True)


# --- log-prob controls


def equal_tokens(cfg: Config) -> int:
    """L, the number of scorer tokens every reply is compared on: ``logprob_equal_tokens``, or
    (0) the shortest cap any source was cut at (:func:`simlib.convergence.equal_tokens`)."""
    from .convergence import equal_tokens as _eq

    return _eq(cfg.max_tokens, cfg.max_response_tokens, getattr(cfg, "logprob_equal_tokens", 0))


def t1_sizes(cfg: Config) -> dict:
    """The extra temperature-1.0 sets of the log-prob chapter: ``styles`` sampled, ``samples``
    per post (synthetic and the scorer's own alike), and whether they are extra at all (a profile
    that samples at 1.0 already reuses its main sets)."""
    styles = list(getattr(cfg, "t1_styles", []) or cfg.styles)
    samples = int(getattr(cfg, "t1_samples", 0) or cfg.n_per_group)
    return {"styles": styles, "samples": samples, "extra": float(cfg.temperature) != 1.0}


def synthetic_t1(cfg: Config, posts: pd.DataFrame, real: pd.DataFrame | None = None) -> pd.DataFrame:
    """The generator's replies at temperature 1.0: ``t1_samples`` per post in each of ``t1_styles``
    (:func:`t1_sizes`), through :func:`synthetic_responses` (so cached in ``generations.jsonl``,
    whose keys hold the temperature). Columns post_id, source (the style), text, temperature."""
    import dataclasses

    size = t1_sizes(cfg)
    sub = dataclasses.replace(cfg, temperature=1.0, n_samples=size["samples"])
    rows, _ = synthetic_responses(sub, posts, size["styles"], real=real)
    out = pd.DataFrame({"post_id": rows["post_id"], "source": rows["style"],
                        "text": rows["text"].fillna("").astype(str).str.strip(), "temperature": 1.0})
    return out[out["text"] != ""].reset_index(drop=True)


def own_t1(cfg: Config, posts: pd.DataFrame) -> pd.DataFrame:
    """The scorer's own samples at temperature 1.0, ``t1_samples`` per post (:func:`t1_sizes`)."""
    own = own_samples(cfg, posts, n=t1_sizes(cfg)["samples"], temperature=1.0)
    return own.assign(temperature=1.0)[lambda d: d["text"] != ""].reset_index(drop=True)
