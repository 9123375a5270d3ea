"""Are the reward chapter's synthetic targets synthetic? Finding 1's gap, measured on them.

Finding 2 presumes its synthetic targets show finding 1's gap: less varied and more predictable than
real replies. The targets here come from a small base model, which samples web-like text rather
than an instruction-tuned model's homogeneous replies, so this is checked, not assumed: per post,
the repetition of its targets (mean pairwise cosine of their embeddings, chapter 02's measure) and
their distinct bigrams, and their mean token log-prob under the log-prob chapter's scorer; each as
a paired difference synthetic - real over posts with a bootstrap interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from simlib.measures import diversity

__all__ = ["MEASURES", "homogeneity", "sentence"]

# measure -> the sign of (synthetic - real) that finding 1 predicts
MEASURES: dict[str, int] = {"repetition": +1, "distinct_2": -1, "mean_logprob": +1}


def homogeneity(table: pd.DataFrame, emb: np.ndarray, logprob: pd.DataFrame, n_boot: int = 2000,
                seed: int = 0) -> pd.DataFrame:
    """Per measure: the mean over posts for real and synthetic targets and their paired difference
    (synthetic - real) with its 95% bootstrap interval over posts. ``table``: post_id, source, text
    (:func:`simlib.steps.target_table`); ``emb``: its row-aligned embeddings; ``logprob``: the same
    rows scored by :func:`simlib.steps.logprob_scores`."""
    per = diversity.per_post_diversity(table, emb, verdicts=False)
    lp = logprob.groupby(["post_id", "source"], as_index=False)["mean_logprob"].mean()
    per = per.merge(lp, on=["post_id", "source"], how="left")
    rows = []
    for m, sign in MEASURES.items():
        diff, lo, hi, n = diversity.paired_difference(per, m, "synthetic", "real", n_boot=n_boot, seed=seed)
        means = per.groupby("source")[m].mean()
        rows.append({"measure": m, "real": float(means.get("real", np.nan)),
                     "synthetic": float(means.get("synthetic", np.nan)), "diff": diff, "lo": lo, "hi": hi,
                     "posts": n, "finding 1 predicts": "synthetic higher" if sign > 0 else "synthetic lower"})
    return pd.DataFrame(rows).set_index("measure")


def _side(row: pd.Series, sign: int) -> str:
    # "as predicted" when the interval lies on the predicted side of 0, "against" on the other
    lo, hi = sign * row["lo"], sign * row["hi"]
    lo, hi = min(lo, hi), max(lo, hi)
    return "as predicted" if lo > 0 else "against" if hi < 0 else "unclear"


def sentence(table: pd.DataFrame, scorer_wrote_them: bool) -> str:
    """Whether the synthetic targets are more homogeneous and more predictable than the real ones,
    chosen by the intervals of :func:`homogeneity`."""
    rep = _side(table.loc["repetition"], +1)
    lp = _side(table.loc["mean_logprob"], +1)
    homog = {"as predicted": "are more homogeneous than the real ones (their repetition is higher)",
             "against": "are not more homogeneous than the real ones: they are more varied (lower repetition)",
             "unclear": "are not shown to be more homogeneous than the real ones (the repetition "
                        "interval covers 0)"}[rep]
    pred = {"as predicted": "more predictable under the scorer", "against": "less predictable under the scorer",
            "unclear": "no more predictable under the scorer than real ones, as far as this run can tell"}[lp]
    caveat = (" The scorer wrote these synthetic targets itself, so their log-prob is its own and overstates how "
              "predictable they are to a third model." if scorer_wrote_them else "")
    tail = ("" if rep == "as predicted" else " So this chapter's synthetic targets lack finding 1's gap in "
            "variety, and a contrast between them and real targets tests less than the study's setting.")
    return f"The synthetic targets {homog}, and {pred}.{caveat}{tail}"
