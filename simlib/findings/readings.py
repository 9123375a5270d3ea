"""The log-prob chapter's sentences that the results choose: each reads a table of
:mod:`simlib.findings.convergence` and returns the words that are true of it."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from simlib.measures.verdicts import reading

__all__ = ["order_reading", "spread_reading", "verdict_reading", "interval_reading", "t1_sentence",
           "skipped_sentence", "self_note", "toward_reading", "alignment_reading"]



def order_reading(summary: pd.DataFrame, styles: Sequence[str], own: str = "own", real: str = "real") -> str:
    """``holds`` when own ≥ every synthetic style > real (point estimates), else ``does not hold``."""
    m = summary["mean"]
    ok = m[own] >= max(m[s] for s in styles) and min(m[s] for s in styles) > m[real]
    return "holds" if ok else "does not hold"


def spread_reading(tests: pd.DataFrame, styles: Sequence[str]) -> str:
    """How the real replies' spread compares with the synthetic styles', by the intervals of
    ``sd_ratio`` (real / synthetic): fits "the spread of real replies is ___ than theirs"."""
    lo, hi = tests.loc[list(styles), "sd_ratio_lo"], tests.loc[list(styles), "sd_ratio_hi"]
    if (lo > 1).all():
        return "wider"
    if (hi < 1).all():
        return "narrower"
    return "neither clearly wider nor clearly narrower"


def verdict_reading(verdict: str) -> str:
    """The sentence the chapter writes for each verdict of :data:`simlib.findings.convergence.RULE`."""
    return reading(verdict,
                   "at equal length and temperature, the synthetic replies are more predictable to the scorer than "
                   "the real replies to the same posts, as the study reports",
                   "the run rules out a difference as large as the margin: at equal length and temperature, synthetic "
                   "replies are not clearly more predictable than real ones", "a difference")


def interval_reading(lo: float, hi: float, above: str, below: str, neither: str) -> str:
    """``above`` when the interval lies above 0, ``below`` when below, ``neither`` otherwise."""
    if lo > 0:
        return above
    if hi < 0:
        return below
    return neither


def t1_sentence(size: dict, temperature: float, replies: int) -> str:
    """What the temperature-1.0 sets are on this profile (:func:`simlib.steps.t1_sizes`)."""
    if not size["extra"]:
        return "This profile samples at T = 1.0 already, so its main sets serve both comparisons."
    return (f"On this profile the main sets are sampled at T = {temperature:g}, so a second, smaller set is "
            f"sampled at T = 1.0: {size['samples']} replies per post from the scorer and from the "
            f"{', '.join('`' + s + '`' for s in size['styles'])} style{'s' if len(size['styles']) > 1 else ''}, "
            f"on the same posts ({replies} replies; the parameters `t1_samples` and `t1_styles` size it, "
            "to bound the generation time).")


def skipped_sentence(skipped: dict[str, str]) -> str:
    """Which models do not score, and why (:func:`simlib.findings.convergence.scoring_models`)."""
    if not skipped:
        return "Every causal language model of this run has local weights, so none is skipped."
    return "Skipped: " + "; ".join(f"{m} ({why}: there are no weights here to score or embed with)"
                                   for m, why in skipped.items()) + "."


def self_note(generator: str, scorers: Sequence[str]) -> str:
    """The caveat of the generator's own column, when it scores."""
    if generator in scorers:
        return (f"In the {generator} column the synthetic rows are that model's own text, so those cells "
                "measure self-predictability, not convergence.")
    return f"{generator} does not score here, so no cell has a model reading its own synthetic text."


def toward_reading(tests: pd.DataFrame, styles: Sequence[str]) -> str:
    """``0.62 for `plain` ([0.50, 0.71]) and ...``: each style's place between real (0) and own (1)."""
    def iv(lo, hi):
        return "n/a" if lo != lo or hi != hi else f"[{lo:.2f}, {hi:.2f}]"

    return " and ".join(f"{r['toward_own']:.2f} for `{s}` ({iv(r['toward_own_lo'], r['toward_own_hi'])})"
                        for s, r in tests.loc[list(styles)].iterrows())


def alignment_reading(summary: pd.DataFrame, styles: Sequence[str]) -> str:
    """One sentence: each style's alignment against the real replies' in the same draws (above,
    below, or not distinguishable, by the range of the difference over draws)."""
    parts = [f"`{s}` replies " + interval_reading(
        r["diff_lo"], r["diff_hi"], "align more than the real ones", "align less than the real ones",
        "are not distinguishable from the real ones (the range of the difference covers 0)")
        for s, r in summary.loc[list(styles)].iterrows()]
    return "In the same draws, " + ", and ".join(parts) + "."
