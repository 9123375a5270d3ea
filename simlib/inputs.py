"""Checks of the parameters that name something outside the run: endpoints, models, files, folders.

:class:`simlib.config.Config` calls :func:`problems` before any work, so a typo in a URL, a path that
escapes into the system, a missing dump or a bootstrap too small to trust fails at once, quoting
the value, instead of minutes into a run.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Efron & Tibshirani (1993, ch. 19): percentile intervals need about 1000 resamples for their 2.5%
# and 97.5% points to stop moving between seeds; standard errors settle with far fewer.
N_BOOT_FLOOR = 1000
# Shipped models (simlib.lm.weights.LOCAL_MODELS), named here so validation imports no model code.
SHIPPED_MODELS = ("smollm2-135m", "gemma3-270m", "minilm-l6")
# "org/name" as the Hugging Face hub spells ids; no "..", no leading "/" or ".".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w-]*(\.[\w-]+)*/[A-Za-z0-9][\w.-]*$")
# An API model name (gpt-4o-mini, o3-mini, a served alias): one word, no path.
API_NAME = re.compile(r"^[A-Za-z0-9][\w.:-]*$")
# A work_dir may not lie in the first (the operating system's own) nor be one of the second.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")
SYSTEM_DIRS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp", "/var")
# What a run writes at the top of its work_dir (Config.path's first parts, steps and notebooks).
RUN_ENTRIES = frozenset({"data", "embeddings", "eval", "export", "figures", "generations.jsonl", "grpo",
                         "hidden", "judge", "logprob", "logs", "own", "verdicts.json"})
MARKER = ".simlib-run"  # written by Config.path: this folder is a simlib run's


def url_problem(name: str, url: str) -> str | None:
    if not url:
        return None
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.netloc:
        return f"{name} must be an http(s) URL like https://api.openai.com/v1, got {url!r}"
    return None


def model_problem(name: str, model: str, api: bool = False) -> str | None:
    """A shipped model, a hub id, an existing local model folder (holding config.json), or, for a
    model served over an API (``api``), a bare model name."""
    if model in SHIPPED_MODELS:
        return None
    path = Path(model).expanduser()
    if ".." in path.parts:
        return f"{name} must not climb out of its folder with '..', got {model!r}"
    if path.is_dir():
        return None if (path / "config.json").is_file() else \
            f"{name} names the folder {model!r}, which holds no model (no config.json)"
    if HUB_ID.match(model) or (api and API_NAME.match(model)):
        return None
    return (f"{name} must be a shipped model ({', '.join(SHIPPED_MODELS)}), a hub id like 'Qwen/Qwen3-8B' "
            f"or an existing model folder, got {model!r}")


def file_problem(name: str, path: str) -> str | None:
    p = Path(path).expanduser()
    if not p.is_file():
        return f"{name} names {path!r}, which is not an existing file"
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"{name} names {path!r}, which cannot be read ({exc.strerror})"
    return None


def work_dir_problem(work_dir: str, repo_root: Path) -> str | None:
    """A system folder, or an existing folder holding something other than a simlib run, is refused:
    a run writes and may later clean its work_dir."""
    p = Path(work_dir).expanduser()
    p = (p if p.is_absolute() else repo_root / p).resolve()
    if str(p) in SYSTEM_DIRS or any(p.is_relative_to(d) for d in SYSTEM_TREES) or p in (Path.home(), repo_root):
        return f"work_dir must not be a system folder or the repository itself, got {work_dir!r} ({p})"
    if p.is_file():
        return f"work_dir names a file, not a folder: {work_dir!r}"
    if not p.is_dir() or (p / MARKER).exists():
        return None
    if p.name == "runs" and p.parent == repo_root:  # the folder of the profiles' runs
        return None
    foreign = sorted(e.name for e in p.iterdir() if e.name not in RUN_ENTRIES and not e.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        return (f"work_dir {work_dir!r} holds things a simlib run does not write ({shown}); "
                f"name an empty or new folder, or a previous run's")
    return None


def problems(cfg: Any, repo_root: Path) -> list[str]:
    """Every problem of ``cfg``'s outward-facing values, as messages quoting the value."""
    found = [url_problem("api_base_url", cfg.api_base_url),
             work_dir_problem(cfg.work_dir, repo_root)]
    if cfg.n_boot < N_BOOT_FLOOR:
        found.append(f"n_boot must be >= {N_BOOT_FLOOR} (fewer resamples leave the ends of a 95% percentile "
                     f"interval unstable), got {cfg.n_boot!r}")
    found.append(model_problem("generator", cfg.generator, api=bool(cfg.api_base_url)))
    for role in ("policy", "scorer", "encoder", "judge"):
        found.append(model_problem(role, getattr(cfg, role)))
    if cfg.reward_synthetic_from != "generator":
        found.append(model_problem("reward_synthetic_from", cfg.reward_synthetic_from))
    for pair in cfg.dumps:
        if isinstance(pair, (list, tuple)):
            found += [file_problem("dumps", str(f)) for f in pair]
    return [m for m in found if m]
