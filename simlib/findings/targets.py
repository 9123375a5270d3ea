"""Are the reward chapter's synthetic targets synthetic? Finding 1's gap, measured on them.

Finding 2 presumes its synthetic targets show finding 1's gap: less varied and more predictable than
real replies. The targets here come from a small base model, which samples web-like text rather
than an instruction-tuned model's homogeneous replies, so this is checked, not assumed: per post,
the repetition of its targets (mean pairwise cosine of their embeddings, chapter 02's measure) and
their distinct bigrams, and their mean token log-prob under the log-prob chapter's scorer; each as
a paired difference synthetic - real over posts with a bootstrap interval.

If they lack that gap, the alternative is an instruction-tuned writer shipped in a package. The only
one here is SmolLM2-Instruct, which is also the policy: its replies (the gap chapter's, cut alike) are
measured the same way, and :func:`candidate_sentence` weighs that against what the policy's
self-similarity would cost the reward chapter.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from simlib.measures import diversity

__all__ = ["MEASURES", "candidate_sentence", "homogeneity", "sentence"]

# measure -> the sign of (synthetic - real) that finding 1 predicts
MEASURES: dict[str, int] = {"repetition": +1, "distinct_2": -1, "mean_logprob": +1}


def homogeneity(table: pd.DataFrame, emb: np.ndarray, logprob: pd.DataFrame, n_boot: int = 2000,
                seed: int = 0, kind: str = "synthetic") -> pd.DataFrame:
    """Per measure: the mean over posts for real targets and for source ``kind`` (column
    ``synthetic``) and their paired difference (kind - real) with its 95% bootstrap interval over
    posts. ``table``: post_id, source, text (:func:`simlib.steps.target_table`); ``emb``: its
    row-aligned embeddings; ``logprob``: the same rows scored by :func:`simlib.steps.logprob_scores`."""
    per = diversity.per_post_diversity(table, emb, verdicts=False)
    lp = logprob.groupby(["post_id", "source"], as_index=False)["mean_logprob"].mean()
    per = per.merge(lp, on=["post_id", "source"], how="left")
    rows = []
    for m, sign in MEASURES.items():
        diff, lo, hi, n = diversity.paired_difference(per, m, kind, "real", n_boot=n_boot, seed=seed)
        means = per.groupby("source")[m].mean()
        rows.append({"measure": m, "real": float(means.get("real", np.nan)),
                     "synthetic": float(means.get(kind, np.nan)), "diff": diff, "lo": lo, "hi": hi,
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


def candidate_sentence(table: pd.DataFrame | None, self_gap: dict | None, margin: float, candidate: str,
                       writer: str) -> str:
    """Whether the instruction-tuned candidate writer (the policy, ``candidate``) would give targets
    with finding 1's gap, and what its self-similarity would cost: ``table`` from
    :func:`homogeneity` with ``kind="policy_own"``, ``self_gap`` the base policy's held-out score
    against its own replies minus against ``writer``'s (:func:`simlib.findings.transfer.level_gap`).
    Both None: the policy wrote no replies in this run, so nothing is measured."""
    if table is None or self_gap is None:
        return (f"The policy wrote none of this run's replies, so the alternative writer ({candidate}) is not "
                f"measured here.")
    rep = _side(table.loc["repetition"], +1)
    homog = {"as predicted": "are more homogeneous than the real ones",
             "against": "are not more homogeneous than the real ones either: they are more varied",
             "unclear": "are not shown to be more homogeneous than the real ones either"}[rep]
    gap = self_gap["effect"]
    cost = (f"the untrained policy already scores {gap:+.4f} F1 closer to its own replies than to {writer}'s, more "
            f"than the margin of {margin:.4f}, so training towards them would reward the policy for its own text by "
            f"more than the effect the contrast is meant to detect" if gap >= margin else
            f"the untrained policy scores {gap:+.4f} F1 closer to its own replies than to {writer}'s, within the "
            f"margin of {margin:.4f}")
    keep = (f"The targets stay {writer}'s." if gap >= margin or rep != "as predicted" else
            f"It would be the better writer for the study's setting, but the book keeps {writer}'s targets so that "
            f"the policy is never trained towards its own text.")
    return (f"The one instruction-tuned model this project ships, {candidate}, is the policy itself. Its replies "
            f"(the gap chapter's, cut alike) {homog}, and {cost}. {keep}")
