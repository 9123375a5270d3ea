"""The normalised responses table that every reader returns.

One row per (post, top-level response). Both readers (the crawler's JSON files and the
Pushshift / Arctic-Shift NDJSON dumps) go through :func:`to_frame`, so the columns and dtypes
are identical whatever the source, and the filters and the split never look at raw records.

Columns (``None``/``<NA>`` where the source lacks the field):

=======================  =========  ====================================================
post_id                  str        Reddit submission id, without the ``t3_`` prefix
subreddit                str        as Reddit spells it (``AITAH``, ``AskReddit``)
title, body              str        submission title and selftext (``""`` if none)
post_created_utc         int64      unix seconds
post_score               Int64      crawler: stored mod 256 (uint8 bug), do not rank by it
post_author              str|None   crawler: None (not saved)
post_distinguished       str|None   Pushshift only (``moderator``, ``admin``)
post_stickied            boolean    Pushshift only
response_id              str        comment id, without the ``t1_`` prefix
response_text            str        comment body (``""`` for "load more" stubs)
response_created_utc     int64      unix seconds
response_score           Int64      crawler: stored mod 256, see above
response_author          str|None   crawler: None (not saved)
response_distinguished   str|None   Pushshift only
response_stickied        boolean    Pushshift only
source_file              str        file the response was read from
source_line              Int64      1-based line in an NDJSON comments file, else <NA>
=======================  =========  ====================================================
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd


class DataFormatError(ValueError):
    """A data file could not be parsed. The message names the file (and line, for NDJSON)."""


class EmptyDataError(ValueError):
    """The selection leaves nothing to study (no posts after the filters, no test posts). The
    message says which step emptied it and which parameter to change."""


COLUMNS: dict[str, str] = {
    "post_id": "object",
    "subreddit": "object",
    "title": "object",
    "body": "object",
    "post_created_utc": "int64",
    "post_score": "Int64",
    "post_author": "object",
    "post_distinguished": "object",
    "post_stickied": "boolean",
    "response_id": "object",
    "response_text": "object",
    "response_created_utc": "int64",
    "response_score": "Int64",
    "response_author": "object",
    "response_distinguished": "object",
    "response_stickied": "boolean",
    "source_file": "object",
    "source_line": "Int64",
}


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Build the normalised table from row dicts (missing keys become None).

    Text columns stay plain Python ``str`` (object dtype), so rows serialise to JSON as is.
    """
    df = pd.DataFrame.from_records(list(rows), columns=list(COLUMNS))
    # Cast column by column: an empty frame must still carry the right dtypes.
    return df.astype(COLUMNS).reset_index(drop=True)
