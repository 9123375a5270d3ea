"""Reddit threads for training and evaluating user simulators: fetch -> read -> filter -> split.

>>> df, report = load_posts(("aitah",), min_chars=1, min_responses=10)   # doctest: +SKIP
>>> posts = posts_table(df)                                                # one row per post

``df`` has one row per (post, top-level response) with the columns of
:mod:`simlib.data.schema` plus ``split``. Pushshift / Arctic-Shift dumps go through
:func:`load_dumps` instead of :func:`load_posts`; both take the same parameters and select the
threads they read by the same rule (:mod:`simlib.data.select`), and :func:`describe` turns either
report into the numbers and the sentence the data chapter prints.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import pandas as pd

from simlib.data.crawler import read_crawler
from simlib.data.filters import FILTER_ORDER, apply_filters
from simlib.data.pushshift import DumpSubredditError, iter_ndjson, read_dumps, read_pushshift
from simlib.data.registry import COMMIT, DataHashError, DataNotFoundError, fetch_sample, load_registry, sample_paths
from simlib.data.schema import COLUMNS, DataFormatError, EmptyDataError
from simlib.data.split import SPLIT_NAMES, split_by_post

__all__ = [
    "COLUMNS", "FILTER_ORDER", "SPLIT_NAMES",
    "DataFormatError", "DataHashError", "DataNotFoundError", "DumpSubredditError", "EmptyDataError",
    "apply_filters", "describe", "fetch_sample", "iter_ndjson", "load_dumps", "load_posts", "posts_table",
    "prepare", "read_crawler", "read_dumps", "read_pushshift", "split_by_post",
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
    _require_posts(df, kept, filter_report, min_chars, min_responses)
    out, split_report = split_by_post(kept, fractions, per_subreddit=per_subreddit)
    _require_test_posts(split_report, fractions)
    return out, {"rows_read": len(df), "posts_read": int(df["post_id"].nunique()),
                 "subreddits": df["subreddit"].drop_duplicates().tolist(),
                 "filters": filter_report, "split": split_report}


def _require_posts(read: pd.DataFrame, kept: pd.DataFrame, filters: list, min_chars: int, min_responses: int) -> None:
    # An empty selection would surface chapters later as a KeyError on an empty frame: say here what emptied it.
    if len(kept):
        return
    if not len(read):
        raise EmptyDataError("no responses were read: the selected threads hold no top-level comments "
                             "(check subreddits and n_posts, or the dumps)")
    last = next((f["filter"] for f in filters if f["rows_left"] == 0), "the filters")
    raise EmptyDataError(f"no posts left after the filters: the {read['post_id'].nunique()} posts read lost their last "
                         f"responses at '{last}' (min_chars={min_chars}, min_responses={min_responses}); lower "
                         "min_responses or min_chars, or raise n_posts")


def _require_test_posts(split: dict, fractions: Sequence[float]) -> None:
    if split.get("test", {}).get("posts", 0):
        return
    counts = {name: part["posts"] for name, part in split.items()}
    raise EmptyDataError(f"no held-out (test) posts: the {sum(counts.values())} posts kept split {counts} "
                         f"by fractions {[round(f, 3) for f in fractions]}; raise n_posts, lower min_responses, "
                         "or lower train_frac + val_frac")


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

    ``report`` holds ``source`` (``"crawler"``), ``files`` (thread files read), ``threads_read``
    (the same), ``threads_available`` (threads of ``subreddits`` in the sample), ``max_posts``,
    ``subreddits`` (as Reddit spells them), ``rows_read``, ``posts_read``, ``filters`` (rows and
    posts each filter removed, in order) and ``split`` (posts and responses per split).
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
    available = len(sample_paths(subreddits, None, load_registry()))
    return df, {"source": "crawler", "files": len(paths), "threads_read": len(paths),
                "threads_available": available, "max_posts": max_posts, **report}


def load_dumps(
    pairs: Sequence[Sequence[str | os.PathLike]],
    subreddits: Sequence[str] | None = ("aitah",),
    *,
    max_posts: int | None = None,
    min_chars: int = 1,
    min_responses: int = 1,
    max_responses_per_post: int | None = None,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    per_subreddit: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Pushshift / Arctic-Shift dump ``pairs`` (``[submissions, comments]``), cleaned and split.

    The parameters mean what they mean for :func:`load_posts`: ``subreddits`` are matched
    case-insensitively against Reddit's names (``aitah`` reads r/AITAH), and ``max_posts`` keeps
    at most that many threads per subreddit, chosen by :mod:`simlib.data.select` before filtering
    (see :func:`simlib.data.pushshift.read_dumps`, which also raises when a subreddit is absent).

    ``report`` holds ``source`` (``"dumps"``), ``files`` (dump files read), ``threads_read``,
    ``threads_available`` (threads of ``subreddits`` in the dumps), ``max_posts``, the read
    counts of :func:`read_dumps` (``dumps``, ``subreddits_held``, ``comments_read``, ...) and the
    keys of :func:`prepare`.
    """
    raw = read_dumps(pairs, subreddits, max_posts)
    stats = dict(raw.attrs["read_stats"])
    df, report = prepare(
        raw,
        min_chars=min_chars,
        min_responses=min_responses,
        max_responses_per_post=max_responses_per_post,
        fractions=fractions,
        per_subreddit=per_subreddit,
    )
    return df, {"source": "dumps", "files": 2 * len(pairs), "threads_available": stats.pop("submissions"),
                "max_posts": max_posts, **stats, **report}


