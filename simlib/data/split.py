"""Chronological train/val/test split by post.

Posts are sorted by ``post_created_utc`` (ties by ``post_id``); the earliest go to train and
the latest to test, so a model is always evaluated on posts newer than the ones it learnt
from, and every response of a post lands in its post's split, so no test post (and none of
its responses) is ever seen in training.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")


def split_sizes(n_posts: int, fractions: Sequence[float]) -> list[int]:
    """Posts per split: cumulative boundaries ``round(n * cumsum(fractions))``.

    Rounding the cumulative sum (not each share) makes the sizes add up to ``n_posts``
    exactly. With few posts a small fraction can round to 0 posts.
    """
    f = np.asarray(fractions, dtype=float)
    if (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {list(fractions)}")
    bounds = np.rint(np.cumsum(f) * n_posts).astype(int)
    bounds[-1] = n_posts  # guard against float error in the sum
    return np.diff(bounds, prepend=0).tolist()


def assign_splits(
    df: pd.DataFrame,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    names: Sequence[str] = SPLIT_NAMES,
    per_subreddit: bool = True,
) -> pd.DataFrame:
    """Copy of ``df`` with a ``split`` column (one value per post).

    ``per_subreddit=True`` (default) splits each subreddit on its own, so each gets the same
    fractions even when their date ranges differ (the AskReddit sample spans Jul 2023 - Jan
    2024, AITAH Oct - Dec 2023); within a subreddit the split is chronological.
    """
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} split names")
    posts = (
        df[["post_id", "subreddit", "post_created_utc"]]
        .drop_duplicates("post_id")
        .sort_values(["post_created_utc", "post_id"], kind="stable")
    )
    groups = posts.groupby("subreddit", sort=True) if per_subreddit else [(None, posts)]
    label: dict[str, str] = {}
    for _, group in groups:
        sizes = split_sizes(len(group), fractions)
        labels = np.repeat(np.asarray(names, dtype=object), sizes)
        label.update(zip(group["post_id"], labels))
    out = df.copy()
    out["split"] = out["post_id"].map(label).astype(object)
    return out


def split_summary(df: pd.DataFrame, names: Sequence[str] = SPLIT_NAMES) -> dict[str, dict]:
    """``{split: {"posts", "responses", "first_post_utc", "last_post_utc"}}`` (JSON-serialisable)."""
    summary = {}
    for name in names:
        part = df[df["split"] == name]
        summary[name] = {
            "posts": int(part["post_id"].nunique()),
            "responses": len(part),
            "first_post_utc": int(part["post_created_utc"].min()) if len(part) else None,
            "last_post_utc": int(part["post_created_utc"].max()) if len(part) else None,
        }
    return summary


def split_by_post(
    df: pd.DataFrame,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    names: Sequence[str] = SPLIT_NAMES,
    per_subreddit: bool = True,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """:func:`assign_splits` then :func:`split_summary`: ``(df with split column, summary)``."""
    out = assign_splits(df, fractions, names, per_subreddit)
    return out, split_summary(out, names)
