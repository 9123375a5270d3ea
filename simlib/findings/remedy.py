"""Can synthetic data be saved? Tables for the `05_remedy` chapter.

The study closes by suggesting, untested, two ways to make synthetic replies more like real ones:
many different system prompts (our ``persona`` style) and a little real data as a seed (our
``seeded`` style). This module puts every source on one footing: each measure of the gap chapter
(diversity within a post, AITA verdicts, judge registers) and of the log-prob chapter (mean token
log-prob and its spread), each with a 95% bootstrap interval over posts, then ranks the synthetic
styles by how close they come to the real replies. The measures themselves live in
:mod:`simlib.measures.diversity` and :mod:`simlib.findings.convergence`; this module only assembles and ranks.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from simlib.measures.aita import parse_verdict
from simlib.measures.diversity import MEASURES, bootstrap_ci, entropy_bits, summarise

SOURCES = ("real", "plain", "humanlike", "persona", "seeded")
BASELINES = ("plain", "humanlike")

# Measure id -> what the book calls it. Order is the order of the ranking table.
LABELS = {
    "repetition": "repetition (mean pairwise cosine)",
    "vendi": "Vendi score",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "verdict_entropy": "verdict entropy per post (bits)",
    "verdict_entropy_pooled": "verdict entropy, all replies (bits)",
    "no_verdict": "share without a verdict",
    "register_entropy": "judge register entropy (bits)",
    "mean_logprob": "mean token log-prob",
    "logprob_sd": "log-prob spread (sd over replies)",
}


def pooled_bootstrap(groups: Sequence[Sequence], stat: Callable[[list], float], n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``stat`` of all items pooled over ``groups`` (one group per post), with a percentile
    bootstrap interval that resamples whole posts, as :func:`simlib.measures.diversity.bootstrap_ci` does.

    >>> pooled_bootstrap([[1.0], [1.0]], lambda xs: float(np.mean(xs)))
    (1.0, 1.0, 1.0)
    """
    groups = [list(g) for g in groups]
    if not groups:
        return (float("nan"), float("nan"), float("nan"))

    def on_posts(idx) -> float:
        return stat([x for i in np.asarray(idx, dtype=int) for x in groups[i]])

    return bootstrap_ci(np.arange(len(groups), dtype=float), on_posts, n_boot=n_boot, seed=seed)


def _pooled_rows(df: pd.DataFrame, col: str, measure: str, stat: Callable[[list], float],
                 n_boot: int, seed: int) -> list[dict]:
    rows = []
    for src, g in df.groupby("source", sort=False):
        groups = [list(v[col]) for _, v in g.groupby("post_id", sort=True)]
        mean, lo, hi = pooled_bootstrap(groups, stat, n_boot=n_boot, seed=seed)
        rows.append({"source": src, "measure": measure, "mean": mean, "lo": lo, "hi": hi, "n_posts": len(groups)})
    return rows


def _entropy(labels: list) -> float:
    return entropy_bits([x for x in labels if x is not None])


