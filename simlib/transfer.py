"""Does a reward gain on synthetic targets transfer to real ones? Tables for the `03_reward` chapter.

Built from the GRPO run logs (:func:`simlib.train.read_log`) and the before/after evaluations
(:func:`simlib.steps.evaluation`); intervals are over seeds (Student t, since there are few).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def curves(runs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """One row per (target, seed, step) with the mean reward of that step's completions."""
    from .train import read_log

    rows = [{"target": target, "seed": seed, "step": r["step"], "reward": r["reward_mean"]}
            for (target, seed), run in runs.items() for r in read_log(Path(run).parent)]
    return pd.DataFrame(rows, columns=["target", "seed", "step", "reward"])


def t_interval(values, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval (NaN bounds for fewer than two values)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 2:
        m = float(v.mean()) if len(v) else float("nan")
        return m, float("nan"), float("nan")
    half = stats.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def improvement(curve: pd.DataFrame, window: int = 3) -> pd.DataFrame:
    """Per run: mean reward of the last ``window`` steps minus the first ``window`` steps."""
    rows = []
    for (target, seed), g in curve.sort_values("step").groupby(["target", "seed"]):
        w = min(window, max(1, len(g) // 2))
        rows.append({"target": target, "seed": seed, "first": g["reward"].head(w).mean(),
                     "last": g["reward"].tail(w).mean()})
    out = pd.DataFrame(rows)
    out["gain"] = out["last"] - out["first"]
    return out


def summarise_gain(gains: pd.DataFrame) -> pd.DataFrame:
    """Mean training-reward gain per target with a t interval over seeds."""
    rows = {t: dict(zip(("mean", "lo", "hi"), t_interval(g["gain"]))) | {"seeds": len(g)}
            for t, g in gains.groupby("target")}
    return pd.DataFrame(rows).T[["mean", "lo", "hi", "seeds"]]


def transfer_table(before: dict, after: dict[tuple[str, int], dict]) -> pd.DataFrame:
    """Trained on (each target of ``after``, in order) × evaluated against (synthetic, real): the
    study's 2×2 table for the targets synthetic and real.

    Each cell: the base policy's score, the mean score after training over seeds, and the mean
    change with its t interval over seeds.
    """
    rows = []
    for trained_on in dict.fromkeys(t for t, _ in after):
        for against, key in (("synthetic", "bertscore_synth"), ("real", "bertscore_real")):
            deltas = [ev[key] - before[key] for (t, _), ev in after.items() if t == trained_on]
            afters = [ev[key] for (t, _), ev in after.items() if t == trained_on]
            mean, lo, hi = t_interval(deltas)
            rows.append({"trained_on": trained_on, "evaluated_against": against, "before": before[key],
                         "after": float(np.mean(afters)), "delta": mean, "lo": lo, "hi": hi, "seeds": len(deltas)})
    return pd.DataFrame(rows).set_index(["trained_on", "evaluated_against"])
