"""Diversity of a set of responses to one post, and uncertainty over posts.

All functions are pure (no I/O, no global state). The unit of analysis is the *set* of
responses that one source (real Reddit users, or a synthetic generator) gives to one
post; :func:`per_post_diversity` computes every measure per ``(post_id, source)`` set and
:func:`summarise` / :func:`paired_difference` bootstrap over posts.

Measures
--------
- ``repetition``  :func:`mean_pairwise_cosine` -- mean cosine similarity over distinct
  pairs of responses (the "Artificial Hivemind" intra-post repetition). Higher = narrower.
- ``vendi``       :func:`vendi_score` -- effective number of distinct responses
  (Friedman & Dieng 2023); between 1 (all the same) and n (mutually orthogonal).
- ``distinct_1``/``distinct_2`` :func:`distinct_n` -- unique / total word n-grams.
- ``verdict_entropy`` :func:`entropy_bits` of the AITA verdicts found by
  :func:`parse_verdict` (bits; 0 = every response gives the same verdict).

Vendi and distinct-n depend on the number of responses n, so compare sources on sets of
equal size: :func:`subsample_groups` first.
"""
from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from typing import Any, Callable, Hashable, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from simlib.measures.aita import VERDICTS, parse_verdict

__all__ = [
    "mean_pairwise_cosine",
    "vendi_score",
    "tokenize",
    "distinct_n",
    "entropy_bits",
    "bootstrap_ci",
    "subsample_groups",
    "per_post_diversity",
    "summarise",
    "paired_difference",
    "MEASURES",
]

MEASURES: tuple[str, ...] = ("repetition", "vendi", "distinct_1", "distinct_2", "verdict_entropy")


# --------------------------------------------------------------------------- embeddings
def _unit_rows(emb: Any) -> np.ndarray:
    """Rows of ``emb`` as float64 unit vectors (all-zero rows stay zero)."""
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (n, d) embedding matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def mean_pairwise_cosine(emb: Any) -> float:
    """Mean cosine similarity over the n(n-1)/2 distinct pairs (i < j) of rows of ``emb``.

    Rows are L2-normalised first, so raw or normalised embeddings give the same answer.
    Identical rows give 1, mutually orthogonal rows give 0; fewer than 2 rows give NaN.

    >>> mean_pairwise_cosine([[1, 0], [2, 0], [3, 0]])
    1.0
    >>> mean_pairwise_cosine([[1, 0], [0, 1]])
    0.0
    """
    x = _unit_rows(emb)
    n = x.shape[0]
    if n < 2:
        return float("nan")
    # sum_{i != j} <x_i, x_j> = ||sum_i x_i||^2 - sum_i ||x_i||^2   (O(n d), no n x n matrix)
    s = x.sum(axis=0)
    off_diag = float(s @ s) - float(np.einsum("ij,ij->", x, x))
    val = off_diag / (n * (n - 1))
    return float(min(1.0, max(-1.0, round(val, 12))))


