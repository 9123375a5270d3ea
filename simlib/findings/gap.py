"""The gap between real and synthetic responses: the tables the `02_gap` chapter shows.

Functions here assemble the inputs computed by :mod:`simlib.steps` (real responses, synthetic
store, embeddings, judge labels) into tables; the measures themselves live in
:mod:`simlib.measures.diversity` and the drawing in :mod:`simlib.publish.figures`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from simlib.measures.aita import VERDICTS, parse_verdict
from simlib.measures.diversity import entropy_bits, subsample_groups

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
    out = out[out["post_id"].isin(keep)].reset_index(drop=True)
    lost = sorted(set(both["source"]) - set(out["source"]))
    if lost:  # a source with no post at n_per_group would vanish from every comparison without a word
        raise ValueError(f"no post has n_per_group={n_per_group} non-empty replies from {', '.join(lost)}: lower "
                         "n_per_group, or raise n_samples (synthetic replies per post) or min_responses (real ones)")
    return out


def verdict_table(responses: pd.DataFrame, posts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Share of each AITA verdict (and of no verdict) per source, plus the entropy in bits; with
    ``posts``, over the replies to the posts that ask for a verdict only (none: an empty table)."""
    from simlib.measures.aita import verdict_rows

    responses = responses if posts is None else verdict_rows(responses, posts)
    if responses.empty:
        return pd.DataFrame(columns=["none", "entropy_bits"], dtype=float)
    v = responses.assign(verdict=responses["text"].map(parse_verdict).fillna("none"))
    shares = pd.crosstab(v["source"], v["verdict"], normalize="index")
    shares = shares.reindex(columns=[c for c in (*VERDICTS, "none") if c in shares.columns], fill_value=0.0)
    shares["entropy_bits"] = [entropy_bits(list(g["verdict"][g["verdict"] != "none"]))
                              for _, g in v.groupby("source")]
    return shares.reindex([s for s in SOURCES if s in shares.index] + [s for s in shares.index if s not in SOURCES])


