"""What every cached step shares: the code hash and precision in its key, the device and tokenizer
it loads with, and :func:`cached_artifact`, the one key -> path -> compute -> atomic save sequence."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from simlib.cache import content_hash, tree_hash
from simlib.config import REPO_ROOT, Config

__all__ = ["code_hash", "dtype_key", "device_arg", "load_tokenizer", "cached_artifact", "save_npy"]

T = TypeVar("T")


def code_hash(*parts: str) -> str:
    """Hash of simlib's code that a step's artefact depends on: files or folders under ``simlib/``."""
    return content_hash([tree_hash(REPO_ROOT / "simlib" / p, "**/*.py") if (REPO_ROOT / "simlib" / p).is_dir()
                         else tree_hash(REPO_ROOT / "simlib", p) for p in parts])


def dtype_key(cfg: Config) -> dict:
    """The numeric settings in an artefact's key: its precision, and its device where that is not the
    CPU (a GPU sums in another order), so CPU keys stay what they were and no device reads another's."""
    from simlib.lm.logprob import precision_key

    device = cfg.resolved_device()
    return {**precision_key(cfg.resolved_inference_dtype()), **({"device": device} if device != "cpu" else {})}


def device_arg(cfg: Config) -> str | None:
    """The device a model of this step loads on: None for "auto", so $SIMLIB_DEVICE still applies
    (:func:`simlib.lm.hardware.pick_device`)."""
    d = getattr(cfg, "device", "auto")
    return None if d == "auto" else d


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from simlib.lm.weights import resolve

    return AutoTokenizer.from_pretrained(resolve(name))


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary name, then a rename: a killed run never leaves a partial array."""
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def cached_artifact(path: Path, compute: Callable[[], T], load: Callable[[Path], T],
                    save: Callable[[Path, T], None]) -> T:
    """``load(path)`` when the artefact exists, else ``compute()``, saved atomically by ``save``.

    ``path`` is keyed by every input of the step (a :func:`simlib.cache.content_hash` in its name),
    so an existing file is the result of the same inputs; ``save`` writes it last, atomically.
    """
    if path.exists():
        return load(path)
    value = compute()
    save(path, value)
    return value
