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
    """Real posts and top-level responses, filtered and split chronologically by post (cached)."""
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
        frames = [data.read_pushshift(s, c) for s, c in dumps]
        df, report = data.prepare(pd.concat(frames, ignore_index=True), **kw)
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
            report = generate(reqs, store, base_url, model, concurrency=cfg.concurrency, progress=True,
                              **_prices(model)).to_dict()
    out = load_store(store)
    out = out[out["key"].isin(keys)].reset_index(drop=True)
    return out, report


def _prices(model: str) -> dict:
    # USD per 1k tokens, for the cost estimate of paper runs (gpt-4o-mini list price, 2025).
    return {"price_per_1k_in": 0.00015, "price_per_1k_out": 0.0006} if model.startswith("gpt-4o-mini") else {}


def judge_labels(cfg: Config, items: pd.DataFrame, endpoint: tuple[str, str] | None = None) -> pd.DataFrame:
    """Register labels for ``items`` (columns item_id, title, text), cached in ``judge.jsonl``."""
    from .generate import generate, load_store
    from .judge import judge_requests, label_table

    store = cfg.path("judge.jsonl")
    with contextlib.ExitStack() as stack:
        if endpoint is None and cfg.api_base_url:
            endpoint = (cfg.api_base_url, cfg.judge)
        base_url, model = endpoint or stack.enter_context(openai_endpoint(cfg))
        reqs = judge_requests(items.to_dict("records"), model)
        generate(reqs, store, base_url, model, concurrency=cfg.concurrency, progress=True)
    keys = {r.key for r in reqs}
    rows = load_store(store)
    return label_table(rows[rows["key"].isin(keys)])


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


