"""Does a reward gain on synthetic targets exceed the one on real targets, and does it transfer?
The paired changes and descriptive tables of the `03_reward` chapter (finding 2).

Built from the paired evaluations of :func:`simlib.steps.reward_evaluations`: every trained policy
and the base policy reply to the same probe and test posts with the same sampling seeds, so the
change of a post's score is a paired difference. The descriptive ``cells`` tables resample posts
and seeds (:func:`simlib.measures.verdicts.two_way_bootstrap`); the claim's four statistics, their
t intervals, verdicts and power tables are in :mod:`simlib.findings.claim`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simlib.measures import verdicts


def curves(runs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """One row per (target, seed, step) with the mean training reward of that step's completions
    (each step sees other examples, so this curve shows training, not a measured gain) and the KL
    the trainer logged (NaN when it computes none, as with no KL penalty)."""
    from simlib.train import read_log

    rows = [{"target": target, "seed": seed, "step": r["step"], "reward": r["reward_mean"],
             "kl": r.get("kl") if r.get("kl") is not None else float("nan")}
            for (target, seed), run in runs.items() for r in read_log(Path(run).parent)]
    return pd.DataFrame(rows, columns=["target", "seed", "step", "reward", "kl"])


def changes(evals: dict) -> pd.DataFrame:
    """Long table of paired changes: one row per (trained_on, seed, section, post_id, against) with
    the base policy's score (``before``), the trained one's (``after``) and ``delta``; ``section`` is
    ``probe`` (training posts, the run's own kind of target) or ``test`` (held-out posts)."""
    rows = []
    for (kind, seed), ev in evals.items():
        if kind == "base":
            continue
        base = evals[("base", seed)]
        if base["post_id"] != ev["post_id"]:
            raise ValueError(f"{kind} seed {seed}: evaluated on other prompts than the base policy")
        for against, after in ev["scores"].items():
            for i, (pid, a) in enumerate(zip(ev["post_id"], after)):
                section, post = pid.split(":", 1)
                b = base["scores"][against][i]
                if np.isfinite(a) and np.isfinite(b):
                    rows.append({"trained_on": kind, "seed": seed, "section": section, "post_id": post,
                                 "against": against, "before": b, "after": a, "delta": a - b})
    return pd.DataFrame(rows, columns=["trained_on", "seed", "section", "post_id", "against", "before", "after", "delta"])


def matrix(values: pd.DataFrame) -> np.ndarray:
    """posts x seeds of ``values["delta"]`` (NaN where missing)."""
    return values.pivot_table(index="post_id", columns="seed", values="delta", aggfunc="mean").to_numpy()


def probe_gains(ch: pd.DataFrame) -> pd.DataFrame:
    """The training-reward gain of each run on the probe posts, against its own kind of target."""
    return ch[(ch["section"] == "probe") & (ch["against"] == ch["trained_on"])]


def cells(ch: pd.DataFrame, section: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (trained_on, against) in ``section``: mean score before and after, the mean paired change
    with its two-way bootstrap interval and MDE, and the posts and seeds behind it."""
    rows = []
    sub = ch[ch["section"] == section]
    for (t, a), g in sub.groupby(["trained_on", "against"], sort=False):
        mean, lo, hi, se = verdicts.two_way_bootstrap(matrix(g), n_boot=n_boot, seed=seed)
        rows.append({"trained_on": t, "against": a, "before": g["before"].mean(), "after": g["after"].mean(),
                     "delta": mean, "lo": lo, "hi": hi, "mde": verdicts.mde(se),
                     "posts": int(g["post_id"].nunique()), "seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows).set_index(["trained_on", "against"])


def movement(evals: dict) -> pd.DataFrame:
    """How far each run moved from the base policy on the held-out posts: the mean log-prob shift of
    the base policy's replies (trained minus base, per token) and its negative, an estimate of the
    per-token KL(base ‖ trained)."""
    rows = []
    for (kind, seed), ev in evals.items():
        if kind == "base" or "logprob_shift" not in ev:
            continue
        shift = [s for pid, s in zip(ev["post_id"], ev["logprob_shift"]) if pid.startswith("test:") and np.isfinite(s)]
        m = float(np.mean(shift)) if shift else float("nan")
        rows.append({"trained_on": kind, "seed": seed, "logprob_shift": m, "kl_estimate": -m})
    return pd.DataFrame(rows, columns=["trained_on", "seed", "logprob_shift", "kl_estimate"])


def level_gap(evals: dict, a: str, b: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """The base policy's held-out score against kind ``a`` minus against kind ``b``, per test post
    (seeds averaged), with a bootstrap interval over posts: how much closer the untrained policy's
    replies already are to one kind of reference than to the other."""
    base = next(ev for (k, _), ev in evals.items() if k == "base")
    test = np.array([p.startswith("test:") for p in base["post_id"]])
    # test posts only: an evaluation-only kind has no reference on the probe posts
    per_seed = [(np.array(ev["scores"][a]) - np.array(ev["scores"][b]))[test]
                for (k, _), ev in evals.items() if k == "base"]
    d = np.vstack(per_seed).mean(axis=0)
    mean, lo, hi, se = verdicts.two_way_bootstrap(d[np.isfinite(d)], n_boot=n_boot, seed=seed)
    return {"effect": mean, "lo": lo, "hi": hi, "mde": verdicts.mde(se), "posts": int(np.isfinite(d).sum())}


def per_seed(ch: pd.DataFrame, moved: pd.DataFrame) -> pd.DataFrame:
    """One row per (trained_on, seed): the run's mean gain on the probe posts against its own kind of
    target, its held-out KL estimate from the base (:func:`movement`), and how far its gain lies from
    the median gain of its kind's runs."""
    g = probe_gains(ch).groupby(["trained_on", "seed"])["delta"].mean().rename("gain").reset_index()
    out = g.merge(moved[["trained_on", "seed", "kl_estimate"]], on=["trained_on", "seed"], how="left")
    out["from_median"] = out["gain"] - out.groupby("trained_on")["gain"].transform("median")
    return out.set_index(["trained_on", "seed"])


def took_off(table: pd.DataFrame, ratio: float = 3.0) -> dict:
    """The run whose gain lies furthest from its kind's median (:func:`per_seed`), and whether it
    stands out: its distance exceeds ``ratio`` times the median distance of its kind's other runs
    (a robust rule: one run cannot hide itself by inflating an SD)."""
    dist = table["from_median"].abs()
    key = dist.idxmax()
    others = dist.xs(key[0], level="trained_on").drop(key[1])
    typical = float(others.median()) if len(others) else float("nan")
    stands = bool(len(others) >= 2 and dist[key] > ratio * max(typical, 1e-12))
    return {"trained_on": key[0], "seed": int(key[1]), "gain": float(table.loc[key, "gain"]),
            "from_median": float(table.loc[key, "from_median"]), "typical": typical, "stands_out": stands}
