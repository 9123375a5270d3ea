"""The few calls a notebook makes to set itself up and to hand numbers to the book.

papermill injects any ``-p name value`` silently as a variable; ``begin`` records the names that
exist before the parameters cell so that ``setup`` can find every injected name and validate it
against the Config (an unknown name fails, listing the valid ones).
"""
from __future__ import annotations

import warnings
from typing import Any

# Executed notebooks have no widget front end; tqdm's warning about it is noise in the book.
warnings.filterwarnings("ignore", message="IProgress not found")

from simlib import config as _config
from simlib.publish import provenance

_baseline: set[str] = set()
_cfg: _config.Config | None = None


def begin(namespace: dict) -> None:
    """Call in the imports cell, before the ``parameters`` cell."""
    global _baseline
    _baseline = set(namespace)


def setup(namespace: dict) -> _config.Config:
    """Build the validated Config from the parameters cell and papermill's injected values."""
    global _cfg
    names = {n for n in namespace if n not in _baseline and not n.startswith("_")
             and n not in ("In", "Out", "get_ipython", "exit", "quit", "open")}
    values = {n: namespace[n] for n in names}
    profile = values.pop("profile", "ci")
    _cfg = _config.load(profile, values)
    if _cfg.device != "auto":  # every model this kernel loads follows the parameter (simlib.lm.hardware)
        import os

        os.environ["SIMLIB_DEVICE"] = _cfg.device
    from simlib.lm.weights import set_threads

    set_threads()
    return _cfg


def glue(name: str, value: Any, fmt: str | None = None) -> None:
    """Hand a number or text to the book (MyST-NB glue) without displaying it here.

    ``fmt`` formats the value first (``".3f"``, ``"+.2f"``), so the book shows exactly that text.
    """
    from myst_nb import glue as _glue

    if fmt is not None:
        # An undefined statistic (e.g. the entropy of no verdicts) reads as "n/a", not "nan".
        value = "n/a" if isinstance(value, float) and value != value else format(value, fmt)
    _glue(name, value, display=False)


def provenance_line(seeds: list[int] | None = None) -> str:
    if _cfg is None:
        raise RuntimeError("call simlib.publish.notebook.setup(globals()) first")
    return provenance.line(_cfg, seeds)


def interval(lo: float, hi: float, fmt: str = "+.3f") -> str:
    """``[lo, hi]`` formatted for the text; ``n/a`` when the interval is undefined (one seed)."""
    if lo != lo or hi != hi:
        return "n/a"
    return f"[{format(lo, fmt)}, {format(hi, fmt)}]"


def table(df, note: str | None = None, missing: str | None = None):
    """``df`` styled for the book by its one table format (:func:`simlib.publish.tables.styled`):
    decimals per column kind, intervals as one ``[lo, hi]`` column, missing values as a dash with
    ``missing`` (or a generic reason) in a note under the table."""
    from simlib.publish.tables import styled

    return styled(df, note=note, missing=missing)


def estimates(df, index: str, columns: str, value: str = "mean"):
    """``"estimate [lo, hi]"`` texts in a grid (:func:`simlib.publish.tables.estimate_grid`), for :func:`table`."""
    from simlib.publish.tables import estimate_grid

    return estimate_grid(df, index, columns, value)
