"""Reader for Pushshift / Arctic-Shift dumps: one NDJSON submissions file + one NDJSON comments file.

Files may be plain or zstandard-compressed (``.zst``). They are streamed line by line as bytes
and each line is decoded on its own, so memory stays flat on multi-GB dumps and an invalid
UTF-8 byte or a bad JSON line is reported with its exact 1-based line number.

Only **top-level** comments are kept (``parent_id == link_id``), to match the crawler sample,
which holds nothing else; replies are counted and dropped. Comments of submissions that are not
in the submissions file are dropped too. Submissions are held in memory (they are few next to
comments); comments are never all held, only the kept rows.

Runs read dumps through :func:`read_dumps`, which applies ``subreddits`` and ``n_posts`` exactly
as the pinned crawl does (:mod:`simlib.data.select`); :func:`read_pushshift` reads one pair whole.
"""
from __future__ import annotations

import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from collections import Counter
from typing import IO, Any, Iterable, Iterator, Sequence

import pandas as pd
import zstandard

from simlib.data.schema import DataFormatError, to_frame
from simlib.data.select import select_ids

# Arctic-Shift (and recent Pushshift) dumps are compressed with --long=31 windows.
ZSTD_MAX_WINDOW = 2**31


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) zstandard file that fail on a truncated file.

    ``ZstdDecompressor.stream_reader`` ends quietly when the file stops inside a frame, so a
    truncated dump would load only its first part (or nothing); here the end of the file inside a
    frame, or an empty file, raises :class:`zstandard.ZstdError`.
    """

    def __init__(self, raw: IO[bytes], dctx: zstandard.ZstdDecompressor, chunk: int = 1 << 16):
        self._raw, self._dctx, self._chunk = raw, dctx, chunk
        self._dobj = dctx.decompressobj()
        self._in_frame = False  # bytes of the current frame fed, its end not seen yet
        self._pending = b""  # input after the end of a frame (the start of the next one)
        self._out = memoryview(b"")
        self._seen_input = False
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._out):
            if self._done:
                return 0
            data, self._pending = self._pending or self._raw.read(self._chunk), b""
            if not data:
                self._done = True
                if self._in_frame or not self._seen_input:
                    raise zstandard.ZstdError("unexpected end of file: the zstandard stream is truncated"
                                              if self._seen_input else "empty file: not a zstandard stream")
                return 0
            self._seen_input = self._in_frame = True
            self._out = memoryview(self._dobj.decompress(data))
            if self._dobj.eof:
                self._pending = self._dobj.unused_data
                self._dobj = self._dctx.decompressobj()
                self._in_frame = False
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


@contextmanager
def _open_lines(path: Path) -> Iterator[IO[bytes]]:
    """A binary, line-iterable stream over ``path``, decompressing ``.zst`` on the fly."""
    with open(path, "rb") as raw:
        if path.suffix == ".zst":
            dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
            with io.BufferedReader(_ZstdFrames(raw, dctx), buffer_size=1 << 20) as buffered:
                yield buffered
        else:
            yield raw


def iter_ndjson(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(1-based line number, record)`` for each non-blank line of an NDJSON file.

    Raises :class:`DataFormatError` naming the file and line for invalid UTF-8, invalid JSON,
    a line that is not a JSON object, or a corrupt zstandard stream.
    """
    path = Path(path)
    lineno = 0
    try:
        with _open_lines(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataFormatError(f"{path}:{lineno}: invalid UTF-8 at byte {err.start} of the line") from err
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFormatError(f"{path}:{lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
                if not isinstance(rec, dict):
                    raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                yield lineno, rec
    except zstandard.ZstdError as err:
        raise DataFormatError(f"{path}:{lineno + 1}: corrupt zstandard stream: {err}") from err


def _field(rec: dict, key: str, where: str) -> Any:
    if rec.get(key) is None:
        raise DataFormatError(f"{where}: missing field {key!r}")
    return rec[key]


def _as_int(value: Any, key: str, where: str) -> int:
    # Old Pushshift dumps store created_utc as a string, some as a float.
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(float(value)) if isinstance(value, (str, float)) else int(value)
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"{where}: field {key!r} is not a number: {value!r}") from err


def _opt_int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None  # a non-numeric score is not worth failing a whole dump for


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _strip_prefix(thing_id: str) -> str:
    return thing_id.split("_", 1)[1] if thing_id[:3] in ("t1_", "t3_") else thing_id


def read_submissions(path: str | os.PathLike, subreddits: Iterable[str] | None = None,
                     held: Counter | None = None) -> dict[str, dict]:
    """``{post id: post fields}`` from a submissions NDJSON file (first record of an id wins).

    ``held``, if given, counts the submission lines of *every* subreddit in the file (as Reddit
    spells it), kept or not, so that a dump of the wrong subreddit can say what it holds.
    """
    wanted = None if subreddits is None else {s.lower() for s in subreddits}
    posts: dict[str, dict] = {}
    for lineno, rec in iter_ndjson(path):
        where = f"{path}:{lineno}"
        sub = str(_field(rec, "subreddit", where))
        if held is not None:
            held[sub] += 1
        if wanted is not None and sub.lower() not in wanted:
            continue
        pid = _strip_prefix(str(_field(rec, "id", where)))
        if pid in posts:
            continue
        posts[pid] = {
            "post_id": pid,
            "subreddit": sub,
            "title": str(_field(rec, "title", where)),
            "body": rec.get("selftext") or "",
            "post_created_utc": _as_int(_field(rec, "created_utc", where), "created_utc", where),
            "post_score": _opt_int(rec.get("score")),
            "post_author": rec.get("author"),
            "post_distinguished": rec.get("distinguished"),
            "post_stickied": _opt_bool(rec.get("stickied")),
        }
    return posts


def _read_comments(comments: str | os.PathLike, posts: dict[str, dict], stats: dict, seen: set[str]) -> list[dict]:
    """Rows of the top-level comments of ``posts`` in one comments file; counts go to ``stats``.

    ``seen`` holds the comment ids already kept (across files), so a comment is kept once.
    """
    rows: list[dict] = []
    for lineno, rec in iter_ndjson(comments):
        where = f"{comments}:{lineno}"
        stats["comments_read"] += 1
        link_id = str(_field(rec, "link_id", where))
        if str(_field(rec, "parent_id", where)) != link_id:
            stats["replies_dropped"] += 1
            continue
        post = posts.get(_strip_prefix(link_id))
        if post is None:
            stats["other_posts_dropped"] += 1
            continue
        cid = _strip_prefix(str(_field(rec, "id", where)))
        if cid in seen:
            stats["duplicates_dropped"] += 1
            continue
        seen.add(cid)
        body = rec.get("body")
        if body is None:
            raise DataFormatError(f"{where}: missing field 'body'")
        rows.append({
            **post,
            "response_id": cid,
            "response_text": str(body),
            "response_created_utc": _as_int(_field(rec, "created_utc", where), "created_utc", where),
            "response_score": _opt_int(rec.get("score")),
            "response_author": rec.get("author"),
            "response_distinguished": rec.get("distinguished"),
            "response_stickied": _opt_bool(rec.get("stickied")),
            "source_file": str(comments),
            "source_line": lineno,
        })
    return rows


def _comment_stats() -> dict:
    return {"comments_read": 0, "replies_dropped": 0, "other_posts_dropped": 0, "duplicates_dropped": 0}


def read_pushshift(
    submissions: str | os.PathLike,
    comments: str | os.PathLike,
    subreddits: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Normalised table (see :mod:`simlib.data.schema`) of the top-level comments of ``submissions``.

    ``subreddits`` (case-insensitive) restricts to those subreddits, for all-of-reddit dumps.
    Posts without any top-level comment have no row. Counts of what was read and dropped are in
    ``df.attrs["read_stats"]``. Any bad line raises before a table is returned. Runs read dumps
    through :func:`read_dumps`, which also applies ``n_posts``.
    """
    posts = read_submissions(submissions, subreddits)
    stats = {"submissions": len(posts), **_comment_stats()}
    df = to_frame(_read_comments(comments, posts, stats, set()))
    df.attrs["read_stats"] = stats
    return df


# How many subreddits the read stats list (an all-of-reddit dump holds hundreds of thousands).
HELD_LISTED = 20


class DumpSubredditError(ValueError):
    """The dumps hold no submission of a requested subreddit; the message lists what they hold."""


def _held_text(held: Counter, top: int = 10) -> str:
    if not held:
        return "no submissions at all"
    names = [f"r/{name} ({n} submissions)" for name, n in held.most_common(top)]
    more = f" and {len(held) - top} more subreddits" if len(held) > top else ""
    return ", ".join(names) + more


def read_dumps(
    pairs: Sequence[Sequence[str | os.PathLike]],
    subreddits: Sequence[str] | None = None,
    max_posts: int | None = None,
) -> pd.DataFrame:
    """Normalised table of the threads that ``subreddits`` and ``max_posts`` select in dump ``pairs``.

    ``pairs`` is a list of ``[submissions, comments]`` files. The submissions of every pair are
    pooled (a post listed twice keeps its first record), so comments may sit in another pair's
    file than their post, as with monthly dumps.

    - ``subreddits``: Reddit names, matched case-insensitively, so the crawler's folder names
      work unchanged (``aitah`` = ``AITAH``, ``askreddit`` = ``AskReddit``). Threads of other
      subreddits are skipped. A requested subreddit with no submission in any pair raises
      :class:`DumpSubredditError` naming what the dumps hold. ``None`` reads every subreddit.
    - ``max_posts``: at most this many threads per subreddit, by the rule of
      :mod:`simlib.data.select` (hash-chosen, spread over the period, before filtering), the
      same rule as the pinned crawl's ``max_posts``.

    Rows are ordered by subreddit (in the order requested), then post time and id, then comment
    file order. ``df.attrs["read_stats"]`` holds ``dumps`` (file names), ``subreddits_held``
    (submission lines of the :data:`HELD_LISTED` largest subreddits), ``subreddits_in_dumps``,
    ``submissions`` (threads of the requested subreddits), ``threads_read`` (threads selected),
    and the comment counts of :func:`read_pushshift`, where ``other_posts_dropped`` counts the
    top-level comments of every thread not read.
    """
    if isinstance(subreddits, str):
        subreddits = (subreddits,)
    held: Counter = Counter()
    posts: dict[str, dict] = {}
    for sub_file, _ in pairs:
        for pid, post in read_submissions(sub_file, subreddits, held).items():
            posts.setdefault(pid, post)
    order = ([s.lower() for s in subreddits] if subreddits is not None
             else sorted({p["subreddit"].lower() for p in posts.values()}))
    held_lower = {name.lower() for name in held}
    missing = [s for s in (subreddits or []) if s.lower() not in held_lower]
    if missing:
        files = " + ".join(Path(f).name for pair in pairs for f in pair)
        raise DumpSubredditError(
            f"the dumps ({files}) hold no submission of {', '.join('r/' + s for s in missing)} "
            f"(subreddits = {list(subreddits)}); they hold {_held_text(held)}. Set subreddits to the "
            "ones wanted (matched case-insensitively)."
        )
    by_sub: dict[str, list[str]] = {}
    for pid, post in posts.items():
        by_sub.setdefault(post["subreddit"].lower(), []).append(pid)
    chosen = {pid: posts[pid] for sub in order for pid in select_ids(by_sub.get(sub, []), max_posts)}
    stats = {"dumps": [[Path(s).name, Path(c).name] for s, c in pairs],
             "subreddits_held": dict(held.most_common(HELD_LISTED)), "subreddits_in_dumps": len(held),
             "submissions": len(posts), "threads_read": len(chosen), **_comment_stats()}
    seen: set[str] = set()
    rows = [row for _, comments in pairs for row in _read_comments(comments, chosen, stats, seen)]
    rank = {sub: i for i, sub in enumerate(order)}
    rows.sort(key=lambda r: (rank[r["subreddit"].lower()], r["post_created_utc"], r["post_id"]))  # stable
    df = to_frame(rows)
    df.attrs["read_stats"] = stats
    return df
