"""The real posts and replies every chapter reads (the pinned crawl, or dumps)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simlib.cache import atomic_write_json, atomic_write_text, content_hash
from simlib.config import REPO_ROOT, Config
from simlib.steps.artifacts import cached_artifact, code_hash

__all__ = ["real_responses", "test_posts"]


def _dump_stamp(paths: list) -> list:
    # size + mtime: hashing multi-GB dumps on every call would cost more than reading them.
    return [[str(p), Path(p).stat().st_size, int(Path(p).stat().st_mtime)] for p in paths]


def real_responses(cfg: Config) -> tuple[pd.DataFrame, dict]:
    """Real posts and top-level responses, filtered and split chronologically by post (cached).

    The source is the pinned crawl, or the Pushshift/Arctic-Shift ``dumps`` when set; either way
    ``subreddits`` (case-insensitive) and ``n_posts`` select the threads read by one rule
    (:mod:`simlib.data.select`), so every step downstream, and any count made from this table,
    sees the same posts whatever the source.
    """
    from simlib import data

    subset = {k: getattr(cfg, k) for k in ("subreddits", "n_posts", "min_chars", "min_responses",
                                           "max_responses", "train_frac", "val_frac")}
    dumps = [list(pair) for pair in cfg.dumps]
    key = content_hash({"cfg": subset, "dumps": [_dump_stamp(p) for p in dumps],
                        "code": code_hash("data"), "registry": (REPO_ROOT / "simlib/data/crawler_registry.txt").read_text()})
    table, meta = cfg.path("data", f"real-{key}.jsonl"), cfg.path("data", f"real-{key}.report.json")

    def compute() -> tuple[pd.DataFrame, dict]:
        fractions = (cfg.train_frac, cfg.val_frac, 1 - cfg.train_frac - cfg.val_frac)
        kw = dict(min_chars=cfg.min_chars, min_responses=cfg.min_responses,
                  max_responses_per_post=cfg.max_responses, fractions=fractions)
        if dumps:
            return data.load_dumps(dumps, cfg.subreddits, max_posts=cfg.n_posts or None, **kw)
        # data_dir=None lets the registry read $SIMLIB_DATA_DIR itself, so a missing file's error
        # names the setting the user actually made (the parameter or the environment variable).
        return data.load_posts(cfg.subreddits, max_posts=cfg.n_posts or None, data_dir=cfg.data_dir or None, **kw)

    def save(_: Path, value: tuple[pd.DataFrame, dict]) -> None:
        atomic_write_text(table, value[0].to_json(orient="records", lines=True, force_ascii=False))
        atomic_write_json(meta, value[1])  # written last: its presence marks the step complete

    # the report is the artefact's marker: the table is written before it
    return cached_artifact(meta, compute, lambda _: (_read_responses(table), json.loads(meta.read_text())), save)


def _read_responses(path: Path) -> pd.DataFrame:
    """A cached responses table with the dtypes it was computed with (:mod:`simlib.data.schema`),
    so a warm run returns exactly what a cold one does (JSON alone loses the Int64 and boolean dtypes)."""
    from simlib.data.schema import COLUMNS

    df = pd.read_json(path, lines=True, dtype=False)
    if df.columns.empty:  # an empty table is written as a bare newline
        df = pd.DataFrame(columns=[*COLUMNS, "split"])
    return df.astype({c: COLUMNS.get(c, "object") for c in df.columns})


def test_posts(cfg: Config, df: pd.DataFrame) -> pd.DataFrame:
    """The posts synthetic responses are generated for: every post (train for GRPO, test for evaluation)."""
    from simlib.data import posts_table

    return posts_table(df)