def own_samples(cfg: Config, posts: pd.DataFrame, model_name: str | None = None, n: int | None = None) -> pd.DataFrame:
    """``n`` replies sampled from ``model_name`` (default: the scorer) to each post, under the
    scorer's own conditioning (:func:`simlib.logprob.build_prompt`), cached in a JSONL store."""
    from .cache import JsonlStore
    from .logprob import build_prompt, sample_own

    model_name = model_name or cfg.scorer
    n = n or cfg.n_per_group
    tok = _load_tokenizer(model_name)
    store = JsonlStore(cfg.path("own", f"{model_name.replace('/', '_')}.jsonl"))
    have = {r["key"]: r for r in store}
    settings = {"model": model_name, "n": n, "max_new_tokens": cfg.max_tokens, "temperature": cfg.temperature,
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

        tok, model = load_causal_lm(model_name, dtype=cfg.resolved_inference_dtype())
        per = max(1, cfg.sample_rows // n)
        todo.sort(key=lambda t: -len(t[1]))  # similar lengths decode together (little padding)
        for i in range(0, len(todo), per):  # each batch of posts is stored as soon as it is sampled
            chunk = todo[i:i + per]
            texts = sample_own([p for _, p in chunk], tok, model, n=n, max_new_tokens=cfg.max_tokens,
                               temperature=cfg.temperature, seed=cfg.seed, stop_strings=["\n\n"],
                               max_rows=cfg.sample_rows)
            recs = [{"key": keys[pid], "post_id": pid, "texts": t} for (pid, _), t in zip(chunk, texts)]
            store.append(recs)
            have.update({r["key"]: r for r in recs})
    rows = [{"post_id": pid, "source": "own", "text": t.strip()} for pid, k in keys.items() for t in have[k]["texts"]]
    return pd.DataFrame(rows, columns=["post_id", "source", "text"])


def logprob_scores(cfg: Config, table: pd.DataFrame, posts: pd.DataFrame, scorer: str | None = None) -> pd.DataFrame:
    """Mean token log-prob of every row of ``table`` (post_id, source, text) given its post,
    under ``scorer`` (default: the config's scorer), prefix-shared and cached by content."""
    from .logprob import ScoreRequest, build_prompt, score_cached

    scorer = scorer or cfg.scorer
    tok = _load_tokenizer(scorer)
    by_id = posts.set_index("post_id")
    prompts = {pid: build_prompt(p.title, p.body, p.subreddit, tok, max_post_chars=cfg.max_post_chars)
               for pid, p in by_id.iterrows()}
    reqs = [ScoreRequest(post_id=r.post_id, response_id=str(i), prompt=prompts[r.post_id], response=r.text)
            for i, r in zip(table.index, table.itertuples())]
    scored = score_cached(reqs, cfg.path("logprob", f"{scorer.replace('/', '_')}.jsonl"), scorer,
                          max_response_tokens=cfg.max_response_tokens, batch_size=cfg.logprob_batch_size,
                          dtype=cfg.resolved_inference_dtype())
    out = table.copy()
    out["scorer"] = scorer
    out["mean_logprob"] = [s["mean_logprob"] for s in scored]
    out["n_tokens"] = [s["n_tokens"] for s in scored]
    return out


def hidden_features(cfg: Config, texts: list[str], model_name: str) -> np.ndarray:
    """Mean-pooled last-layer hidden states of ``texts`` under ``model_name`` (cached by content);
    the encoder (MiniLM) gives its sentence embeddings."""
    if model_name == cfg.encoder:
        return embeddings(cfg, texts)
    from .alignment import mean_pooled_hidden
    from .models import load_causal_lm

    key = content_hash({"model": model_name, "texts": texts, "code": _code_hash("alignment.py"), **_dtype_key(cfg)})
    path = cfg.path("hidden", f"{key}.npy")
    if path.exists():
        return np.load(path)
    tok, model = load_causal_lm(model_name, dtype=cfg.resolved_inference_dtype())
    feats = mean_pooled_hidden(texts, tok, model)
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


def references(real: pd.DataFrame, synthetic: pd.DataFrame, per_post: int) -> dict[str, dict[str, list[str]]]:
    """Targets per post: ``real`` and ``synthetic`` (all of ``synthetic``'s styles, taken in turn:
    sample 0 of each style, then sample 1, ...), each capped at the same ``per_post`` count, so that
    the synthetic and the real run train on the same amount of data."""
    synthetic = synthetic.sort_values(["post_id", "sample_index", "style"], kind="stable")
    return {"synthetic": _targets(synthetic, "text", per_post), "real": _targets(real, "response_text", per_post)}


def style_references(synthetic: pd.DataFrame, per_post: int) -> dict[str, dict[str, list[str]]]:
    """Targets per post for each style of ``synthetic`` on its own (e.g. ``persona``, ``seeded``),
    capped at ``per_post`` like :func:`references`."""
    return {str(style): _targets(g.sort_values(["post_id", "sample_index"], kind="stable"), "text", per_post)
            for style, g in synthetic.groupby("style", sort=False)}


def _targets(df: pd.DataFrame, col: str, per_post: int) -> dict[str, list[str]]:
    texts = df.assign(_t=df[col].fillna("").astype(str).str.strip())
    texts = texts[texts["_t"] != ""]
    return {str(pid): g["_t"].head(per_post).tolist() for pid, g in texts.groupby("post_id")}


def train_spec(cfg: Config, seed: int):
    """The TrainSpec of one seed, from the config (the runs of a seed differ only in their target)."""
    from .train import TrainSpec

    return TrainSpec(policy=cfg.policy, seed=seed, steps=cfg.grpo_steps, num_generations=cfg.num_generations,
                     prompts_per_step=cfg.prompts_per_step, beta=cfg.beta, loss_type=cfg.loss_type,
                     learning_rate=cfg.learning_rate, max_completion_length=cfg.max_completion_length,
                     use_lora=cfg.use_lora, bf16=cfg.resolved_bf16(), encoder=cfg.encoder,
                     reward_aggregate=cfg.reward_aggregate, output_dir=str(cfg.path("grpo", "x").parent))


def grpo_runs(cfg: Config, prompts: pd.DataFrame, refs: dict[str, dict]) -> dict[tuple[str, int], Path]:
    """One GRPO run per target in ``refs`` (``{target: {post_id: texts}}``) and seed; every run
    resumes, or is skipped when done. Run folders are keyed by spec, prompts and references, so a
    run with other parameters or data never meets an old one's checkpoints, and a chapter asking
    for a run another chapter trained (same target data, same settings) gets it without training."""
    from .train import run_dir, train

    done = {}
    for seed in cfg.grpo_seeds:
        base = train_spec(cfg, seed)
        for target, target_refs in refs.items():
            spec = run_dir(base, target, prompts, target_refs)
            done[(target, seed)] = Path(train(spec, prompts, target_refs))
    return done


def evaluation(cfg: Config, model: str, tag: str, test_prompts: pd.DataFrame, refs: dict, seed: int = 0) -> dict:
    """Mean BERTScore of ``model``'s replies to the test posts, against real and synthetic
    references (cached as JSON by model, prompts, references and settings)."""
    from .train import evaluate

    settings = {"model": str(model), "prompts": test_prompts.to_dict("records"), "refs": refs,
                "n": cfg.eval_samples, "max_new_tokens": cfg.max_completion_length, "seed": seed,
                "encoder": cfg.encoder, "aggregate": cfg.reward_aggregate, "code": _code_hash("train.py", "reward.py", "sampling.py"),
                **_dtype_key(cfg)}
    path = cfg.path("eval", f"{tag}-{content_hash(settings)}.json")
    if path.exists():
        return json.loads(path.read_text())
    res = evaluate(model, test_prompts, refs["real"], refs["synthetic"], n=cfg.eval_samples,
                   max_new_tokens=cfg.max_completion_length, seed=seed, encoder=cfg.encoder,
                   aggregate=cfg.reward_aggregate, dtype=cfg.resolved_inference_dtype(), max_rows=cfg.sample_rows)
    atomic_write_json(path, res)
    return res
