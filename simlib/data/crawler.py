"""Reader for the JianLoong/reddit-crawler thread files (one pretty JSON object per thread).

Each file holds one submission and its saved comments. The crawler only kept
``[1].data.children`` of reddit's thread JSON, so every comment is top-level, which is what
the Pushshift reader keeps too. What the files lack (see SOURCES.md): authors, reply trees,
distinguished/stickied flags; scores are stored as uint8, i.e. mod 256.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from simlib.data.schema import DataFormatError, to_frame


def subreddit_from_permalink(permalink: str) -> str:
    """``/r/AITAH/comments/abc/...`` -> ``AITAH`` (the 3rd ``/``-separated segment)."""
    parts = permalink.split("/")
    if len(parts) < 3 or parts[1] != "r" or not parts[2]:
        raise ValueError(f"not a subreddit permalink: {permalink!r}")
    return parts[2]


def _require(obj: dict, key: str, types: type | tuple[type, ...], where: str):
    if key not in obj:
        raise DataFormatError(f"{where}: missing field {key!r}")
    value = obj[key]
    # bool is an int subclass; a boolean timestamp is a format error, not 0/1.
    if not isinstance(value, types) or isinstance(value, bool):
        raise DataFormatError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def read_crawler_file(path: str | os.PathLike) -> list[dict]:
    """Rows (one per saved comment) of one thread file; raises :class:`DataFormatError` naming it."""
    path = Path(path)
    try:
        thread = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: invalid UTF-8 at byte {err.start}") from err
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    if not isinstance(thread, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(thread).__name__}")

    where = str(path)
    post_id = _require(thread, "submission_id", str, where)
    try:
        subreddit = subreddit_from_permalink(_require(thread, "permalink", str, where))
    except ValueError as err:
        raise DataFormatError(f"{where}: {err}") from err
    post = {
        "post_id": post_id,
        "subreddit": subreddit,
        "title": _require(thread, "title", str, where),
        "body": thread.get("selftext") or "",
        "post_created_utc": _require(thread, "created_utc", int, where),
        "post_score": thread.get("score"),
    }
    rows = []
    for i, c in enumerate(_require(thread, "comments", list, where)):
        cwhere = f"{path}: comments[{i}]"
        if not isinstance(c, dict):
            raise DataFormatError(f"{cwhere}: expected an object")
        if c.get("submission_id", post_id) != post_id:
            raise DataFormatError(f"{cwhere}: submission_id {c['submission_id']!r} != {post_id!r}")
        rows.append({
            **post,
            "response_id": _require(c, "comment_id", str, cwhere),
            "response_text": _require(c, "message", str, cwhere),  # "" = a "load more" stub
            "response_created_utc": _require(c, "created_utc", int, cwhere),
            "response_score": c.get("score"),
            "source_file": str(path),
        })
    return rows


def read_crawler(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Normalised table (see :mod:`simlib.data.schema`) of the given thread files, in that order.

    Every file is parsed before the table is built, so a bad file raises and nothing is
    half-loaded. A (post, comment) pair seen twice, e.g. a file given twice, keeps its first row.
    """
    rows = [row for p in paths for row in read_crawler_file(p)]
    df = to_frame(rows)
    return df.drop_duplicates(["post_id", "response_id"], keep="first").reset_index(drop=True)
