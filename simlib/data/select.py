"""Which threads a run reads when ``n_posts`` caps them: one rule for every data source.

Within each subreddit, threads are ranked by the sha256 of their submission id (without the
``t3_`` prefix) and the ``max_posts`` smallest are kept; the caller returns them in time order.
The rule is the same for the pinned crawl (:func:`simlib.data.registry.sample_paths`) and for
Pushshift / Arctic-Shift dumps (:func:`simlib.data.pushshift.read_dumps`), so a thread present in
both sources is chosen by both or by neither. Why a hash and not the first or the latest threads:

- the subset spreads over the whole period, so the chronological train/val/test split still sees
  old and new threads;
- it does not depend on the order of the files or of the lines in a dump;
- it is nested: raising ``max_posts`` only adds threads, so results at a small cap are a subset
  of those at a larger one.

Selection happens *before* filtering (it picks threads to read, not posts to keep): a chosen
thread that the filters remove (a moderator post, one with fewer than ``min_responses`` replies)
is not replaced, so a run may keep fewer than ``max_posts`` posts per subreddit. The data chapter
reports both counts.

>>> sorted(select_ids(["abc", "def", "ghi"], 2)) == sorted(select_ids(["ghi", "abc", "def"], 2))
True
>>> select_ids(["abc", "def"], 1) <= select_ids(["abc", "def"], 2)
True
"""
from __future__ import annotations

import hashlib
from typing import Iterable


def selection_key(post_id: str) -> str:
    """The rank of a thread: the hex sha256 of its submission id (smallest is chosen first)."""
    return hashlib.sha256(post_id.encode()).hexdigest()


def select_ids(post_ids: Iterable[str], max_posts: int | None) -> set[str]:
    """The ids kept from one subreddit's ``post_ids``: all of them, or the ``max_posts`` of smallest key."""
    ids = set(post_ids)
    if max_posts is None:
        return ids
    if max_posts < 0:
        raise ValueError(f"max_posts must be >= 0, got {max_posts}")
    return set(sorted(ids, key=selection_key)[:max_posts])
