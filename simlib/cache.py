"""Content hashes, atomic writes and append-only JSONL stores.

Every expensive step in simlib writes its artefact through these helpers, so that a
re-run with the same inputs reads the artefact and a crash never leaves a half-written
file that looks complete (write to a temporary name, then rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def content_hash(obj: Any, n: int = 16) -> str:
    """Stable short hash of a JSON-serialisable object (keys sorted).

    >>> content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
    True
    """
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_hash(path: str | os.PathLike, n: int = 16) -> str:
    """sha256 of a file's bytes (first ``n`` hex digits; ``n=64`` for the full digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def tree_hash(root: Path, pattern: str = "**/*.py") -> str:
    """Hash of the bytes of every file matching ``pattern`` under ``root``."""
    return content_hash({str(p.relative_to(root)): file_hash(p) for p in sorted(root.glob(pattern))})


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


class JsonlStore:
    """Append-only JSONL file of records, each with a unique ``key``.

    A record is flushed and fsynced the moment it is appended, so a killed process loses at
    most the line it was writing; a torn last line is ignored on reading. Reading keeps the
    first record of each key, so appending a key twice never duplicates it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __iter__(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        seen: set[str] = set()
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a line torn by a kill mid-write
                if not isinstance(rec, dict) or "key" not in rec or rec["key"] in seen:
                    continue
                seen.add(rec["key"])
                yield rec

    def keys(self) -> set[str]:
        return {r["key"] for r in self}

    def append(self, records: dict | Iterable[dict]) -> None:
        if isinstance(records, dict):
            records = [records]
        lines = [json.dumps(r, ensure_ascii=False, default=str) for r in records]
        if not lines:
            return
        # Start on a fresh line if a previous writer was killed mid-line.
        prefix = ""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    prefix = "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(prefix + "\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
