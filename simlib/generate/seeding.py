"""Few-shot examples for the `seeded` style: a little real data as a seed for synthetic data.

The examples for a post are real replies to *training* posts of the same subreddit, never to the
post being answered, and never to a validation or test post, so nothing an evaluation compares
against can leak into a prompt. Each (post, sample) draws its own examples, deterministically.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable

import numpy as np
import pandas as pd

from simlib.text import truncate_post


def example_pool(real: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Subreddit → the replies that may be shown as examples (training posts only)."""
    train = real[real["split"] == "train"]
    return {sub: g[["post_id", "response_text"]].reset_index(drop=True) for sub, g in train.groupby("subreddit")}


def seeded_kwargs(real: pd.DataFrame, k: int = 3, seed: int = 0, max_chars: int = 400) -> Callable[[Any, int], dict]:
    """A ``(post, sample_index) -> {"examples": (...)}`` function for :func:`simlib.generate.make_requests`."""
    pools = example_pool(real)

    def kwargs(post: Any, sample_index: int) -> dict:
        pid = str(post["post_id"])
        pool = pools.get(post["subreddit"], pd.DataFrame(columns=["post_id", "response_text"]))
        pool = pool[pool["post_id"] != pid]
        if len(pool) < k:
            raise ValueError(f"only {len(pool)} training replies in r/{post['subreddit']} to seed post {pid}")
        rng = np.random.default_rng([seed, sample_index, zlib.crc32(pid.encode())])
        picks = rng.choice(len(pool), size=k, replace=False)
        return {"examples": tuple(truncate_post(pool["response_text"].iloc[i], max_chars) for i in sorted(picks))}

    return kwargs
