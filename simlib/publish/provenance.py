"""Where a result came from: profile, parameter hash, data hash, commit, date, seeds."""
from __future__ import annotations

import datetime as _dt
import subprocess
from functools import lru_cache

from simlib.cache import content_hash, file_hash
from simlib.config import REPO_ROOT, Config


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the working tree, with ``+dirty`` when it has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hash() -> str:
    """Hash of the pinned data registry (sha256 of every file the sample may contain)."""
    reg = REPO_ROOT / "simlib" / "data" / "crawler_registry.txt"
    return file_hash(reg, 12) if reg.exists() else "none"


def record(cfg: Config, seeds: list[int] | None = None) -> dict:
    """The provenance of a run, as a small dict (also stored beside artefacts)."""
    return {
        "profile": cfg.profile,
        "params": content_hash(cfg.to_dict(), 12),
        "data": data_hash(),
        "commit": git_commit(),
        "date": _dt.date.today().isoformat(),
        "seeds": seeds if seeds is not None else [cfg.seed],
    }


def line(cfg: Config, seeds: list[int] | None = None) -> str:
    """One-line provenance printed under each figure."""
    r = record(cfg, seeds)
    return (f"profile {r['profile']} · params {r['params']} · data {r['data']} · "
            f"commit {r['commit']} · run {r['date']} · seeds {','.join(map(str, r['seeds']))}")
