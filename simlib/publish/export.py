"""``simlib export``: a run's real and synthetic replies as a Hugging Face ``datasets`` dataset.

Two parquet tables and a dataset card (``README.md``) in one folder:

- ``replies``: one row per reply, real (from the Reddit crawl, after the chapter's filters) or
  synthetic (every reply in the run's generation store), with its post, source, style, model,
  sampling settings, text, the quality measures of the gap chapter where it scored the reply, and
  the run's provenance;
- ``posts``: the posts those replies answer (title, body, split).

``datasets.load_dataset("parquet", data_files=...)`` or ``load_dataset(DIR)`` reads it back. Nothing
is computed that the run did not compute: quality measures come from the gap chapter's caches.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from simlib.config import Config
from simlib.publish import perf, provenance

FEATURES = {  # column -> (datasets dtype, meaning); the card's field table is built from this
    "reply_id": ("string", "the Reddit comment id (real) or the generation store key (synthetic)"),
    "post_id": ("string", "the Reddit submission id the reply answers (join with `posts`)"),
    "source": ("string", "`real` (a Reddit user's reply) or `synthetic` (a model's)"),
    "style": ("string", "the prompt style of a synthetic reply (plain, humanlike, persona, seeded); null for real"),
    "model": ("string", "the model that wrote a synthetic reply, as the server named it; null for real"),
    "temperature": ("float64", "sampling temperature of a synthetic reply; null for real"),
    "top_p": ("float64", "nucleus sampling of a synthetic reply; null for real"),
    "max_tokens": ("int64", "the generation's token cap; null for real"),
    "sample_index": ("int64", "which of the post's samples in its style; null for real"),
    "finish_reason": ("string", "`stop` or `length` (cut at max_tokens); null for real"),
    "created_utc": ("int64", "when a real reply was posted (Unix seconds); null for synthetic"),
    "text": ("string", "the reply"),
    "relevance": ("float64", "cosine between the reply's and its post's embeddings (the encoder); null "
                             "where the gap chapter did not score the reply"),
    "fluency": ("float64", "mean token log-prob of the reply under the scorer; null where not scored"),
    "passes_quality_gate": ("bool", "whether the reply passes the gap chapter's gate calibrated on real "
                                    "replies; null where not scored"),
    "profile": ("string", "the simlib profile of the run"),
    "params_hash": ("string", "hash of the run's resolved configuration"),
    "commit": ("string", "the simlib commit that ran"),
}
POST_FEATURES = {"post_id": "string", "subreddit": "string", "title": "string", "body": "string",
                 "created_utc": "int64", "split": "string"}


class ExportError(RuntimeError):
    """The run has not produced what an export needs."""


def _int(v):
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def real_rows(real: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"reply_id": real["response_id"].astype(str), "post_id": real["post_id"].astype(str),
                         "source": "real", "created_utc": real["response_created_utc"].map(_int),
                         "text": real["response_text"].fillna("").astype(str)})


def synthetic_rows(store: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"reply_id": store["key"].astype(str), "post_id": store["post_id"].astype(str),
                         "source": "synthetic", "style": store["style"], "model": store["model"],
                         "temperature": store["temperature"], "top_p": store.get("top_p"),
                         "max_tokens": store.get("max_tokens"), "sample_index": store.get("sample_index"),
                         "finish_reason": store.get("finish_reason"),
                         "text": store["text"].fillna("").astype(str)})


def chapter_quality(cfg: Config, real: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """The gap chapter's quality table (post_id, source, text, relevance, fluency, passes), read from
    its caches: the same calls the chapter makes, after it has run (it generated every reply)."""
    from simlib import steps
    from simlib.findings import gap

    synthetic, _ = steps.synthetic_responses(cfg, posts, real=real)
    responses = gap.responses_table(real, synthetic, cfg.n_per_group, seed=cfg.seed)
    gated, _ = gap.gate_responses(steps.reply_quality(cfg, responses, posts), keep=gap.QUALITY_KEEP)
    return gated


def with_quality(rows: pd.DataFrame, gated: pd.DataFrame | None) -> pd.DataFrame:
    """``rows`` with relevance, fluency and passes_quality_gate joined on (post, source, text)."""
    if gated is None or gated.empty:
        return rows.assign(relevance=None, fluency=None, passes_quality_gate=None)
    q = gated.assign(source=["real" if s == "real" else "synthetic" for s in gated["source"]],
                     text=gated["text"].astype(str).str.strip())
    q = q.drop_duplicates(["post_id", "source", "text"])[["post_id", "source", "text", "relevance", "fluency", "passes"]]
    out = rows.assign(_t=rows["text"].str.strip()).merge(q.rename(columns={"text": "_t"}), how="left",
                                                         on=["post_id", "source", "_t"])
    return out.drop(columns="_t").rename(columns={"passes": "passes_quality_gate"})


def replies_table(cfg: Config, real: pd.DataFrame, store: pd.DataFrame, gated: pd.DataFrame | None) -> pd.DataFrame:
    rows = pd.concat([real_rows(real), synthetic_rows(store)], ignore_index=True)
    rows = with_quality(rows[rows["text"].str.strip() != ""], gated)
    prov = provenance.record(cfg)
    rows = rows.assign(profile=prov["profile"], params_hash=prov["params"], commit=prov["commit"])
    return rows[list(FEATURES)].reset_index(drop=True)


def posts_table(real: pd.DataFrame) -> pd.DataFrame:
    p = real.drop_duplicates("post_id")
    return pd.DataFrame({"post_id": p["post_id"].astype(str), "subreddit": p["subreddit"], "title": p["title"],
                         "body": p["body"].fillna(""), "created_utc": p["post_created_utc"].map(_int),
                         "split": p["split"]}).reset_index(drop=True)


def to_dataset(df: pd.DataFrame, dtypes: dict):
    """A ``datasets.Dataset`` with the declared feature types (nulls kept as nulls)."""
    import datasets

    datasets.disable_progress_bars()  # a command's output, not a notebook's: one summary line
    features = datasets.Features({c: datasets.Value(t) for c, t in dtypes.items()})
    clean = df.astype(object).where(df.notna(), None)
    return datasets.Dataset.from_dict({c: clean[c].tolist() for c in dtypes}, features=features)


def export(cfg: Config, out: Path, quality: bool = True) -> dict:
    """Write ``out/replies.parquet``, ``out/posts.parquet`` and ``out/README.md``; return counts."""
    from simlib import steps
    from simlib.generate import load_store
    from simlib.publish.card import card

    store_path = cfg.path("generations.jsonl")
    if not store_path.exists():
        raise ExportError(f"no synthetic replies in {store_path}: run `simlib run --profile {cfg.profile} "
                          "--only 01_data --only 02_gap` first")
    real, report = steps.real_responses(cfg)
    store = load_store(store_path)
    if quality and "02_gap" not in perf.read_state(perf.state_file(cfg.profile)):
        raise ExportError(f"the gap chapter has not run for profile {cfg.profile!r}, so its quality measures do not "
                          f"exist: run `simlib run --profile {cfg.profile} --only 01_data --only 02_gap` first, or "
                          "export without them (--no-quality)")
    gated = chapter_quality(cfg, real, steps.test_posts(cfg, real)) if quality else None
    replies, posts = replies_table(cfg, real, store, gated), posts_table(real)
    out.mkdir(parents=True, exist_ok=True)
    to_dataset(replies, {c: t for c, (t, _) in FEATURES.items()}).to_parquet(str(out / "replies.parquet"))
    to_dataset(posts, POST_FEATURES).to_parquet(str(out / "posts.parquet"))
    counts = {"replies": len(replies), "real": int((replies["source"] == "real").sum()),
              "synthetic": int((replies["source"] == "synthetic").sum()), "posts": len(posts),
              "scored": int(replies["relevance"].notna().sum()),
              "passing": {s: float(g["passes_quality_gate"].dropna().astype(bool).mean())
                          for s, g in replies.groupby("source") if g["passes_quality_gate"].notna().any()}}
    (out / "README.md").write_text(card(cfg, counts, report, FEATURES, POST_FEATURES, provenance.record(cfg)))
    return counts
