"""The paper's setup beside a run's, read from the profile files (the summary page's table).

Every row comes from the two validated configs, so the table cannot drift from ``params/``.
"""
from __future__ import annotations

import pandas as pd

from simlib.config import Config


def _data(cfg: Config) -> str:
    subs = ", ".join(f"r/{s}" for s in cfg.subreddits)
    if cfg.dumps:
        return f"Pushshift/Arctic-Shift dumps of {subs}"
    return f"the pinned crawl of {subs}, " + (f"{cfg.n_posts} threads each" if cfg.n_posts else "every thread")


def _targets(cfg: Config) -> str:
    writer = cfg.generator if cfg.reward_synthetic_from == "generator" else cfg.reward_synthetic_from
    return f"{writer}, one target per example, {cfg.reward_targets_per_post} examples per training post"


def _recipe(cfg: Config) -> str:
    return (f"{cfg.prompts_per_step} prompts × {cfg.num_generations} rollouts a step, lr {cfg.learning_rate:.0e}, "
            f"{cfg.grpo_steps} steps, {len(cfg.grpo_seeds)} seed(s), completions ≤ {cfg.max_completion_length} tokens"
            ).replace("e-0", "e-")


ROWS = {
    "real data": _data,
    "synthetic generator": lambda c: c.generator,
    "synthetic targets of the reward chapter": _targets,
    "GRPO policy": lambda c: c.policy,
    "reward encoder (BERTScore)": lambda c: c.encoder,
    "log-prob scorer": lambda c: c.scorer,
    "judge": lambda c: c.judge,
    "GRPO recipe": _recipe,
    "sampling temperature": lambda c: f"{c.temperature:g}",
}


def table(paper: Config, run: Config) -> pd.DataFrame:
    """One row per role, a column per profile (``paper`` and the run's)."""
    return pd.DataFrame({f"{p.profile} profile": {k: f(p) for k, f in ROWS.items()} for p in (paper, run)})