def _mean(xs: list) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def measure_table(per_post: pd.DataFrame, responses: pd.DataFrame, scores: pd.DataFrame,
                  labels: pd.DataFrame | None = None, n_boot: int = 2000, seed: int = 0,
                  posts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every measure for every source, long format: ``source, measure, mean, lo, hi, n_posts``.

    ``per_post``: :func:`simlib.measures.diversity.per_post_diversity` of ``responses`` (post_id, source,
    text); ``scores``: :func:`simlib.steps.logprob_scores` rows (post_id, source, mean_logprob);
    ``labels``: judge labels with post_id, source and label (``unparsed`` counts as no label).
    With ``posts``, the verdict measures read only the posts that ask for a verdict
    (:func:`simlib.measures.aita.verdict_posts`) and are left out where none does.
    """
    from simlib.findings.gap import verdict_measures_where_asked
    from simlib.measures.aita import verdict_rows

    if posts is not None:
        per_post, responses = verdict_measures_where_asked(per_post, posts), verdict_rows(responses, posts)
    measures = [m for m in MEASURES if m != "verdict_entropy" or per_post[m].notna().any()]
    rows = summarise(per_post, measures, n_boot=n_boot, seed=seed).to_dict("records")
    if len(responses):
        v = responses.assign(verdict=responses["text"].map(parse_verdict))
        rows += _pooled_rows(v, "verdict", "verdict_entropy_pooled", _entropy, n_boot, seed)
        rows += _pooled_rows(v.assign(none=v["verdict"].isna().astype(float)), "none", "no_verdict",
                             _mean, n_boot, seed)
    if labels is not None and len(labels):
        lab = labels.assign(label=labels["label"].where(labels["label"] != "unparsed"))
        rows += _pooled_rows(lab, "label", "register_entropy", _entropy, n_boot, seed)
    rows += _pooled_rows(scores, "mean_logprob", "mean_logprob",
                         _mean, n_boot, seed)
    rows += _pooled_rows(scores, "mean_logprob", "logprob_sd",
                         lambda xs: float(np.std(xs, ddof=1)) if len(xs) > 1 else float("nan"), n_boot, seed)
    out = pd.DataFrame(rows)[["source", "measure", "mean", "lo", "hi", "n_posts"]]
    order = {m: i for i, m in enumerate(LABELS)}
    return out.sort_values(["measure", "source"], key=lambda s: s.map(order) if s.name == "measure"
                           else s.map({x: i for i, x in enumerate(SOURCES)})).reset_index(drop=True)


def wide(long: pd.DataFrame, fmt: str = "{:.3f}") -> pd.DataFrame:
    """Measures as rows, sources as columns, each cell ``mean [lo, hi]`` (``n/a`` when undefined)."""
    def cell(r) -> str:
        if not np.isfinite(r["mean"]):
            return "n/a"
        if not (np.isfinite(r["lo"]) and np.isfinite(r["hi"])):
            return fmt.format(r["mean"])
        return f"{fmt.format(r['mean'])} [{fmt.format(r['lo'])}, {fmt.format(r['hi'])}]"

    t = long.assign(cell=long.apply(cell, axis=1)).pivot(index="measure", columns="source", values="cell")
    t = t.reindex(index=[m for m in LABELS if m in t.index], columns=[s for s in SOURCES if s in t.columns])
    t.index = [LABELS[m] for m in t.index]
    return t


def ranking(long: pd.DataFrame, reference: str = "real") -> pd.DataFrame:
    """Per measure, each synthetic source's distance to ``reference`` (|mean − reference mean|),
    its rank (1 = closest), whether its interval overlaps the reference's, and whether it is closer
    than every baseline style (:data:`BASELINES`). Measures where the reference is undefined are left out."""
    ref = long[long["source"] == reference].set_index("measure")
    rows = []
    for m, g in long[long["source"] != reference].groupby("measure", sort=False):
        if m not in ref.index or not np.isfinite(ref.loc[m, "mean"]):
            continue
        r = ref.loc[m]
        g = g.assign(distance=(g["mean"] - r["mean"]).abs())
        g = g.assign(rank=g["distance"].rank(method="min"),
                     overlaps=(g["lo"] <= r["hi"]) & (g["hi"] >= r["lo"]))
        best_base = g[g["source"].isin(BASELINES)]["distance"].min()
        g = g.assign(closer_than_baselines=g["distance"] < best_base)
        rows.append(g[["measure", "source", "mean", "distance", "rank", "overlaps", "closer_than_baselines"]])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["measure", "source", "mean", "distance", "rank", "overlaps", "closer_than_baselines"])


def rank_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """Ranks as a table: measures as rows, synthetic sources as columns, plus their mean rank."""
    t = ranks.pivot(index="measure", columns="source", values="rank")
    t = t.reindex(index=[m for m in LABELS if m in t.index], columns=[s for s in SOURCES if s in t.columns])
    t.loc["mean rank"] = t.mean()
    t.index = [LABELS.get(m, m) for m in t.index]
    return t


def _closer(base: np.ndarray, style: np.ndarray, real: np.ndarray) -> float:
    # how much nearer to real the style's mean lies than the baselines' mean (> 0 = nearer)
    return float(abs(np.mean(base - real)) - abs(np.mean(style - real)))


def remedy_rule(margin: float) -> str:
    return ("effect = |mean over posts of (baseline styles - real)| - |mean over posts of (style - real)| in "
            "repetition among replies that pass the quality gate, at equal n per post (> 0: the style lies nearer "
            "to real replies than plain and humanlike do); 95% CI by bootstrap over posts; reproduces (the style "
            f"narrows the gap) if the CI lies above 0, contradicts if below the margin {margin:g}, else "
            f"inconclusive; closes the gap only if a TOST puts style - real within +-{margin:g} (90% CI)")


def remedy_verdicts(per_post: pd.DataFrame, styles: Sequence[str], margin: float, measure: str = "repetition",
                    n_boot: int = 2000, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Per style: its ``remedy:<style>`` verdict (:func:`remedy_rule`) and whether it closes the gap by
    an equivalence test. ``per_post``: per-post diversity of the gated replies of every source
    (:func:`simlib.findings.gap.passing_diversity`). Returns ``({style: Verdict}, table)``."""
    from simlib.measures import verdicts

    wide = per_post.pivot_table(index="post_id", columns="source", values=measure, aggfunc="mean")
    out, rows = {}, []
    for s in styles:
        cols = ["real", s, *BASELINES]
        w = wide[[c for c in cols if c in wide.columns]].dropna() if all(c in wide.columns for c in cols) else wide.iloc[:0]
        if len(w) < 2:
            v = verdicts.decide(float("nan"), float("nan"), float("nan"), margin=margin, n=len(w), rule=remedy_rule(margin))
            out[s] = v
            rows.append({"style": s, "effect": v.effect, "lo": v.ci[0], "hi": v.ci[1], "MDE": v.mde, "posts": len(w),
                         "style - real": float("nan"), "90% CI": "n/a", "closes the gap (TOST)": False, "verdict": v.verdict})
            continue
        base, style, real = w[list(BASELINES)].mean(axis=1).to_numpy(), w[s].to_numpy(), w["real"].to_numpy()
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(w), size=(n_boot, len(w)))
        boots = np.array([_closer(base[i], style[i], real[i]) for i in idx])
        lo, hi = np.quantile(boots, [0.025, 0.975])
        v = verdicts.decide(_closer(base, style, real), float(lo), float(hi), margin=margin, n=len(w),
                            rule=remedy_rule(margin), se=float(np.std(boots, ddof=1)))
        diff = style - real
        d_boot = np.array([diff[i].mean() for i in idx])
        lo90, hi90 = np.quantile(d_boot, [0.05, 0.95])
        out[s] = v
        rows.append({"style": s, "effect": v.effect, "lo": v.ci[0], "hi": v.ci[1], "MDE": v.mde, "posts": len(w),
                     "style - real": float(diff.mean()), "90% CI": f"[{lo90:+.3g}, {hi90:+.3g}]",
                     "closes the gap (TOST)": verdicts.tost(lo90, hi90, margin), "verdict": v.verdict})
    return out, pd.DataFrame(rows).set_index("style")


