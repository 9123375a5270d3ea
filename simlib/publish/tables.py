"""The one table format of the book: every table a notebook shows goes through :func:`styled`.

Each column is formatted by its kind, with the same decimals down the column so that digits line
up: counts as integers (thin-space thousands), p-values to three decimals (``<0.001`` below),
signed changes (``delta``, ``diff``, ``effect``...) with their sign, other numbers to three
significant digits of the column's typical magnitude. A pair of interval columns (``lo``/``hi``,
``ci_lo``/``ci_hi``, ``x_lo``/``x_hi``) becomes one ``[lo, hi]`` column. A missing value shows as a
dash, and a note under the table says why.
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np
import pandas as pd

DASH = "\u2013"
THIN = "\u2009"
MISSING_NOTE = f"{DASH} : not defined for this run (too few posts, seeds or replies to compute it)"
SIGNED = re.compile(r"(^|_)(delta|diff|effect|change|contrast|gain|shift|slope|coef)($|_)|minus|\bvs\b", re.I)
PVALUE = re.compile(r"(^|_)p(_value|val)?($|_)|^p[ -]", re.I)
INTERVALS = (("lo", "hi"), ("ci_lo", "ci_hi"), ("low", "high"))


def interval_pairs(columns) -> list[tuple[str, str, str]]:
    """``(lo column, hi column, name of the merged column)`` for each interval pair in ``columns``."""
    cols = [str(c) for c in columns]
    pairs = [(lo, hi, "95% CI") for lo, hi in INTERVALS if lo in cols and hi in cols]
    for c in cols:
        if c.endswith("_lo") and c[:-3] + "_hi" in cols and c != "ci_lo":
            pairs.append((c, c[:-3] + "_hi", f"{c[:-3]} 95% CI"))
    return pairs


def decimals(values) -> int:
    """Decimals that give three significant digits to the column's median magnitude (0 to 6)."""
    v = np.abs(np.asarray([x for x in values if _is_number(x) and math.isfinite(x) and x != 0], dtype=float))
    if not v.size:
        return 2
    return int(min(6, max(0, 2 - math.floor(math.log10(float(np.median(v)))))))


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _is_missing(x) -> bool:
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and x != x)


def _index_label(v) -> str:
    if _is_missing(v):
        return DASH
    return format(v, ".4g") if isinstance(v, float) else str(v)


def column_format(name: str, values):
    """The formatter of one column, chosen by its name and values."""
    nums = [x for x in values if _is_number(x) and not _is_missing(x)]
    counts = bool(nums) and all(float(x).is_integer() for x in nums) and not SIGNED.search(name)
    sign = "+" if SIGNED.search(name) else ""
    d = decimals(nums)

    def fmt(x):
        if _is_missing(x):
            return DASH
        if isinstance(x, (bool, np.bool_)):
            return "yes" if x else "no"
        if not _is_number(x):
            return str(x)
        if not math.isfinite(x):
            return DASH if x != x else ("\u221e" if x > 0 else "-\u221e")
        if PVALUE.search(name) and 0 <= x <= 1:
            return "<0.001" if x < 0.001 else f"{x:.3f}"
        if counts or (abs(x) >= 1000 and d == 0):
            return f"{int(round(x)):,}".replace(",", THIN)
        return f"{x:{sign}.{d}f}"

    return fmt


def merge_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each interval pair replaced, in the place of its ``lo``, by one ``[lo, hi]`` text
    column formatted like its point estimate (the column before it)."""
    out = df.copy()
    for lo, hi, name in interval_pairs(df.columns):
        at = list(out.columns).index(lo)
        stem = lo[:-3] if lo.endswith("_lo") else None
        # signed like its estimate (the x of x_lo, else the column before), decimals of its own
        point = stem if stem in out.columns else str(out.columns[at - 1]) if at else lo
        fmt = column_format(point, pd.concat([df[lo], df[hi]]).tolist())
        text = [DASH if _is_missing(a) or _is_missing(b) else f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(df[lo], df[hi])]
        out = out.drop(columns=[lo, hi])
        out.insert(at, name, text)
    return out


PROSE_CHARS = 60  # longer texts are prose, not values


def styled(df, note: str | None = None, missing: str | None = None):
    """``df`` (a DataFrame or Series) styled for the book (a pandas Styler, rendered as HTML).

    ``note`` is printed under the table; ``missing`` says why values are missing (a dash shows
    them), with a generic reason when not given.
    """
    if isinstance(df, pd.Series):
        df = df.to_frame()
    shown = merge_intervals(df)
    text = shown.astype(object).copy()
    for i in range(shown.shape[1]):  # by position: duplicate or tuple column names are fine
        fmt = column_format(str(shown.columns[i]), shown.iloc[:, i].tolist())
        text.iloc[:, i] = [fmt(x) for x in shown.iloc[:, i]]
    has_missing = bool((text == DASH).to_numpy().any())
    styler = text.style.format_index(_index_label, axis=0)
    # prose cells (a rule, a sentence) wrap in a readable column instead of widening the table
    prose = [c for c in text.columns if text[c].map(lambda x: isinstance(x, str) and len(x) > PROSE_CHARS).any()]
    if prose:
        styler = styler.set_properties(subset=prose, **{"white-space": "normal", "min-width": "24em",
                                                        "text-align": "left"})
    notes = [note] if note else []
    if has_missing:
        notes.append(f"{DASH} : {missing}" if missing else MISSING_NOTE)
    if notes:
        styler = styler.set_caption(" ".join(notes))
    return styler.set_table_attributes('class="simlib-table"')


def estimate_grid(df: pd.DataFrame, index: str, columns: str, value: str = "mean", lo: str = "lo",
                  hi: str = "hi") -> pd.DataFrame:
    """A grid of ``"estimate [lo, hi]"`` texts, rows ``index`` by columns ``columns`` of a long table;
    each row has its own decimals (rows are measures on their own scales), a dash where undefined."""
    grid = df.pivot(index=index, columns=columns, values=[value, lo, hi])
    out = pd.DataFrame(index=grid.index, columns=grid[value].columns, dtype=object)
    for row in grid.index:
        fmt = column_format(str(row), grid.loc[row].tolist())
        for col in out.columns:
            v, a, b = (grid.loc[row, (k, col)] for k in (value, lo, hi))
            out.loc[row, col] = DASH if _is_missing(v) else fmt(v) + ("" if _is_missing(a) or _is_missing(b)
                                                                     else f" [{fmt(a)}, {fmt(b)}]")
    return out