POST_COLUMNS = ["post_id", "subreddit", "title", "body", "post_created_utc", "post_score",
                "post_author", "post_distinguished", "post_stickied"]


def posts_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per post: its fields, ``n_responses`` and ``split`` (if present), chronological."""
    cols = POST_COLUMNS + (["split"] if "split" in df.columns else [])
    posts = df.drop_duplicates("post_id")[cols].set_index("post_id")
    posts["n_responses"] = df.groupby("post_id").size()
    return posts.reset_index().sort_values(["post_created_utc", "post_id"], kind="stable").reset_index(drop=True)


def _names(subreddits: Sequence[str]) -> str:
    names = [f"r/{s}" for s in subreddits]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _source_sentence(report: dict) -> str:
    """One sentence, true for this run's source, saying where the threads came from."""
    n, total = report["threads_read"], report["threads_available"]
    subs = _names(report["subreddits"]) if report.get("subreddits") else "the requested subreddits"
    if report["source"] == "dumps":
        files = "; ".join(" + ".join(pair) for pair in report["dumps"])
        where = (f"the Pushshift/Arctic-Shift dump{'s' if len(report['dumps']) > 1 else ''} {files} "
                 f"({report['comments_read']:,} comment lines read, {report['replies_dropped']:,} of them "
                 "replies, which are dropped)")
    else:
        where = (f"a public crawl of Reddit front-page threads (JianLoong/reddit-crawler at commit {COMMIT[:8]}), "
                 "each file checked against its sha256 in a pinned registry")
    how = (f"a fixed, hash-chosen subset spread over the period, at most {report['max_posts']:,} per subreddit "
           "(n_posts)" if n < total else "all of them")
    return f"This run read {n:,} of the {total:,} threads of {subs} in {where}: {how}."


def describe(report: dict, df: pd.DataFrame) -> dict:
    """The values the data chapter glues, for either source (``report`` of :func:`load_posts` or
    :func:`load_dumps`, ``df`` the kept responses): ``data_source`` (a sentence), ``n_threads``,
    ``rows_read``, ``n_posts``, ``n_responses``, ``median_per_post``, ``median_chars`` and ``length_span``."""
    per_post = df.groupby("post_id").size()
    return {
        "data_source": _source_sentence(report),
        "n_threads": int(report["threads_read"]),
        "rows_read": int(report["rows_read"]),
        "n_posts": int(df["post_id"].nunique()),
        "n_responses": len(df),
        "median_per_post": float(per_post.median()) if len(per_post) else float("nan"),
        "median_chars": float(df["response_text"].str.len().median()) if len(df) else float("nan"),
        "length_span": length_span(df["response_text"].fillna("").str.len()),
    }


def length_span(lengths: pd.Series) -> str:
    """How far response lengths spread, in words that stay true for any sample.

    >>> length_span(pd.Series([3, 40, 1180])), length_span(pd.Series([7, 485]))
    ('more than two orders of magnitude', 'a factor of 69 from the shortest to the longest')
    """
    lengths = lengths[lengths > 0]
    if lengths.empty:
        return "nothing: no response has any text"
    ratio = float(lengths.max() / lengths.min())
    orders = int(math.floor(math.log10(ratio))) if ratio >= 100 else 0
    if orders:
        word = {2: "two", 3: "three", 4: "four"}.get(orders, str(orders))
        return f"more than {word} orders of magnitude"
    return f"a factor of {ratio:.0f} from the shortest to the longest"
