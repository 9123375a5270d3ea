"""Scores every chapter reads, each cached by content: embeddings, log-probs under the scorer,
the scorer's own samples, hidden features, reply quality and the judge's labels."""
from __future__ import annotations

import numpy as np
import pandas as pd

from simlib import progress
from simlib.cache import content_hash
from simlib.config import Config
from simlib.steps.artifacts import cached_artifact, code_hash, device_arg, dtype_key, load_tokenizer, save_npy
from simlib.steps.generation import t1_sizes

__all__ = ["JUDGE_CHARS", "judge_labels", "embeddings", "own_samples", "equal_tokens", "logprob_scores",
           "hidden_features", "reply_quality", "judge_validation_items", "own_t1"]

JUDGE_CHARS = 600  # the judge reads a reply's first 600 characters: a verdict and its reasons come first


def judge_labels(cfg: Config, items: pd.DataFrame, endpoint: tuple[str, str] | None = None,
                 questions: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Stance and register labels for ``items`` (columns item_id, title, text; optional subreddit),
    chosen by the judge model's log-prob over fixed label sets (:mod:`simlib.measures.judge`), cached by
    content in ``judge/<model>.jsonl``. One row per item: ``stance``, ``register`` with their
    margins, and ``label`` (the register, what the remedy chapter counts); ``questions`` limits the
    questions asked (e.g. ``("stance",)``). ``endpoint`` is accepted for compatibility and unused:
    the judge reads the replies, it writes nothing."""
    from simlib.measures.judge import choose, judge_requests
    from simlib.lm.logprob import score_cached

    del endpoint
    if cfg.judge == cfg.generator:
        raise ValueError(f"the judge must not label replies it wrote: judge and generator are both {cfg.judge!r}; "
                         "set judge to another local causal LM (e.g. the scorer)")
    recs = items.to_dict("records")
    if not recs:  # nothing to label (e.g. no post asks for a verdict): no model is loaded
        out = choose(pd.DataFrame(), {})
        return out.assign(label=pd.Series(dtype=object))
    reqs = judge_requests(recs, max_chars=JUDGE_CHARS, questions=questions)
    scored = score_cached(reqs, cfg.path("judge", f"{cfg.judge.replace('/', '_')}.jsonl"), cfg.judge,
                          max_response_tokens=16, batch_size=cfg.logprob_batch_size,
                          dtype=cfg.resolved_inference_dtype())
    out = choose(pd.DataFrame(scored), {str(r["item_id"]): str(r["title"]) for r in recs})
    return out.assign(label=out["register"] if "register" in out else None)


def embeddings(cfg: Config, texts: list[str]) -> np.ndarray:
    """Sentence embeddings of ``texts`` with the config's encoder, cached by content."""
    from simlib.lm.embed import embed_texts
    from simlib.lm.weights import resolve

    key = content_hash({"encoder": cfg.encoder, "texts": texts, "code": code_hash("lm/embed.py")})
    return cached_artifact(cfg.path("embeddings", f"{key}.npy"), lambda: embed_texts(texts, resolve(cfg.encoder)),
                           np.load, save_npy)


def own_samples(cfg: Config, posts: pd.DataFrame, model_name: str | None = None, n: int | None = None,
                temperature: float | None = None) -> pd.DataFrame:
    """``n`` replies sampled from ``model_name`` (default: the scorer) to each post, under the
    scorer's own conditioning (:func:`simlib.lm.logprob.build_prompt`), at ``temperature`` (default:
    the profile's), cached in a JSONL store keyed by all of these."""
    from simlib.cache import JsonlStore
    from simlib.lm.logprob import build_prompt, sample_own

    model_name = model_name or cfg.scorer
    n = n or cfg.n_per_group
    temperature = cfg.temperature if temperature is None else float(temperature)
    tok = load_tokenizer(model_name)
    store = JsonlStore(cfg.path("own", f"{model_name.replace('/', '_')}.jsonl"))
    have = {r["key"]: r for r in store}
    settings = {"model": model_name, "n": n, "max_new_tokens": cfg.max_tokens, "temperature": temperature,
                "seed": cfg.seed, "max_post_chars": cfg.max_post_chars, "code": code_hash("lm/sampling.py"),
                **dtype_key(cfg)}
    todo, keys = [], {}
    for post in posts.itertuples():
        prompt = build_prompt(post.title, post.body, post.subreddit, tok, max_post_chars=cfg.max_post_chars)
        keys[post.post_id] = content_hash({**settings, "prompt": prompt})
        if keys[post.post_id] not in have:
            todo.append((post.post_id, prompt))
    if todo:
        from simlib.lm.weights import load_causal_lm

        tok, model = load_causal_lm(model_name, dtype=cfg.resolved_inference_dtype(), device=device_arg(cfg))
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
            progress.report("sampling", min(i + per, len(todo)), len(todo), model=model_name)
    rows = [{"post_id": pid, "source": "own", "text": t.strip()} for pid, k in keys.items() for t in have[k]["texts"]]
    return pd.DataFrame(rows, columns=["post_id", "source", "text"])


def equal_tokens(cfg: Config) -> int:
    """L, the number of scorer tokens every reply is compared on: ``logprob_equal_tokens``, or
    (0) the shortest cap any source was cut at (:func:`simlib.findings.convergence.equal_tokens`)."""
    from simlib.findings.convergence import equal_tokens as _eq

    return _eq(cfg.max_tokens, cfg.max_response_tokens, getattr(cfg, "logprob_equal_tokens", 0))


def logprob_scores(cfg: Config, table: pd.DataFrame, posts: pd.DataFrame, scorer: str | None = None,
                   max_response_tokens: int | None = None) -> pd.DataFrame:
    """Mean token log-prob of every row of ``table`` (post_id, source, text) given its post,
    under ``scorer`` (default: the config's scorer), prefix-shared and cached by content.

    Adds ``mean_logprob`` and ``n_tokens`` over the first ``max_response_tokens`` tokens (default:
    the config's), and ``mean_logprob_eq`` / ``n_tokens_eq`` over the first L tokens
    (:func:`equal_tokens`), the same cap for every source, computed from the stored per-token
    log-probs without scoring again.
    """
    from simlib.findings.convergence import equal_length_mean
    from simlib.lm.logprob import ScoreRequest, build_prompt, score_cached

    scorer = scorer or cfg.scorer
    cap = max_response_tokens or cfg.max_response_tokens
    L = min(equal_tokens(cfg), cap)
    tok = load_tokenizer(scorer)
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
    from simlib.measures.alignment import mean_pooled_hidden
    from simlib.lm.weights import load_causal_lm

    key = content_hash({"model": model_name, "texts": texts, "code": code_hash("measures/alignment.py"),
                        **dtype_key(cfg), **({"max_length": max_length} if max_length != 256 else {})})

    def compute() -> np.ndarray:
        tok, model = load_causal_lm(model_name, dtype=cfg.resolved_inference_dtype(), device=device_arg(cfg))
        return mean_pooled_hidden(texts, tok, model, max_length=max_length)

    return cached_artifact(cfg.path("hidden", f"{key}.npy"), compute, np.load, save_npy)


def reply_quality(cfg: Config, responses: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """``responses`` (post_id, source, text) with the quality components of :mod:`simlib.measures.quality`:
    ``relevance`` (encoder cosine between reply and post) and ``fluency`` (mean token log-prob under
    the scorer, the same cached scores the log-prob chapter reads)."""
    from simlib.findings import gap

    reply_emb = embeddings(cfg, responses["text"].tolist())
    texts = gap.post_texts(posts, cfg.max_post_chars)
    post_emb = pd.DataFrame(embeddings(cfg, texts.tolist()), index=texts.index)
    scores = logprob_scores(cfg, responses[["post_id", "source", "text"]], posts)
    return gap.with_quality(responses, reply_emb, post_emb, scores["mean_logprob"].to_numpy())


def judge_validation_items(real: pd.DataFrame, posts: pd.DataFrame, per_post: int, seed: int = 0) -> pd.DataFrame:
    """Real replies that state an AITA verdict (the judge's ground truth): up to ``per_post`` per
    post, drawn at random with ``seed``, from the posts that ask for a verdict
    (:func:`simlib.measures.aita.verdict_posts`); columns item_id, post_id, title, subreddit, text,
    verdict. None when no post asks for one (e.g. r/AskReddit alone): zero rows, the same columns."""
    from simlib.measures.aita import parse_verdict, verdict_rows

    real = verdict_rows(real, posts)
    r = real.assign(text=real["response_text"].fillna("").astype(str))
    r = r.assign(verdict=r["text"].map(parse_verdict)).dropna(subset=["verdict"])
    r = r.sample(frac=1.0, random_state=seed).groupby("post_id", sort=False).head(per_post).sort_index()
    by = posts.set_index("post_id")
    return pd.DataFrame({"item_id": "truth:" + r["response_id"].astype(str), "post_id": r["post_id"],
                         "title": r["post_id"].map(by["title"]), "subreddit": r["post_id"].map(by["subreddit"]),
                         "text": r["text"], "verdict": r["verdict"]}).reset_index(drop=True)


def own_t1(cfg: Config, posts: pd.DataFrame) -> pd.DataFrame:
    """The scorer's own samples at temperature 1.0, ``t1_samples`` per post (:func:`t1_sizes`)."""
    own = own_samples(cfg, posts, n=t1_sizes(cfg)["samples"], temperature=1.0)
    return own.assign(temperature=1.0)[lambda d: d["text"] != ""].reset_index(drop=True)
