"""Where the variance is: a crossed post x seed decomposition, t intervals, MDE projection and TOST.

Every statistic of the reward chapter is a mean over a posts x seeds matrix of paired values (one
value per probe or held-out post and GRPO seed). Posts and seeds are crossed random factors, so
with one value per cell the two-way random-effects model is

    y_ij = mu + a_i + b_j + e_ij,   a ~ (0, s2_post), b ~ (0, s2_seed), e ~ (0, s2_res),

whose components the method of moments (two-way ANOVA without replication) estimates from the row,
column and residual mean squares. The variance of the grand mean over P posts and S seeds is
``s2_post/P + s2_seed/S + s2_res/(P S)``; with few seeds the seed term is estimated from S - 1
degrees of freedom, so the interval and the MDE use a t quantile whose degrees of freedom come from
Satterthwaite's approximation, which falls towards S - 1 when the seed term dominates. The same
formulas, fed the estimated components, project the SE and MDE to other numbers of posts and seeds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["Components", "complete_rows", "decompose", "var_of_mean", "satterthwaite_df", "t_factor",
           "interval", "project", "reaching", "tost"]


@dataclass(frozen=True)
class Components:
    """Method-of-moments variance components of a posts x seeds matrix, and its mean squares."""

    post: float
    seed: float
    residual: float
    posts: int
    seeds: int
    mean: float
    ms_post: float
    ms_seed: float
    ms_res: float

    def as_dict(self) -> dict[str, float]:
        return {"post": self.post, "seed": self.seed, "residual": self.residual}


def complete_rows(values: np.ndarray) -> np.ndarray:
    """The rows (posts) of a posts x seeds matrix with a value for every seed: the crossed
    decomposition needs a complete table, and dropping a post keeps the pairing of the others."""
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    return x[np.isfinite(x).all(axis=1)]


def decompose(values: np.ndarray) -> Components:
    """Post, seed and residual (post x seed, with sampling noise) variance components of a
    posts x seeds matrix by the two-way ANOVA method of moments, each clipped at 0. A component
    that one post or one seed cannot show is NaN (e.g. ``seed`` with a single seed).

    >>> c = decompose(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    >>> round(c.post, 3), round(c.seed, 3), round(c.residual, 3)
    (4.0, 0.5, 0.0)
    """
    x = complete_rows(values)
    p, s = x.shape
    mu = float(x.mean()) if x.size else float("nan")
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    ms_p = s * float(np.sum((rows - mu) ** 2)) / (p - 1) if p > 1 else float("nan")
    ms_s = p * float(np.sum((cols - mu) ** 2)) / (s - 1) if s > 1 else float("nan")
    resid = x - rows[:, None] - cols[None, :] + mu
    if p > 1 and s > 1:
        ms_r = float(np.sum(resid ** 2)) / ((p - 1) * (s - 1))
    elif p > 1:  # one seed: post and residual are confounded; all of it is called residual
        ms_r, ms_p = ms_p, float("nan")
    else:
        ms_r = float("nan")
    post = max((ms_p - ms_r) / s, 0.0) if np.isfinite(ms_p) else float("nan")
    seed = max((ms_s - ms_r) / p, 0.0) if np.isfinite(ms_s) and np.isfinite(ms_r) else float("nan")
    return Components(post, seed, ms_r, p, s, mu, ms_p, ms_s, ms_r)


def _terms(c: Components, posts: int, seeds: int) -> list[tuple[float, float]]:
    # Var(mean) as a signed sum of (expected) mean squares / (P S), each with its degrees of freedom,
    # at a design of `posts` x `seeds`. A component clipped at 0 drops out: e.g. with no post term,
    # Var(mean) = MS_seed / (P S), which is estimated from the seeds' spread alone (df = S - 1).
    n = posts * seeds
    ms_p, ms_s, ms_r = c.residual + seeds * c.post, c.residual + posts * c.seed, c.residual
    df_p, df_s, df_r = posts - 1, seeds - 1, (posts - 1) * (seeds - 1)
    if c.post > 0 and c.seed > 0:
        return [(ms_p / n, df_p), (ms_s / n, df_s), (-ms_r / n, df_r)]
    if c.seed > 0:
        return [(ms_s / n, df_s)]
    if c.post > 0:
        return [(ms_p / n, df_p)]
    return [(ms_r / n, df_r)]


def var_of_mean(c: Components, posts: int | None = None, seeds: int | None = None) -> float:
    """Variance of the grand mean over ``posts`` x ``seeds`` (default: the decomposed design's)."""
    p, s = posts or c.posts, seeds or c.seeds
    return float(c.post / p + c.seed / s + c.residual / (p * s))


def satterthwaite_df(c: Components, posts: int | None = None, seeds: int | None = None) -> float:
    """Satterthwaite's degrees of freedom of :func:`var_of_mean`, written as a combination of the
    three mean squares: near ``seeds - 1`` when the seed term dominates, larger when it does not."""
    p, s = posts or c.posts, seeds or c.seeds
    if p < 2 or s < 2:
        return float("nan")
    den = sum(t * t / df for t, df in _terms(c, p, s) if df > 0)
    v = var_of_mean(c, p, s)
    return float(min(max(v * v / den, 1.0), 1e6)) if den > 0 else 1e6


def t_factor(df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """``t_{1-alpha/2, df} + t_{power, df}``: the MDE in standard errors (2.80 for large df).

    >>> round(t_factor(1e6), 2), round(t_factor(3), 2)
    (2.8, 4.16)
    """
    return float(stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df))


def interval(values: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> dict:
    """Mean of a posts x seeds matrix with its t interval (Satterthwaite df), SE, MDE and components.

    With one seed, seed-to-seed variation is not seen, and with one post post-to-post variation is
    not: the interval is then NaN (no decision can rest on it).
    """
    c = decompose(values)
    df = satterthwaite_df(c)
    se = float(np.sqrt(var_of_mean(c))) if np.isfinite(df) else float("nan")
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se if np.isfinite(df) else float("nan")
    return {"effect": c.mean, "lo": c.mean - half, "hi": c.mean + half, "se": se, "df": df,
            "mde": t_factor(df, alpha, power) * se if np.isfinite(df) else float("nan"),
            "posts": c.posts, "seeds": c.seeds, "components": c}


def project(c: Components, posts: list[int], seeds: list[int], alpha: float = 0.05,
            power: float = 0.8) -> pd.DataFrame:
    """Projected SE, degrees of freedom and MDE for every design ``posts`` x ``seeds``, from the
    components ``c`` (the model above; NaN where a component is unknown)."""
    rows = []
    for s in seeds:
        for p in posts:
            df = satterthwaite_df(c, p, s)
            se = float(np.sqrt(var_of_mean(c, p, s)))
            rows.append({"posts": p, "seeds": s, "se": se, "df": df,
                         "mde": t_factor(df, alpha, power) * se if np.isfinite(df) else float("nan")})
    return pd.DataFrame(rows)


def reaching(c: Components, target: float, posts: int, max_seeds: int = 64) -> int | None:
    """The fewest seeds (>= 2) at which ``posts`` posts reach an MDE <= ``target``, or None."""
    for s in range(2, max_seeds + 1):
        df = satterthwaite_df(c, posts, s)
        if np.isfinite(df) and t_factor(df) * np.sqrt(var_of_mean(c, posts, s)) <= target:
            return s
    return None


def tost(effect: float, se: float, df: float, margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided t tests at ``alpha``: the effect is shown to lie within ``±margin`` when its
    ``1 - 2 alpha`` interval does. Returns that interval and ``equivalent``.

    >>> tost(0.001, 0.002, 30, 0.02)["equivalent"], tost(0.001, 0.02, 30, 0.02)["equivalent"]
    (True, False)
    """
    ok = all(np.isfinite(v) for v in (effect, se, df))
    half = float(stats.t.ppf(1 - alpha, df)) * se if ok else float("nan")
    lo, hi = effect - half, effect + half
    return {"lo90": lo, "hi90": hi, "equivalent": bool(ok and -margin < lo and hi < margin)}
