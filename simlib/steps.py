"""The pipeline's cached steps, each a function of the Config.

Every step writes its artefact under ``<work_dir>/`` keyed by a hash of exactly the inputs it
depends on (config subset, upstream artefacts, the code that computes it), so a notebook can call
the steps it needs in any order, alone under papermill or in ``simlib run``, and a step runs only
when one of its inputs changed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .cache import atomic_write_json, atomic_write_text, content_hash
from .config import REPO_ROOT, Config


def _code_hash(*parts: str) -> str:
    from .runner import tree_hash

    return content_hash([tree_hash(REPO_ROOT / "simlib" / p, "**/*.py") if (REPO_ROOT / "simlib" / p).is_dir()
                         else tree_hash(REPO_ROOT / "simlib", p) for p in parts])


def _dump_stamp(paths: list) -> list:
    # size + mtime: hashing multi-GB dumps on every call would cost more than reading them.
    return [[str(p), Path(p).stat().st_size, int(Path(p).stat().st_mtime)] for p in paths]


def real_responses(cfg: Config) -> tuple[pd.DataFrame, dict]:
    """Real posts and top-level responses, filtered and split chronologically by post (cached)."""
    from . import data

    subset = {k: getattr(cfg, k) for k in ("subreddits", "n_posts", "min_chars", "min_responses",
                                           "max_responses", "train_frac", "val_frac")}
    dumps = [list(pair) for pair in cfg.dumps]
    key = content_hash({"cfg": subset, "dumps": [_dump_stamp(p) for p in dumps],
                        "code": _code_hash("data"), "registry": (REPO_ROOT / "simlib/data/crawler_registry.txt").read_text()})
    table, meta = cfg.path("data", f"real-{key}.jsonl"), cfg.path("data", f"real-{key}.report.json")
    if table.exists() and meta.exists():
        return pd.read_json(table, lines=True, dtype={"post_id": str, "response_id": str}), json.loads(meta.read_text())

    fractions = (cfg.train_frac, cfg.val_frac, 1 - cfg.train_frac - cfg.val_frac)
    kw = dict(min_chars=cfg.min_chars, min_responses=cfg.min_responses,
              max_responses_per_post=cfg.max_responses, fractions=fractions)
    if dumps:
        frames = [data.read_pushshift(s, c) for s, c in dumps]
        df, report = data.prepare(pd.concat(frames, ignore_index=True), **kw)
    else:
        df, report = data.load_posts(cfg.subreddits, max_posts=cfg.n_posts or None,
                                     data_dir=cfg.resolved_data_dir(), **kw)
    atomic_write_text(table, df.to_json(orient="records", lines=True, force_ascii=False))
    atomic_write_json(meta, report)  # written last: its presence marks the step complete
    return df, report
