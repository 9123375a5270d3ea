"""The one price table (``simlib/publish/prices.yaml``), read where generation needs it.

``simlib plan`` prints its cost from the table and :func:`simlib.steps.synthetic_responses` estimates
a run's cost from it, so the two cannot disagree. The file stays beside the plan that documents it;
only its reader lives here, low enough for the pipeline steps to use.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

__all__ = ["PRICES_FILE", "load_table", "price", "price_per_1k"]

PRICES_FILE = Path(__file__).resolve().parent.parent / "publish" / "prices.yaml"


@lru_cache(maxsize=4)
def load_table(path: str = str(PRICES_FILE)) -> dict:
    """The price and throughput table."""
    return yaml.safe_load(Path(path).read_text())


def price(model: str, table: dict | None = None) -> dict | None:
    """``{"input", "output"}`` USD per 1M tokens: the table's entry for ``model`` or the longest
    entry it starts with (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``); None when unknown."""
    models = (table or load_table())["api"]["models"]
    hits = [k for k in models if model == k or model.startswith(k + "-")]
    return dict(models[max(hits, key=len)]) if hits else None


def price_per_1k(model: str, *, batch: bool = False, table: dict | None = None) -> dict[str, float]:
    """``price_per_1k_in``/``price_per_1k_out`` keyword arguments of :func:`simlib.generate.generate`
    (the Batch API's discount applied when ``batch``); empty for a model without a price."""
    table = table or load_table()
    p = price(model, table)
    if p is None:
        return {}
    f = table["api"]["batch_discount"] if batch else 1.0
    return {"price_per_1k_in": p["input"] / 1000 * f, "price_per_1k_out": p["output"] / 1000 * f}