def vendi_score(emb: Any) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel.

    ``K = X X^T`` for the row-normalised embeddings X (so ``K_ii = 1``), ``λ`` the
    eigenvalues of ``K / n`` and ``VS = exp(-Σ λ log λ)`` over ``λ > 0``. It is the
    effective number of distinct items: 1 if all rows are identical (up to scale), n if
    they are mutually orthogonal. Empty input gives NaN. Computed from the ``d x d`` matrix
    ``X^T X / n`` when ``d < n`` (same non-zero spectrum).

    >>> vendi_score([[1, 0], [1, 0], [1, 0]])
    1.0
    >>> round(vendi_score(np.eye(4)), 6)
    4.0
    """
    x = _unit_rows(emb)
    n, d = x.shape
    if n == 0:
        return float("nan")
    gram = (x.T @ x) if d < n else (x @ x.T)
    lam = np.linalg.eigvalsh(gram / n)
    lam = lam[lam > 1e-12]  # ignore λ <= 0 (and round-off); their contribution is ~0
    h = float(-(lam * np.log(lam)).sum())
    return float(round(math.exp(h), 10))


# --------------------------------------------------------------------------- n-grams
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens: runs of ASCII letters/digits, keeping inner apostrophes.

    Punctuation, markdown and emoji are dropped; curly apostrophes count as straight ones.

    >>> tokenize("You're NOT the a-hole, **NTA**!")
    ["you're", 'not', 'the', 'a', 'hole', 'nta']
    """
    return _TOKEN_RE.findall(str(text).lower().replace("\u2019", "'"))


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n over a set of texts: unique n-grams / total n-grams (Li et al. 2016).

    Texts are tokenised with :func:`tokenize`; n-grams never span two texts. Both counts
    are pooled over the whole set, so repeating a text lowers the score. NaN when the set
    has no n-gram at all.

    >>> distinct_n(["the cat sat", "the cat ran"], 1)   # {the, cat, sat, ran} / 6
    0.6666666666666666
    >>> distinct_n(["the cat sat", "the cat ran"], 2)   # {the cat, cat sat, cat ran} / 4
    0.75
    >>> distinct_n(["same text", "Same text!"], 2)
    0.5
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        toks = tokenize(t)
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return float(len(seen) / total) if total else float("nan")


# --------------------------------------------------------------------------- entropy
def entropy_bits(
    labels: Iterable[Hashable | None] | Mapping[Hashable, float],
    *,
    none: Literal["drop", "label"] = "drop",
    none_label: str = "none",
) -> float:
    """Shannon entropy in bits of a label distribution.

    ``labels`` is either a sequence of labels (e.g. verdicts, ``None`` for unparsed) or a
    mapping ``label -> count``. ``none="drop"`` excludes ``None`` labels (and NaN);
    ``none="label"`` counts them as one more category called ``none_label``. NaN when
    nothing is left to count.

    >>> entropy_bits(["NTA", "YTA", "ESH", "NAH"])
    2.0
    >>> entropy_bits({"NTA": 3, "YTA": 0})
    0.0
    >>> entropy_bits(["NTA", None], none="label")
    1.0
    """
    if none not in ("drop", "label"):
        raise ValueError("none must be 'drop' or 'label'")
    if isinstance(labels, Mapping):
        items = list(labels.items())
    else:
        items = list(Counter(labels).items())
    counts: Counter = Counter()
    for lab, c in items:
        if lab is None or (isinstance(lab, float) and math.isnan(lab)):
            if none == "drop":
                continue
            lab = none_label
        c = float(c)
        if c < 0:
            raise ValueError("counts must be non-negative")
        counts[lab] += c
    p = np.array([c for c in counts.values() if c > 0], dtype=np.float64)
    if p.sum() <= 0:
        return float("nan")
    p = p / p.sum()
    return float(round(-(p * np.log2(p)).sum(), 12) + 0.0)


