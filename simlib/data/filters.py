"""Cleaning filters for the normalised responses table, and the long-post truncation policy.

Each filter is a named function ``f(df, ...) -> mask`` where ``mask`` is True for the rows to
**remove**. :func:`apply_filters` runs them in the fixed order of :data:`FILTER_ORDER`, each on
what the previous ones left, and reports how many rows and posts each one removed. Post-level
filters remove every response of a post.

Order (why): cheap, unambiguous junk first (stubs, deleted, bots), then whole posts that are not
user content (mod posts, deleted posts), then the tunable length threshold, then the per-post
cap, and last the minimum number of responses, so it counts what will actually be used.
"""
from __future__ import annotations


import re

import pandas as pd

# Authors whose comments are never user responses (compared lower-cased).
BOT_AUTHORS = frozenset({"automoderator"})
# Reddit bots sign with "I am a bot, and this action was performed automatically."
BOT_PHRASES = ("i am a bot", "performed automatically")
DELETED_MARKERS = frozenset({"[deleted]", "[removed]"})
# Pushshift's title for a submission its author deleted.
DELETED_POST_TITLES = frozenset({"[deleted by user]"})
# Known moderator posts in the pinned sample: the pinned "r/AITAH Lounge" chat post (2021).
MOD_POST_IDS = frozenset({"m6n71o"})
# Reddit names its auto-created chat posts "r/<subreddit> Lounge".
LOUNGE_TITLE = re.compile(r"^r/\w+\s+lounge$", re.IGNORECASE)
MOD_DISTINGUISHED = frozenset({"moderator", "admin"})


def _text(series: pd.Series) -> pd.Series:
    return series.fillna("").astype(str)


def _flag(series: pd.Series) -> pd.Series:
    return series.astype("boolean").fillna(False).astype(bool)


def _lower_in(series: pd.Series, values: frozenset[str]) -> pd.Series:
    return series.map(lambda v: isinstance(v, str) and v.lower() in values).astype(bool)


def load_more_stubs(df: pd.DataFrame) -> pd.Series:
    """Empty or whitespace-only responses: the crawler's saved "load more comments" stubs."""
    return _text(df["response_text"]).str.strip() == ""


def deleted(df: pd.DataFrame) -> pd.Series:
    """Responses whose text is exactly ``[deleted]`` or ``[removed]``."""
    return _text(df["response_text"]).str.strip().isin(DELETED_MARKERS)


def bots(df: pd.DataFrame) -> pd.Series:
    """Bot and moderator comments.

    Author AutoModerator; text containing "I am a bot" or "performed automatically" (any case;
    e.g. AskReddit's "[Serious] Tag Notice"); and, where the dump has the fields, comments
    that are stickied or distinguished as moderator/admin (notices, not user replies).
    """
    text = _text(df["response_text"]).str.lower()
    by_text = pd.Series(False, index=df.index)
    for phrase in BOT_PHRASES:
        by_text |= text.str.contains(phrase, regex=False)
    return (
        _lower_in(df["response_author"], BOT_AUTHORS)
        | by_text
        | _flag(df["response_stickied"])
        | _lower_in(df["response_distinguished"], MOD_DISTINGUISHED)
    )


def mod_posts(df: pd.DataFrame) -> pd.Series:
    """All responses of moderator posts.

    Known ids (:data:`MOD_POST_IDS`, the AITAH Lounge ``m6n71o``), titles ``r/<sub> Lounge``,
    posts by AutoModerator and, where the dump has the fields, stickied or mod/admin-distinguished posts.
    """
    return (
        df["post_id"].isin(MOD_POST_IDS)
        | _text(df["title"]).str.strip().str.match(LOUNGE_TITLE)
        | _lower_in(df["post_author"], BOT_AUTHORS)
        | _flag(df["post_stickied"])
        | _lower_in(df["post_distinguished"], MOD_DISTINGUISHED)
    )


