"""Reddit threads for training and evaluating user simulators: fetch -> read -> filter -> split.

>>> df, report = load_posts(("aitah",), min_chars=1, min_responses=10)   # doctest: +SKIP
>>> posts = posts_table(df)                                                # one row per post

``df`` has one row per (post, top-level response) with the columns of
:mod:`simlib.data.schema` plus ``split``. Pushshift / Arctic-Shift dumps go through
:func:`read_pushshift` then :func:`prepare` instead of :func:`load_posts`.
"""
from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from simlib.data.crawler import read_crawler
from simlib.data.filters import FILTER_ORDER, apply_filters, truncate_post
from simlib.data.pushshift import iter_ndjson, read_pushshift
from simlib.data.registry import DataHashError, DataNotFoundError, fetch_sample
from simlib.data.schema import COLUMNS, DataFormatError
from simlib.data.split import SPLIT_NAMES, split_by_post

__all__ = [
    "COLUMNS", "FILTER_ORDER", "SPLIT_NAMES",
    "DataFormatError", "DataHashError", "DataNotFoundError",
    "apply_filters", "fetch_sample", "iter_ndjson", "load_posts", "posts_table", "prepare",
    "read_crawler", "read_pushshift", "split_by_post", "truncate_post",
]


def prepare(
    df: pd.DataFrame,
    *,
    min_chars: int = 1,
    min_responses: int = 1,
    max_responses_per_post: int | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    per_subreddit: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Filter then split a normalised table; ``report = {"filters": [...], "split": {...}}``."""
    kept, filter_report = apply_filters(
        df,
        min_chars=min_chars,
        max_responses_per_post=max_responses_per_post,
        min_responses_per_post=min_responses,
    )
    out, split_report = split_by_post(kept, fractions, per_subreddit=per_subreddit)
    return out, {"rows_read": len(df), "posts_read": int(df["post_id"].nunique()),
                 "filters": filter_report, "split": split_report}


def load_posts(
    subreddits: Sequence[str] = ("aitah",),
    *,
    max_posts: int | None = None,
    min_chars: int = 1,
    min_responses: int = 1,
    max_responses_per_post: int | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    per_subreddit: bool = True,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The pinned crawler sample, cleaned and split: ``(responses_df, report)``.

    - ``max_posts``: at most this many threads per subreddit, a fixed hash-chosen subset picked
      before filtering (see :func:`simlib.data.registry.sample_paths`).
    - ``min_chars`` / ``min_responses`` / ``max_responses_per_post``: see :func:`apply_filters`;
      the cap keeps each post's earliest responses (created_utc, then id).
    - ``fractions``: train/val/test shares of posts, chronological (see :mod:`simlib.data.split`).
    - ``data_dir`` / ``cache_dir`` / ``offline``: where files come from (see :mod:`simlib.data.registry`).

    ``report`` holds ``files``, ``rows_read``, ``posts_read``, ``filters`` (rows and posts each
    filter removed, in order) and ``split`` (posts and responses per split).
    """
    paths = fetch_sample(subreddits, data_dir=data_dir, max_posts=max_posts, cache_dir=cache_dir, offline=offline)
    df, report = prepare(
        read_crawler(paths),
        min_chars=min_chars,
        min_responses=min_responses,
        max_responses_per_post=max_responses_per_post,
        fractions=fractions,
        per_subreddit=per_subreddit,
    )
    return df, {"files": len(paths), **report}


POST_COLUMNS = ["post_id", "subreddit", "title", "body", "post_created_utc", "post_score",
                "post_author", "post_distinguished", "post_stickied"]


def posts_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per post: its fields, ``n_responses`` and ``split`` (if present), chronological."""
    cols = POST_COLUMNS + (["split"] if "split" in df.columns else [])
    posts = df.drop_duplicates("post_id")[cols].set_index("post_id")
    posts["n_responses"] = df.groupby("post_id").size()
    return posts.reset_index().sort_values(["post_created_utc", "post_id"], kind="stable").reset_index(drop=True)
