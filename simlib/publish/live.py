"""What a running notebook is doing, shown in the terminal and logged to ``<work_dir>/logs/``.

:class:`Watch` wraps one papermill execution: it names the kernel's progress file
(:data:`simlib.progress.ENV`), sends papermill's log of every cell and its output to
``<name>.log``, and shows the latest progress event (:func:`simlib.progress.status`) with the
time elapsed: rewritten in place on a terminal, a line a minute otherwise (CI logs). Nothing of it
enters the executed notebook, so the book never shows it.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

from simlib import progress


class Watch:
    """``with Watch(name, log_dir): pm.execute_notebook(..., log_output=True)``."""

    def __init__(self, name: str, log_dir: Path, stream=None, every: float | None = None, cells: int | None = None):
        self.name = name
        self.cells, self.cell = cells, 0
        self.log_path = Path(log_dir) / f"{name}.log"
        self.events_path = Path(log_dir) / f"{name}.progress.jsonl"
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (1.0 if self.tty else 60.0)
        self.shown = ""

    def line(self) -> str:
        elapsed = progress.clock(time.monotonic() - self.t0)
        parts = [f"cell {self.cell}/{self.cells}" if self.cells and self.cell else "",
                 progress.status(progress.read(self.events_path)), f"{elapsed} elapsed"]
        return f"[simlib] {self.name}: " + " · ".join(p for p in parts if p)

    def emit(self, record: logging.LogRecord) -> None:
        """papermill logs "Executing Cell 5----" as each cell starts: the cell being run."""
        digits = record.getMessage().removeprefix("Executing Cell ").rstrip("-")
        if digits.isdigit():
            self.cell = int(digits)

    def show(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif text != self.shown and not final:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = text

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self.show()

    def __enter__(self) -> "Watch":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.events_path.write_text("")
        self.saved_env = os.environ.get(progress.ENV)
        os.environ[progress.ENV] = str(self.events_path)  # the kernel inherits it
        self.handler = logging.FileHandler(self.log_path, mode="w", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log = logging.getLogger("papermill")
        self.saved_log = (log.level, log.propagate)
        log.setLevel(logging.INFO)
        log.propagate = False  # cell outputs go to the file, not the terminal
        log.addHandler(self.handler)
        self.cell_handler = logging.Handler()
        self.cell_handler.emit = self.emit
        log.addHandler(self.cell_handler)
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if self.tty:
            self.show(final=True)
        log = logging.getLogger("papermill")
        log.removeHandler(self.handler)
        log.removeHandler(self.cell_handler)
        self.handler.close()
        log.setLevel(self.saved_log[0])
        log.propagate = self.saved_log[1]
        if self.saved_env is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = self.saved_env