def deleted_posts(df: pd.DataFrame) -> pd.Series:
    """All responses of posts whose body is ``[deleted]``/``[removed]``, titled ``[deleted by user]``,
    or whose title and body are both empty.

    The responses answer a text that is gone, so a simulator cannot be conditioned on it.
    An empty body is kept: AskReddit questions live in the title.
    """
    title, body = _text(df["title"]).str.strip(), _text(df["body"]).str.strip()
    return body.isin(DELETED_MARKERS) | title.isin(DELETED_POST_TITLES) | ((title == "") & (body == ""))


def too_short(df: pd.DataFrame, min_chars: int) -> pd.Series:
    """Responses shorter than ``min_chars`` characters (Python ``len`` after stripping whitespace).

    Keep the threshold low for AITAH: "NTA" (3 characters) is a complete stance verdict.
    """
    return _text(df["response_text"]).str.strip().str.len() < min_chars


def over_cap(df: pd.DataFrame, max_responses_per_post: int | None) -> pd.Series:
    """Responses beyond the first ``max_responses_per_post`` of their post.

    "First" = earliest ``response_created_utc``, ties by ``response_id``: deterministic, and
    on Reddit the earliest top-level replies are the most seen ones. ``None`` keeps all.
    """
    if max_responses_per_post is None:
        return pd.Series(False, index=df.index)
    order = df.sort_values(["post_id", "response_created_utc", "response_id"], kind="stable")
    rank = order.groupby("post_id", sort=False).cumcount()
    return (rank >= max_responses_per_post).reindex(df.index)


def too_few_responses(df: pd.DataFrame, min_responses_per_post: int) -> pd.Series:
    """All responses of posts left with fewer than ``min_responses_per_post`` responses."""
    counts = df.groupby("post_id")["response_id"].transform("size")
    return counts < min_responses_per_post


FILTER_ORDER = (
    "load_more_stubs",
    "deleted",
    "bots",
    "mod_posts",
    "deleted_posts",
    "min_chars",
    "max_responses_per_post",
    "min_responses_per_post",
)


def apply_filters(
    df: pd.DataFrame,
    *,
    min_chars: int = 1,
    max_responses_per_post: int | None = None,
    min_responses_per_post: int = 1,
) -> tuple[pd.DataFrame, list[dict]]:
    """Run every filter in :data:`FILTER_ORDER`; return the kept rows and the report.

    The report is a list, in order, of ``{"filter", "rows_removed", "posts_removed",
    "rows_left", "posts_left"}`` (``pd.DataFrame(report)`` to display). ``posts_removed``
    counts posts that lost their last row at that step. The defaults only clean: they drop no
    non-empty user response. Row order is preserved.
    """
    if min_chars < 0 or min_responses_per_post < 0:
        raise ValueError("min_chars and min_responses_per_post must be >= 0")
    if max_responses_per_post is not None and max_responses_per_post < min_responses_per_post:
        raise ValueError(
            f"max_responses_per_post={max_responses_per_post} < min_responses_per_post="
            f"{min_responses_per_post} would remove every post"
        )
    steps = {
        "load_more_stubs": load_more_stubs,
        "deleted": deleted,
        "bots": bots,
        "mod_posts": mod_posts,
        "deleted_posts": deleted_posts,
        "min_chars": lambda d: too_short(d, min_chars),
        "max_responses_per_post": lambda d: over_cap(d, max_responses_per_post),
        "min_responses_per_post": lambda d: too_few_responses(d, min_responses_per_post),
    }
    report = []
    for name in FILTER_ORDER:
        posts_before = df["post_id"].nunique()
        drop = steps[name](df).astype(bool)
        df = df[~drop]
        posts_left = df["post_id"].nunique()
        report.append({
            "filter": name,
            "rows_removed": int(drop.sum()),
            "posts_removed": int(posts_before - posts_left),
            "rows_left": len(df),
            "posts_left": int(posts_left),
        })
    return df.reset_index(drop=True), report