# --------------------------------------------------------------------------- bootstrap
def bootstrap_ci(
    values: Iterable[float],
    stat: Callable[..., Any] = np.mean,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    dropna: bool = True,
) -> tuple[float, float, float]:
    """``(point, lo, hi)``: ``stat(values)`` and its percentile-bootstrap ``1-alpha`` CI.

    Resamples the units (one value per post) with replacement ``n_boot`` times using
    ``numpy.random.default_rng(seed)``. NaN values are dropped first (``dropna``). Empty
    input gives ``(nan, nan, nan)``; one value gives a zero-width interval. ``stat`` is
    called as ``stat(samples, axis=1)`` when it accepts ``axis``, else once per resample.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    if dropna:
        x = x[~np.isnan(x)]
    if x.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    point = float(stat(x))
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    samples = x[idx]
    try:
        boots = np.asarray(stat(samples, axis=1), dtype=np.float64)
        if boots.shape != (n_boot,):
            raise TypeError
    except TypeError:
        boots = np.array([stat(row) for row in samples], dtype=np.float64)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return (point, float(lo), float(hi))


# --------------------------------------------------------------------------- per post
def _group_seed(seed: int, key: Any) -> np.random.Generator:
    parts = key if isinstance(key, tuple) else (key,)
    h = zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return np.random.default_rng([int(seed), h])


def subsample_groups(
    df: pd.DataFrame,
    emb: np.ndarray | None = None,
    *,
    n: int | None = None,
    group_cols: Sequence[str] = ("post_id", "source"),
    match_on: str | Sequence[str] | None = "post_id",
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Subsample every group to the same size so that sources are compared at equal n.

    - ``n`` an int: every group with at least ``n`` rows is sampled down to ``n`` rows;
      smaller groups are dropped.
    - ``n=None``: within each ``match_on`` value (by default each post) every group is
      sampled down to the smallest group of that post, so e.g. real and synthetic
      responses to a post are compared at the same n (which may differ between posts).

    Sampling is without replacement and deterministic: each group draws from its own
    generator seeded by ``(seed, crc32(group key))``, so a group's sample does not depend
    on which other groups are present. Kept rows keep their original relative order.
    Returns ``(df_sub, emb_sub)`` with ``df_sub`` re-indexed 0..m-1 and ``emb_sub`` the
    row-aligned embeddings (``None`` if ``emb`` is None). ``df``/``emb`` are aligned by
    position.
    """
    group_cols = list(group_cols)
    if emb is not None and len(emb) != len(df):
        raise ValueError(f"emb has {len(emb)} rows, df has {len(df)}")
    if n is not None and n < 1:
        raise ValueError("n must be >= 1")
    groups = df.groupby(group_cols, sort=True, dropna=False).indices  # key -> positions
    if n is None:
        if match_on is None:
            target_all = min((len(p) for p in groups.values()), default=0)
            targets = {k: target_all for k in groups}
        else:
            match = [match_on] if isinstance(match_on, str) else list(match_on)
            pos_of = [group_cols.index(c) for c in match]
            mins: dict[Any, int] = {}
            for k, p in groups.items():
                kt = k if isinstance(k, tuple) else (k,)
                mk = tuple(kt[i] for i in pos_of)
                mins[mk] = min(mins.get(mk, len(p)), len(p))
            targets = {}
            for k in groups:
                kt = k if isinstance(k, tuple) else (k,)
                targets[k] = mins[tuple(kt[i] for i in pos_of)]
    else:
        targets = {k: n for k in groups}
    keep: list[np.ndarray] = []
    for k, pos in groups.items():
        t = targets[k]
        if len(pos) < t or t == 0:
            continue
        if len(pos) == t:
            keep.append(np.asarray(pos))
        else:
            chosen = _group_seed(seed, k).choice(len(pos), size=t, replace=False)
            keep.append(np.asarray(pos)[np.sort(chosen)])
    rows = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=np.int64)
    out = df.iloc[rows].reset_index(drop=True)
    return out, (None if emb is None else np.asarray(emb)[rows])


