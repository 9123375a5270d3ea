"""Platonic convergence: how predictable each source of replies is to a model that wrote none of them.

Tables for the `04_logprob` chapter, from per-reply mean token log-probs computed by
:func:`simlib.steps.logprob_scores`: per-source summaries, per-post paired differences, a
two-sample test and an effect size, and the generator × scorer matrix.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .diversity import bootstrap_ci


def source_summary(scores: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per source: replies, mean (bootstrap CI over posts), standard deviation and 5–95% range."""
    rows = []
    for src, g in scores.groupby("source", sort=False):
        per_post = g.groupby("post_id")["mean_logprob"].mean().to_numpy()
        mean, lo, hi = bootstrap_ci(per_post, np.mean, n_boot=n_boot, seed=seed)
        v = g["mean_logprob"].dropna().to_numpy()
        rows.append({"source": src, "replies": len(v), "posts": len(per_post), "mean": mean, "lo": lo, "hi": hi,
                     "sd": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                     "p05": float(np.quantile(v, 0.05)), "p95": float(np.quantile(v, 0.95))})
    return pd.DataFrame(rows).set_index("source")


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference (a − b) with the pooled standard deviation."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def compare(scores: pd.DataFrame, a: str, b: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Source ``a`` against ``b``: KS test, Cohen's d, variance ratio, and the per-post paired mean
    difference (a − b) with a bootstrap CI over posts."""
    va = scores.loc[scores["source"] == a, "mean_logprob"].dropna().to_numpy()
    vb = scores.loc[scores["source"] == b, "mean_logprob"].dropna().to_numpy()
    ks = stats.ks_2samp(va, vb)
    wide = scores.pivot_table(index="post_id", columns="source", values="mean_logprob", aggfunc="mean")
    d = (wide[a] - wide[b]).dropna().to_numpy()
    diff, lo, hi = bootstrap_ci(d, np.mean, n_boot=n_boot, seed=seed)
    return {"a": a, "b": b, "ks_stat": float(ks.statistic), "ks_p": float(ks.pvalue), "cohens_d": cohens_d(va, vb),
            "sd_ratio": float(va.std(ddof=1) / vb.std(ddof=1)), "paired_diff": diff, "lo": lo, "hi": hi,
            "posts": int(len(d))}


def matrix(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean log-prob with one row per source (generator or real) and one column per scorer."""
    return scores.pivot_table(index="source", columns="scorer", values="mean_logprob", aggfunc="mean")