def verdict_measures_where_asked(per_post: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """``per_post`` diversity with its verdict columns blanked on posts that ask for no verdict, where a
    pattern match is a coincidence (:func:`simlib.measures.aita.verdict_posts`)."""
    from simlib.measures.aita import verdict_posts

    off = ~per_post["post_id"].astype(str).isin(verdict_posts(posts))
    out = per_post.copy()
    out.loc[off, "verdict_entropy"] = float("nan")
    out.loc[off, "n_verdict"] = 0
    out.loc[off, "top_verdict"] = None
    return out


def measures_shown(per_post: pd.DataFrame) -> list[str]:
    """The diversity measures with a value on some post (verdict entropy drops out where no post asks for one)."""
    from simlib.measures.diversity import MEASURES

    return [m for m in MEASURES if m in per_post and per_post[m].notna().any()]


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


# --------------------------------------------------------------------------- quality-adjusted diversity
# The rule of the `gap` verdict, stated in the chapter before its numbers (simlib.measures.verdicts).
GAP_MEASURE = "repetition"
QUALITY_KEEP = 0.95  # the quality gate keeps this share of real replies (simlib.measures.quality)
# The smallest gap that counts (SESOI), in mean pairwise cosine similarity (a 0..1 scale here): the
# study describes synthetic replies that give "the same reasons each time", a gap far larger than
# this, so a run that rules out 0.05 rules out the study's effect; a smaller difference would not
# change how a reader sees two sets of replies.
GAP_MARGIN = 0.05
GAP_RULE = ("effect = per post, the mean over synthetic styles of (repetition of the style's replies minus "
            "repetition of real replies), among replies that pass the quality gate (keeping "
            f"{QUALITY_KEEP:.0%} of real replies), at equal n per post; 95% CI by bootstrap over posts; "
            f"reproduces if the CI lies above 0, contradicts if it lies below the margin {GAP_MARGIN}, else inconclusive")
FRONTIER_CUTS = (0, 5, 10, 20, 30, 50)  # quality thresholds, as percentiles of the real replies' quality


def post_texts(posts: pd.DataFrame, max_chars: int) -> pd.Series:
    """Each post's title and body (cut to ``max_chars``), by post id: what a reply is relevant to."""
    from simlib.text import truncate_post

    return pd.Series([f"{p.title}\n\n{truncate_post(p.body or '', max_chars)}".strip() for p in posts.itertuples()],
                     index=posts["post_id"].astype(str))


def with_quality(responses: pd.DataFrame, reply_emb: np.ndarray, post_emb: pd.DataFrame,
                 fluency: pd.Series) -> pd.DataFrame:
    """``responses`` with the quality components: ``relevance`` (cosine between a reply's and its
    post's embedding; ``post_emb`` has one row per post id) and ``fluency`` (row-aligned mean
    token log-prob under the scorer)."""
    from simlib.measures.quality import relevance

    rel = relevance(reply_emb, post_emb.loc[responses["post_id"].astype(str)].to_numpy())
    return responses.assign(relevance=rel, fluency=np.asarray(fluency, dtype=np.float64))


def gate_responses(scored: pd.DataFrame, keep: float = QUALITY_KEEP):
    """``(gated, gate)``: the gate calibrated on the real rows of ``scored``, applied to every row."""
    from simlib.measures.quality import apply_gate, calibrate

    gate = calibrate(scored[scored["source"] == "real"], keep=keep)
    return apply_gate(scored, gate), gate


def passing_diversity(gated: pd.DataFrame, emb: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Per-post diversity of the replies that pass, every source of a post cut to the same n (the
    fewest passing replies any source has there); a source with fewer than 2 passing replies to a
    post has no value for it."""
    from simlib.measures.diversity import per_post_diversity

    mask = gated["passes"].to_numpy(dtype=bool)
    sub, sub_emb = subsample_groups(gated[mask].reset_index(drop=True), np.asarray(emb)[mask], n=None,
                                    match_on="post_id", seed=seed)
    return per_post_diversity(sub, sub_emb)


def gap_effect(per_post: pd.DataFrame, styles=("plain", "humanlike"), reference: str = "real",
               measure: str = GAP_MEASURE) -> pd.Series:
    """Per post, the mean over ``styles`` of ``measure[style] - measure[reference]`` (posts where
    no style has a value are dropped): above 0 = synthetic replies more alike than real ones."""
    wide = per_post.pivot_table(index="post_id", columns="source", values=measure, aggfunc="mean")
    present = [s for s in styles if s in wide.columns]
    if reference not in wide.columns or not present:  # e.g. no reply of any style passed the quality gate
        return pd.Series(dtype=float)
    d = pd.concat([wide[s] - wide[reference] for s in present], axis=1)
    return d.mean(axis=1, skipna=True).dropna()


def gap_verdict(per_post: pd.DataFrame, n_boot: int = 2000, seed: int = 0, styles=("plain", "humanlike")):
    """The ``gap`` verdict (:data:`GAP_RULE`) from per-post diversity of the passing replies."""
    from simlib.measures import verdicts

    d = gap_effect(per_post, styles).to_numpy(dtype=np.float64)
    if d.size == 0:
        return verdicts.decide(float("nan"), float("nan"), float("nan"), margin=GAP_MARGIN, n=0, rule=GAP_RULE)
    mean, lo, hi, se = verdicts.two_way_bootstrap(d, n_boot=n_boot, seed=seed)
    if d.size < 2:
        lo = hi = se = float("nan")
    return verdicts.decide(mean, lo, hi, margin=GAP_MARGIN, n=int(d.size), rule=GAP_RULE, se=se)


def frontier_table(scored: pd.DataFrame, emb: np.ndarray, cuts=FRONTIER_CUTS, seed: int = 0) -> pd.DataFrame:
    """Diversity against quality: for each threshold (a percentile of the real replies' quality;
    0 = no gate), per source the pass rate, the mean repetition and Vendi score of the passing
    replies (equal n per post), and the posts those rest on."""
    from simlib.measures.quality import apply_gate, calibrate

    rows = []
    for cut in cuts:
        gated = scored.assign(passes=True) if cut == 0 else apply_gate(
            scored, calibrate(scored[scored["source"] == "real"], keep=1 - cut / 100))
        pp = passing_diversity(gated, emb, seed=seed)
        for src, g in gated.groupby("source", sort=False):
            d = pp[pp["source"] == src]
            rows.append({"cut": cut, "source": src, "pass_rate": float(g["passes"].mean()),
                         "repetition": float(d["repetition"].mean()), "vendi": float(d["vendi"].mean()),
                         "posts": int(d["repetition"].notna().sum())})
    return pd.DataFrame(rows)


def frontier_reading(front: pd.DataFrame, src: str) -> str:
    """How ``src``'s passing replies compare with real ones at the frontier's strictest bar (point estimates)."""
    strict = front[front["cut"] == front["cut"].max()].set_index("source")["repetition"]
    a, b = strict.get(src, float("nan")), strict.get("real", float("nan"))
    if not (np.isfinite(a) and np.isfinite(b)):
        return "not comparable with (too few passing replies per post to measure)"
    return "more alike than" if a > b else "less alike than"


def stance_table(labels: pd.DataFrame, question: str, by: str = "source") -> pd.DataFrame:
    """Share of each of the judge's labels for ``question`` (``stance``, ``register``) per source."""
    shares = pd.crosstab(labels[by], labels[question], normalize="index")
    return shares.reindex([s for s in SOURCES if s in shares.index] + [s for s in shares.index if s not in SOURCES])


def effects_table(rows: dict) -> pd.DataFrame:
    """Verdict-style rows (``{name: Verdict}``) as a table: effect, interval, MDE, posts, verdict."""
    return pd.DataFrame({k: {"effect": v.effect, "lo": v.ci[0], "hi": v.ci[1], "MDE": v.mde, "posts": v.n,
                             "verdict": v.verdict} for k, v in rows.items()}).T


def verdict_reading(verdict: str) -> str:
    """The sentence the chapter writes for each verdict of the ``gap`` rule."""
    from simlib.measures.verdicts import reading

    return reading(verdict,
                   "among replies that make sense, synthetic replies to a post are more alike than real ones, as the "
                   "study reports",
                   "among replies that make sense, the run rules out a gap as large as the margin: synthetic replies "
                   "are not narrower than real ones by this measure", "a gap")
