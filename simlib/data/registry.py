"""The pinned Reddit sample: where each file comes from and how it is checked.

The sample is the JianLoong/reddit-crawler repository at a fixed commit. Every file is listed
with its sha256 in ``crawler_registry.txt`` (pooch's registry format, committed; the data
itself is never committed). A file is resolved in this order:

1. the data directory, ``data_dir`` or else the ``SIMLIB_DATA_DIR`` environment variable, laid out
   as ``<data_dir>/reddit/raw/JianLoong__reddit-crawler/docs/api/<sub>/<id>.json``. A file found
   there is hashed and used in place (never copied); a wrong hash is an error, not a re-download,
   because a tampered or truncated local copy is something the user must know about;
2. otherwise pooch downloads it from GitHub into ``cache_dir`` (default ``pooch.os_cache("simlib")``)
   and checks the same hash. Offline (``offline=True``, or ``SIMLIB_OFFLINE`` / ``HF_HUB_OFFLINE``
   set) nothing is downloaded and a missing file is an error naming the file and the data dir.

Regenerate the registry from a local copy with ``python -m simlib.data.registry [DATA_DIR]``.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Sequence

import pooch

from simlib.cache import atomic_write_text, file_hash
from simlib.data.select import select_ids

COMMIT = "281d615f814818047328b52a0ae8c36acbd08373"
BASE_URL = f"https://raw.githubusercontent.com/JianLoong/reddit-crawler/{COMMIT}/"
REGISTRY_FILE = Path(__file__).with_name("crawler_registry.txt")
# Where the crawler's repository sits inside a data directory.
CRAWLER_SUBDIR = Path("reddit") / "raw" / "JianLoong__reddit-crawler"
DATA_DIR_ENV = "SIMLIB_DATA_DIR"
# Model-hub variables (HF_HUB_OFFLINE) do not apply: the pinned sample may always be downloaded.
OFFLINE_ENVS = ("SIMLIB_OFFLINE",)


class DataNotFoundError(FileNotFoundError):
    """A sample file is neither in the data directory nor downloadable."""


class DataHashError(ValueError):
    """A sample file's sha256 differs from the registry."""


