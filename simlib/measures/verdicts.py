"""Three-way verdicts with power: reproduces / contradicts / inconclusive, and where they are kept.

Every finding of the book is decided by one rule, stated in its chapter before the numbers:

* the **effect** is a statistic oriented so that the study's claim means ``effect > 0``;
* its 95% interval comes from a bootstrap whose unit is the post (and the seed, where runs differ
  by seed): replies to one post are not independent;
* ``margin`` is the smallest effect the chapter would call the study's effect (its SESOI), in the
  statistic's units;
* **reproduces** when the interval lies above zero; **contradicts** when it lies below ``margin``
  (the run rules out an effect as large as the study's, which includes one of the opposite sign);
  **inconclusive** otherwise;
* the **minimum detectable effect** (80% power, two-sided alpha 0.05) is printed with every verdict,
  so an "inconclusive" says how large an effect this run could have seen.

A run with too little power cannot "contradict": its interval is wide, so it covers both zero and
the margin. Entries are written to ``<work_dir>/verdicts.json`` (one key per finding, e.g. ``reward``,
``gap``, ``logprob``, ``remedy:persona``), which the summary page reads.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from simlib.cache import atomic_write_json
from simlib.measures.power import t_factor

VERDICTS: tuple[str, ...] = ("reproduces", "contradicts", "inconclusive")
KEYS: tuple[str, ...] = ("verdict", "effect", "ci", "mde", "n", "rule")
FILE = "verdicts.json"


def z(alpha: float = 0.05, power: float = 0.8) -> float:
    """``z_{1-alpha/2} + z_{power}``: the MDE in standard errors (2.80 for 0.05 and 0.8).

    >>> round(z(), 2)
    2.8
    """
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def mde(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided test at ``alpha`` with ``power``, given the SE."""
    return z(alpha, power) * float(se)


def se_from_ci(lo: float, hi: float, alpha: float = 0.05) -> float:
    """The normal-equivalent standard error of a ``1-alpha`` interval: its width over 2 z.

    Lets a percentile-bootstrap interval (which returns no SE) give an MDE.

    >>> round(se_from_ci(-1.96, 1.96), 3)
    1.0
    """
    return (float(hi) - float(lo)) / (2 * float(stats.norm.ppf(1 - alpha / 2)))


@dataclass(frozen=True)
class Verdict:
    """One finding's verdict, in the schema of ``verdicts.json``."""

    verdict: str
    effect: float
    ci: tuple[float, float]
    mde: float
    n: int
    rule: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = [float(self.ci[0]), float(self.ci[1])]
        d["effect"], d["mde"], d["n"] = float(self.effect), float(self.mde), int(self.n)
        return d

    def sentence(self, fmt: str = "+.3f") -> str:
        """``reproduces (effect +0.012, 95% CI [+0.004, +0.020], MDE 0.011)``, for the text."""
        lo, hi = self.ci

        def f(x: float, spec: str = fmt) -> str:
            return format(x, spec) if np.isfinite(x) else "n/a"

        ci = f"[{f(lo)}, {f(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else "n/a"
        return f"{self.verdict} (effect {f(self.effect)}, 95% CI {ci}, MDE {f(self.mde, fmt.lstrip('+'))})"


def decide(effect: float, lo: float, hi: float, *, margin: float, n: int, rule: str,
           se: float | None = None, mde_value: float | None = None) -> Verdict:
    """The three-way rule (module docstring) on an effect oriented so that the study predicts > 0.

    ``se`` defaults to the interval's normal-equivalent SE (:func:`se_from_ci`); ``mde_value``, when
    given (e.g. a t-based MDE, :func:`simlib.measures.power.interval`), replaces ``mde(se)``.

    >>> decide(0.05, 0.02, 0.08, margin=0.02, n=30, rule="r").verdict
    'reproduces'
    >>> decide(0.00, -0.01, 0.01, margin=0.02, n=30, rule="r").verdict
    'contradicts'
    >>> decide(0.01, -0.05, 0.07, margin=0.02, n=30, rule="r").verdict
    'inconclusive'
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (the smallest effect that counts), got {margin!r}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        verdict = "inconclusive"  # one seed or one post: no interval, so no decision
    elif lo > 0:
        verdict = "reproduces"
    elif hi < margin:
        verdict = "contradicts"
    else:
        verdict = "inconclusive"
    se = se_from_ci(lo, hi) if se is None else se
    m = mde_value if mde_value is not None else (mde(se) if np.isfinite(se) else float("nan"))
    return Verdict(verdict, float(effect), (float(lo), float(hi)), float(m), int(n), rule)


def decide_no_gain(effect: float, lo: float, hi: float, *, equivalent: bool, margin: float, n: int, rule: str,
                   se: float, df: float, mde_value: float | None = None) -> Verdict:
    """The rule for a claim of *no meaningful change* (e.g. "no meaningful improvement on real data"):
    **reproduces** when two one-sided tests place the effect within ``±margin`` (``equivalent``,
    :func:`simlib.measures.power.tost`), **contradicts** when its 95% interval ``[lo, hi]`` lies above
    ``margin``, **inconclusive** otherwise. Absence of a significant gain is not enough to reproduce.

    >>> decide_no_gain(0.05, 0.03, 0.07, equivalent=False, margin=0.02, n=9, rule="r", se=0.01, df=9).verdict
    'contradicts'
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (the smallest effect that counts), got {margin!r}")
    if equivalent:
        verdict = "reproduces"
    elif np.isfinite(lo) and lo > margin:
        verdict = "contradicts"
    else:
        verdict = "inconclusive"
    if mde_value is None:
        mde_value = t_factor(df) * se if np.isfinite(df) and np.isfinite(se) else float("nan")
    return Verdict(verdict, float(effect), (float(lo), float(hi)), float(mde_value), int(n), rule)


