"""Does a reward gain on synthetic targets exceed the one on real targets, and does it transfer?
Tables and the verdict of the `03_reward` chapter (finding 2).

Built from the paired evaluations of :func:`simlib.steps.reward_evaluations`: every trained policy
and the base policy reply to the same probe and test posts with the same sampling seeds, so the
change of a post's score is a paired difference. Intervals resample posts and seeds together
(:func:`simlib.measures.verdicts.two_way_bootstrap`): both vary between replications of the experiment.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simlib.measures import verdicts


def curves(runs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """One row per (target, seed, step) with the mean training reward of that step's completions
    (each step sees other examples, so this curve shows training, not a measured gain)."""
    from simlib.train import read_log

    rows = [{"target": target, "seed": seed, "step": r["step"], "reward": r["reward_mean"]}
            for (target, seed), run in runs.items() for r in read_log(Path(run).parent)]
    return pd.DataFrame(rows, columns=["target", "seed", "step", "reward"])


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


def _matrix(values: pd.DataFrame) -> np.ndarray:
    """posts x seeds of ``values["delta"]`` (NaN where missing)."""
    return values.pivot_table(index="post_id", columns="seed", values="delta", aggfunc="mean").to_numpy()


def probe_gains(ch: pd.DataFrame) -> pd.DataFrame:
    """The training-reward gain of each run on the probe posts, against its own kind of target."""
    return ch[(ch["section"] == "probe") & (ch["against"] == ch["trained_on"])]


def contrast(ch: pd.DataFrame, a: str = "synthetic", b: str = "real", n_boot: int = 2000,
             seed: int = 0) -> dict:
    """Mean over probe posts x seeds of (gain of run ``a``) - (gain of run ``b``), paired by post and
    seed, with its two-way bootstrap interval, SE, MDE and the number of (post, seed) cells."""
    g = probe_gains(ch)
    ga = g[g["trained_on"] == a].set_index(["post_id", "seed"])["delta"]
    gb = g[g["trained_on"] == b].set_index(["post_id", "seed"])["delta"]
    d = (ga - gb).dropna().rename("delta").reset_index()
    mean, lo, hi, se = verdicts.two_way_bootstrap(_matrix(d), n_boot=n_boot, seed=seed)
    return {"effect": mean, "lo": lo, "hi": hi, "se": se, "mde": verdicts.mde(se), "n": int(len(d)),
            "posts": int(d["post_id"].nunique()), "seeds": int(d["seed"].nunique())}


def cells(ch: pd.DataFrame, section: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (trained_on, against) in ``section``: mean score before and after, the mean paired change
    with its two-way bootstrap interval and MDE, and the posts and seeds behind it."""
    rows = []
    sub = ch[ch["section"] == section]
    for (t, a), g in sub.groupby(["trained_on", "against"], sort=False):
        mean, lo, hi, se = verdicts.two_way_bootstrap(_matrix(g), n_boot=n_boot, seed=seed)
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


RULE = ("effect = mean over probe posts x seeds of [gain with synthetic targets - gain with real targets], "
        "each gain = trained minus base BERTScore F1 against the run's own target, same sampling seeds; "
        "95% CI by bootstrap over posts and seeds; reproduces if CI > 0, contradicts if CI < margin, "
        "else inconclusive")


def verdict(ch: pd.DataFrame, margin: float, n_boot: int = 2000, seed: int = 0) -> verdicts.Verdict:
    """Finding 2's verdict by the rule stated in the chapter (:data:`RULE`, margin in F1)."""
    c = contrast(ch, n_boot=n_boot, seed=seed)
    return verdicts.decide(c["effect"], c["lo"], c["hi"], margin=margin, n=c["n"], se=c["se"],
                           rule=f"{RULE}; margin {margin:g} F1")


def mde_curve(ch: pd.DataFrame, steps_per_run: int, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The contrast's MDE as the experiment grows, measured on this run's own data: for the first
    k seeds (k = 1 .. all) and the first half or all of the probe posts, the MDE and the GRPO steps
    those runs cost (two runs of ``steps_per_run`` per seed). Extrapolating it says what budget
    would reach a given MDE; with one seed the seed-to-seed variance is not seen, so that row is
    optimistic."""
    g = probe_gains(ch)
    seeds = sorted(g["seed"].unique())
    posts = list(dict.fromkeys(g["post_id"]))
    rows = []
    for k in range(1, len(seeds) + 1):
        for share in (0.5, 1.0):
            keep = posts[:max(2, int(round(share * len(posts))))]
            sub = ch[ch["seed"].isin(seeds[:k]) & ch["post_id"].isin(keep)]
            c = contrast(sub, n_boot=n_boot, seed=seed)
            rows.append({"seeds": k, "probe_posts": len(keep), "grpo_steps": 2 * k * steps_per_run,
                         "mde": c["mde"], "effect": c["effect"]})
    return pd.DataFrame(rows)