# ---------------------------------------------------------------------------------------------
# settings


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data directory: the argument, else ``$SIMLIB_DATA_DIR`` (relative to the cwd), else None."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    return None if data_dir is None else Path(data_dir).expanduser()


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else true when ``SIMLIB_OFFLINE`` is set (not 0/false)."""
    if offline is not None:
        return offline
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no") for k in OFFLINE_ENVS)


# ---------------------------------------------------------------------------------------------
# the registry file


def load_registry(path: str | os.PathLike = REGISTRY_FILE) -> dict[str, str]:
    """``{relative path: "sha256:<hex>"}`` in file order (chronological within each subreddit)."""
    reg: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("sha256:"):
            raise ValueError(f"{path}:{lineno}: expected '<path> sha256:<hex>', got {line!r}")
        reg[parts[0]] = parts[1]
    return reg


def build_registry(crawler_root: str | os.PathLike) -> str:
    """Registry text for every file in ``<crawler_root>/MANIFEST.tsv``, hashed from the files.

    Lines are sorted by (subreddit folder, created_utc, submission id), which is the order
    :func:`fetch_sample` returns, so the registry alone fixes the order without the manifest.
    """
    root = Path(crawler_root)
    with open(root / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    rows.sort(key=lambda r: (r["subreddit_dir"], int(r["created_utc"]), r["submission_id"]))
    lines = [
        f"# JianLoong/reddit-crawler @ {COMMIT}",
        f"# base url: {BASE_URL}",
        "# one '<path> sha256:<hex>' per file, sorted by subreddit folder, created_utc, submission id.",
        "# Regenerate: python -m simlib.data.registry [DATA_DIR]",
    ]
    for r in rows:
        lines.append(f"{r['path']} sha256:{file_hash(root / r['path'], n=64)}")
    return "\n".join(lines) + "\n"


def write_registry(crawler_root: str | os.PathLike, out: str | os.PathLike = REGISTRY_FILE) -> Path:
    """Write :func:`build_registry` to ``out`` atomically."""
    return atomic_write_text(out, build_registry(crawler_root))


# ---------------------------------------------------------------------------------------------
# fetching


def _check_hash(path: Path, known: str) -> None:
    actual = "sha256:" + file_hash(path, n=64)
    if actual != known:
        raise DataHashError(
            f"{path}: sha256 mismatch (registry {known}, file {actual}); the local copy is "
            "modified or truncated. Restore it, or unset the data dir to download a fresh copy."
        )


def fetch_file(
    relpath: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    registry: dict[str, str] | None = None,
) -> Path:
    """Local path of one registered file (e.g. ``docs/api/aitah/m6n71o.json``), verified by sha256."""
    registry = load_registry() if registry is None else registry
    if relpath not in registry:
        raise KeyError(f"{relpath} is not in the registry {REGISTRY_FILE.name}")
    known = registry[relpath]

    root = resolve_data_dir(data_dir)
    if root is not None:
        local = root / CRAWLER_SUBDIR / relpath
        if local.is_file():
            _check_hash(local, known)
            return local

    where = (
        f"data dir {root} (from {'the data_dir argument' if data_dir is not None else '$' + DATA_DIR_ENV})"
        if root is not None
        else f"no data dir (set ${DATA_DIR_ENV}, e.g. to ../shared/data)"
    )
    if is_offline(offline):
        why = "offline=True" if offline else f"${OFFLINE_ENVS[0]} is set"
        raise DataNotFoundError(
            f"{relpath}: not found locally ({where}, expected under {CRAWLER_SUBDIR}) "
            f"and offline mode ({why}) forbids downloading it"
        )
    pup = pooch.create(
        path=cache_dir if cache_dir is not None else pooch.os_cache("simlib"),
        base_url=BASE_URL,
        registry={relpath: known},
    )
    try:
        return Path(pup.fetch(relpath))
    except ValueError as err:  # pooch's hash check of the downloaded bytes
        raise DataHashError(f"{relpath}: downloaded file fails its sha256 check: {err}") from err
    except Exception as err:  # network errors come from requests; name the file, not just the URL
        raise DataNotFoundError(
            f"{relpath}: not found locally ({where}) and download from {BASE_URL}{relpath} "
            f"failed: {type(err).__name__}: {err}"
        ) from err


def sample_paths(
    subreddits: Sequence[str] = ("aitah",),
    max_posts: int | None = None,
    registry: dict[str, str] | None = None,
) -> list[str]:
    """Registered relative paths for ``subreddits`` (folder names, case-insensitive), in order.

    Order: per subreddit in the order given, chronological (created_utc, then id). With
    ``max_posts``, at most that many threads *per subreddit*: the ones whose sha256(submission id)
    is smallest, i.e. a fixed pseudo-random subset, nested as ``max_posts`` grows, then
    returned chronologically (the rule of :mod:`simlib.data.select`, shared with the dumps).
    Selection happens before filtering, so a selected mod post is removed later.
    """
    registry = load_registry() if registry is None else registry
    by_sub: dict[str, list[str]] = {}
    for rel in registry:  # registry order is chronological within a subreddit
        by_sub.setdefault(rel.split("/")[2], []).append(rel)
    if isinstance(subreddits, str):
        subreddits = (subreddits,)
    out: list[str] = []
    for sub in subreddits:
        paths = by_sub.get(sub.lower())
        if paths is None:
            raise ValueError(f"unknown subreddit {sub!r}; the registry has {sorted(by_sub)}")
        if max_posts is not None:
            keep = select_ids((Path(p).stem for p in paths), max_posts)  # file stem = submission id
            paths = [p for p in paths if Path(p).stem in keep]
        out.extend(paths)
    return out


def fetch_sample(
    subreddits: Sequence[str] = ("aitah",),
    data_dir: str | os.PathLike | None = None,
    max_posts: int | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> list[Path]:
    """Local, hash-verified paths of the sample's thread files; see :func:`sample_paths` for order."""
    registry = load_registry()
    return [
        fetch_file(rel, data_dir=data_dir, cache_dir=cache_dir, offline=offline, registry=registry)
        for rel in sample_paths(subreddits, max_posts, registry)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Regenerate simlib/data/crawler_registry.txt from a local copy.")
    ap.add_argument("data_dir", nargs="?", help=f"data directory (default ${DATA_DIR_ENV})")
    ap.add_argument("--out", default=str(REGISTRY_FILE))
    args = ap.parse_args(argv)
    root = resolve_data_dir(args.data_dir)
    if root is None:
        ap.error(f"give DATA_DIR or set ${DATA_DIR_ENV}")
    out = write_registry(root / CRAWLER_SUBDIR, args.out)
    print(f"wrote {out} ({len(load_registry(out))} files)")


if __name__ == "__main__":
    main()
