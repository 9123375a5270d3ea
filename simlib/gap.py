"""The gap between real and synthetic responses: the tables the `02_gap` chapter shows.

Functions here assemble the inputs computed by :mod:`simlib.steps` (real responses, synthetic
store, embeddings, judge labels) into tables; the measures themselves live in
:mod:`simlib.diversity` and the drawing in :mod:`simlib.figures`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .diversity import VERDICTS, entropy_bits, parse_verdict, subsample_groups

SOURCES = ("real", "plain", "humanlike")


def responses_table(real: pd.DataFrame, synthetic: pd.DataFrame, n_per_group: int, seed: int = 0) -> pd.DataFrame:
    """Real and synthetic responses in one table (post_id, split, source, text), each
    (post, source) group sampled to exactly ``n_per_group`` responses (smaller groups dropped),
    so that every source is measured at the same n on the same posts."""
    r = real.assign(source="real", text=real["response_text"])[["post_id", "split", "source", "text"]]
    split = real.drop_duplicates("post_id").set_index("post_id")["split"]
    s = synthetic.assign(source=synthetic["style"], split=synthetic["post_id"].map(split))
    both = pd.concat([r, s[["post_id", "split", "source", "text"]]], ignore_index=True)
    both["text"] = both["text"].fillna("").astype(str).str.strip()
    both = both[both["text"] != ""]
    out, _ = subsample_groups(both, n=n_per_group, seed=seed)
    # keep only posts where every source is present, so comparisons are paired by post
    full = out.groupby("post_id")["source"].nunique()
    keep = full[full == out["source"].nunique()].index
    return out[out["post_id"].isin(keep)].reset_index(drop=True)


def verdict_table(responses: pd.DataFrame) -> pd.DataFrame:
    """Share of each AITA verdict (and of no verdict) per source, plus the entropy in bits."""
    v = responses.assign(verdict=responses["text"].map(parse_verdict).fillna("none"))
    shares = pd.crosstab(v["source"], v["verdict"], normalize="index")
    shares = shares.reindex(columns=[c for c in (*VERDICTS, "none") if c in shares.columns], fill_value=0.0)
    shares["entropy_bits"] = [entropy_bits(list(g["verdict"][g["verdict"] != "none"]))
                              for _, g in v.groupby("source")]
    return shares.reindex([s for s in SOURCES if s in shares.index] + [s for s in shares.index if s not in SOURCES])


def label_shares(labels: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """Share of each judge label per source (rows sum to 1)."""
    shares = pd.crosstab(labels[by], labels["label"], normalize="index")
    return shares.reindex([s for s in SOURCES if s in shares.index] + [s for s in shares.index if s not in SOURCES])


def example_post(real: pd.DataFrame) -> str:
    """The post shown side by side: the test post with the most kept real responses (earliest on ties)."""
    test = real[real["split"] == "test"]
    pool = test if len(test) else real
    counts = pool.groupby("post_id").agg(n=("response_id", "size"), t=("post_created_utc", "first"))
    return str(counts.sort_values(["n", "t"], ascending=[False, True]).index[0])


def side_by_side(responses: pd.DataFrame, post_id: str, k: int = 4, width: int = 280,
                 sources: tuple[str, ...] = SOURCES) -> pd.DataFrame:
    """The first ``k`` responses of each of ``sources`` to one post, shortened to ``width`` characters."""
    rows = responses[responses["post_id"] == post_id]
    cols = {}
    for src in [s for s in sources if s in set(rows["source"])]:
        texts = rows[rows["source"] == src]["text"].head(k).tolist()
        cols[src] = [t if len(t) <= width else t[: width - 1].rstrip() + "…" for t in texts] + [""] * (k - len(texts))
    return pd.DataFrame(cols, index=pd.RangeIndex(1, k + 1, name="#"))


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """First two principal components of the rows of ``emb`` (centred SVD)."""
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :2] * s[:2]
