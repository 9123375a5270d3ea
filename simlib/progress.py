"""Progress of the running notebook, for the terminal only: never in a notebook's output or the book.

The runner (:mod:`simlib.publish.runner`) names a file in ``$SIMLIB_PROGRESS`` for each notebook's
kernel; the pipeline's loops call :func:`report` with where they are (``generation`` 120 of 384, a
``GRPO`` step, ``scoring``), which appends one JSON line to it. The runner tails the file and shows
the latest step with an estimate of the time left (:func:`status`). Without the variable (tests,
papermill run by hand) :func:`report` does nothing.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "SIMLIB_PROGRESS"


def report(step: str, done: int | None = None, total: int | None = None, **detail) -> None:
    """Record that ``step`` has ``done`` of ``total`` units finished (``detail``: e.g. the model)."""
    path = os.environ.get(ENV)
    if not path:
        return
    event = {"t": time.time(), "step": step, "done": done, "total": total, **detail}
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=str) + "\n")
    except OSError:  # progress is a courtesy: it never stops a run
        pass


def read(path: str | Path) -> list[dict]:
    """Every complete event in ``path`` (a line still being written is skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def seconds_left(events: list[dict]) -> float | None:
    """Time left in the latest step, from its pace since its first event of the same total: the
    time per unit so far times the units left. None before two events or without a total."""
    if not events:
        return None
    last = events[-1]
    if not last.get("total") or last.get("done") is None:
        return None
    same = [e for e in events if e.get("step") == last["step"] and e.get("total") == last["total"]
            and {k: v for k, v in e.items() if k not in ("t", "done")} == {k: v for k, v in last.items()
                                                                        if k not in ("t", "done")}]
    first = same[0]
    units = last["done"] - (first["done"] or 0)
    if units <= 0 or last["t"] <= first["t"]:
        return None
    return (last["t"] - first["t"]) / units * max(0, last["total"] - last["done"])


def clock(seconds: float) -> str:
    """``1:05:03``, ``4:07`` or ``12 s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def status(events: list[dict]) -> str:
    """One line for the terminal: ``generation 120/384 (model x) · about 2:13 left``."""
    if not events:
        return ""
    last = events[-1]
    text = last["step"]
    if last.get("done") is not None:
        text += f" {last['done']}/{last['total']}" if last.get("total") else f" {last['done']}"
    extra = {k: v for k, v in last.items() if k not in ("t", "step", "done", "total")}
    if extra:
        text += " (" + ", ".join(f"{k} {v}" for k, v in extra.items()) + ")"
    left = seconds_left(events)
    return text + (f" · about {clock(left)} left" if left is not None else "")