def per_post_diversity(
    df: pd.DataFrame,
    emb: np.ndarray,
    group_cols: Sequence[str] = ("post_id", "source"),
    *,
    text_col: str = "text",
    verdicts: bool = True,
) -> pd.DataFrame:
    """One row per ``(post_id, source)`` set of responses with its diversity measures.

    ``df`` has the ``group_cols`` and ``text_col`` columns; ``emb`` is the row-aligned
    (by position) embedding matrix. Output columns: the group columns, ``n``,
    ``repetition`` (:func:`mean_pairwise_cosine`), ``vendi``, ``distinct_1``,
    ``distinct_2``, ``verdict_entropy`` (bits, unparsed responses dropped),
    ``n_verdict`` (responses with a parsed verdict) and ``top_verdict`` (modal verdict,
    ties broken by :data:`VERDICTS` order).

    A set of fewer than 2 responses has no diversity: all five measures are NaN for it
    (``n`` still says how many there were). ``verdict_entropy`` is NaN when no response
    has a verdict; pass ``verdicts=False`` to skip parsing (non-AITA data).
    """
    group_cols = list(group_cols)
    emb = np.asarray(emb)
    if len(emb) != len(df):
        raise ValueError(f"emb has {len(emb)} rows, df has {len(df)}")
    texts = df[text_col].fillna("").astype(str).to_numpy()
    parsed = [parse_verdict(t) for t in texts] if verdicts else [None] * len(texts)
    order = {v: i for i, v in enumerate(VERDICTS)}
    records = []
    for key, pos in df.groupby(group_cols, sort=True, dropna=False).indices.items():
        kt = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(group_cols, kt))
        m = len(pos)
        rec["n"] = m
        vs = [parsed[i] for i in pos if parsed[i] is not None]
        rec["n_verdict"] = len(vs)
        if vs:
            cnt = Counter(vs)
            rec["top_verdict"] = min(cnt, key=lambda v: (-cnt[v], order.get(v, 99)))
        else:
            rec["top_verdict"] = None
        if m < 2:
            rec.update({k: float("nan") for k in MEASURES})
        else:
            e = emb[pos]
            t = texts[pos]
            rec["repetition"] = mean_pairwise_cosine(e)
            rec["vendi"] = vendi_score(e)
            rec["distinct_1"] = distinct_n(t, 1)
            rec["distinct_2"] = distinct_n(t, 2)
            rec["verdict_entropy"] = entropy_bits(vs) if verdicts else float("nan")
        records.append(rec)
    cols = group_cols + ["n", *MEASURES, "n_verdict", "top_verdict"]
    return pd.DataFrame.from_records(records, columns=cols)


def summarise(
    per_post_df: pd.DataFrame,
    measures: Sequence[str] = MEASURES,
    by: str | Sequence[str] = "source",
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean of each measure over posts, per ``by`` group, with a percentile-bootstrap CI.

    Long format: one row per (``by`` value, measure) with columns ``by...``, ``measure``,
    ``mean``, ``lo``, ``hi`` and ``n_posts`` (posts with a non-NaN value, the bootstrap
    units). Every cell uses the same ``seed``.
    """
    by_cols = [by] if isinstance(by, str) else list(by)
    records = []
    for key, g in per_post_df.groupby(by_cols, sort=True, dropna=False):
        kt = key if isinstance(key, tuple) else (key,)
        for m in measures:
            vals = pd.to_numeric(g[m], errors="coerce").to_numpy(dtype=np.float64)
            point, lo, hi = bootstrap_ci(vals, np.mean, n_boot=n_boot, alpha=alpha, seed=seed)
            records.append(
                {**dict(zip(by_cols, kt)), "measure": m, "mean": point, "lo": lo, "hi": hi,
                 "n_posts": int(np.sum(~np.isnan(vals)))}
            )
    return pd.DataFrame.from_records(records, columns=[*by_cols, "measure", "mean", "lo", "hi", "n_posts"])


def paired_difference(
    per_post_df: pd.DataFrame,
    measure: str,
    a: Hashable,
    b: Hashable,
    *,
    unit: str = "post_id",
    by: str = "source",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """Mean over posts of ``measure[a] - measure[b]`` with a bootstrap CI, paired by post.

    Only posts where both sources have a non-NaN value count. Returns
    ``(mean_diff, lo, hi, n_posts)``; e.g. ``paired_difference(pp, "vendi", "synthetic",
    "real")`` below 0 with ``hi < 0`` says synthetic sets are narrower than real ones.
    """
    wide = per_post_df.pivot_table(index=unit, columns=by, values=measure, aggfunc="mean")
    if a not in wide.columns or b not in wide.columns:
        return (float("nan"), float("nan"), float("nan"), 0)
    d = (wide[a] - wide[b]).dropna().to_numpy(dtype=np.float64)
    point, lo, hi = bootstrap_ci(d, np.mean, n_boot=n_boot, alpha=alpha, seed=seed)
    return (point, lo, hi, int(d.size))