INCONCLUSIVE_READING = ("the interval covers both 0 and the margin, so this run cannot tell; {what} smaller than "
                        "the minimum detectable effect would go unseen")


def reading(verdict: str, reproduces: str, contradicts: str, what: str = "an effect") -> str:
    """The sentence a chapter writes for its verdict: its own words for the two decided outcomes,
    and one wording, shared by every chapter, for an inconclusive run.

    >>> reading("inconclusive", "r", "c", "a gap")[:34]
    'the interval covers both 0 and the'
    """
    return {"reproduces": reproduces, "contradicts": contradicts,
            "inconclusive": INCONCLUSIVE_READING.format(what=what)}[verdict]


def tost(lo90: float, hi90: float, margin: float) -> bool:
    """Two one-sided tests at alpha 0.05: equivalent within ``±margin`` when the 90% interval
    lies inside it. Absence of a difference is not equivalence; this is.

    >>> tost(-0.01, 0.02, 0.05), tost(-0.01, 0.06, 0.05)
    (True, False)
    """
    return bool(np.isfinite(lo90) and np.isfinite(hi90) and -margin < lo90 and hi90 < margin)


def two_way_bootstrap(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> tuple[float, float, float, float]:
    """``(mean, lo, hi, se)`` of the mean of a posts x seeds matrix (NaN = missing cell),
    resampling posts (rows) and seeds (columns) independently, since both vary between replications.

    A matrix with one column is an ordinary bootstrap over posts.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    rng = np.random.default_rng(seed)
    r = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    c = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    boots = np.empty(n_boot)
    for b in range(n_boot):
        boots[b] = np.nanmean(x[np.ix_(r[b], c[b])])
    lo, hi = np.nanquantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(np.nanmean(x)), float(lo), float(hi), float(np.nanstd(boots, ddof=1))


# --------------------------------------------------------------------------- the file


def path(work_dir: str | Path) -> Path:
    return Path(work_dir) / FILE


def validate(entry: dict) -> dict:
    """Check one entry against the schema; returns it unchanged or raises ValueError."""
    missing = [k for k in KEYS if k not in entry]
    if missing:
        raise ValueError(f"verdict entry lacks {missing}: {entry!r}")
    if entry["verdict"] not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {entry['verdict']!r}")
    if not (isinstance(entry["ci"], (list, tuple)) and len(entry["ci"]) == 2):
        raise ValueError(f"ci must be [lo, hi], got {entry['ci']!r}")
    if not isinstance(entry["n"], int) or isinstance(entry["n"], bool):
        raise ValueError(f"n must be an integer, got {entry['n']!r}")
    for k in ("effect", "mde"):
        if not isinstance(entry[k], (int, float)) or isinstance(entry[k], bool):
            raise ValueError(f"{k} must be a number, got {entry[k]!r}")
    if not isinstance(entry["rule"], str) or not entry["rule"]:
        raise ValueError("rule must be a non-empty string")
    return entry


def load(work_dir: str | Path) -> dict[str, dict]:
    """Every recorded verdict (empty when none has been written)."""
    p = path(work_dir)
    return {k: validate(v) for k, v in json.loads(p.read_text()).items()} if p.exists() else {}


def record(work_dir: str | Path, key: str, verdict: Verdict | dict) -> dict:
    """Write (or replace) the entry ``key``; other chapters' entries stay. Returns the entry."""
    entry = validate(verdict.to_dict() if isinstance(verdict, Verdict) else dict(verdict))
    allv = load(work_dir)
    allv[key] = entry
    atomic_write_json(path(work_dir), dict(sorted(allv.items())))
    return entry


# --------------------------------------------------------------------------- the summary page

FINDINGS: dict[str, str] = {
    "gap": "Synthetic replies are narrower than real ones (finding 1)",
    "reward": "GRPO gains more on synthetic targets than on real ones (finding 2)",
    "reward:inflation": "Within synthetic-trained runs, the held-out gain reads larger against synthetic "
                        "references than against real ones (finding 2a)",
    "reward:transfer": "Against the same real references, real-trained policies beat synthetic-trained ones "
                       "on held-out posts (finding 2b)",
    "reward:real-gain": "Training on real targets brings no meaningful improvement on real data (finding 2c)",
    "logprob": "A third model finds synthetic replies more predictable than real ones (finding 3)",
}


def claim(key: str) -> str:
    """What the entry ``key`` tests, in words (``remedy:<style>`` for the remedy chapter's styles)."""
    if key.startswith("remedy:"):
        return f"The `{key.split(':', 1)[1]}` style narrows the gap to real replies (beyond the blog)"
    return FINDINGS.get(key, key)


def table(entries: dict[str, dict], expected: tuple[str, ...] = tuple(FINDINGS), others: bool = True) -> "Any":
    """One row per finding (expected ones first, a missing one marked as not recorded; with
    ``others``, then every other recorded one): the claim, verdict, effect with its interval, MDE, n
    and the rule; numbers to 3 significant digits."""
    import pandas as pd

    def g(x: float) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:+.3g}"

    rows = []
    for key in list(expected) + (sorted(k for k in entries if k not in expected) if others else []):
        e = entries.get(key)
        if e is None:
            rows.append({"finding": claim(key), "verdict": "not recorded by this run", "effect": "",
                         "95% CI": "", "MDE": "", "n": "", "rule": ""})
            continue
        rows.append({"finding": claim(key), "verdict": e["verdict"], "effect": g(e["effect"]),
                     "95% CI": f"[{g(e['ci'][0])}, {g(e['ci'][1])}]", "MDE": g(e["mde"]).lstrip("+"),
                     "n": str(e["n"]), "rule": e["rule"]})
    return pd.DataFrame(rows).set_index("finding")