# --------------------------------------------------------------------------- sentences for any remedy_styles
def _styles_text(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "; ".join(parts[:-1]) + "; and " + parts[-1] if parts else ""


def ranking_reading(ranks: pd.DataFrame, styles: Sequence[str]) -> str:
    """The ranking paragraph's numbers, one clause per style of this run (any subset of the new styles).

    >>> r = pd.DataFrame({"measure": ["m", "m"], "source": ["persona", "plain"], "closer_than_baselines": [True, False],
    ...                   "overlaps": [True, False]})
    >>> ranking_reading(r, ["persona"])
    'Over the 1 measures where real replies have a value, persona is closer to real than both original styles on 1 and its interval overlaps the real one on 1.'
    """
    parts = []
    for s in styles:
        g = ranks[ranks["source"] == s]
        parts.append(f"{s} is closer to real than both original styles on {int(g['closer_than_baselines'].sum())} "
                     f"and its interval overlaps the real one on {int(g['overlaps'].sum())}")
    return f"Over the {ranks['measure'].nunique()} measures where real replies have a value, {_styles_text(parts)}."


def verdicts_reading(style_v: dict, table: pd.DataFrame) -> str:
    """Each style's verdict by the remedy rule and whether it closes the gap (TOST), in one sentence."""
    def one(s, v) -> str:
        if not np.isfinite(v.effect):  # too few posts where every source has passing replies
            return (f"{s} is {v.verdict}: only {v.n} post(s) have at least two passing replies from every source, "
                    "too few for an effect or an interval")
        return f"{s} {v.sentence()} and " + ("closes the gap by the equivalence test" if table.loc[s, "closes the gap (TOST)"]
                                             else "is not shown to close the gap by the equivalence test")

    return f"By that rule, {_styles_text([one(s, v) for s, v in style_v.items()])}."


def transfer_reading(test: pd.DataFrame, styles: Sequence[str], fmt: str = "+.4f") -> str:
    """How training on each new style's targets changed the held-out score against real replies
    (``test``: :func:`simlib.findings.transfer.cells` indexed by trained_on, against)."""
    def one(s: str) -> str:
        if (s, "real") not in test.index:
            return "n/a (not measured)"
        r = test.loc[(s, "real")]
        ci = "n/a" if not (np.isfinite(r["lo"]) and np.isfinite(r["hi"])) else \
            f"[{format(r['lo'], fmt)}, {format(r['hi'], fmt)}]"
        return f"{format(float(r['delta']), fmt)} ({ci})"

    first, *rest = styles
    return f"{first} targets changes it by {one(first)}" + "".join(f", on {s} targets by {one(s)}" for s in rest)
