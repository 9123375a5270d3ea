"""The book's own run: per-notebook wall time and peak memory, and the cost of a no-op re-run.

``python -m benchmarks.bench_pipeline [--quick]`` prints a JSON dict; :func:`run` returns it.

Wall time and peak memory come from ``executed/.state.json``, which ``simlib run`` writes as it
executes each notebook (``seconds``, ``peak_rss_mb``; see :mod:`simlib.publish.perf`). The no-op re-run is
timed only when every notebook of the toc is executed and up to date for its recorded profile
(the same keys the runner compares) and the built book is current: then
:func:`simlib.publish.runner.execute` skips every notebook and :func:`simlib.publish.runner.build_book` skips the
build, which is exactly what a second ``simlib run`` does. Otherwise it reports "not available"
and why, and runs nothing (it never executes a notebook or rebuilds the book in place), with an
estimate: the same hashing, timed. The Python start-up and imports of the ``simlib`` command and
``make models`` (a fresh Python checking that every model is in place) are timed in subprocesses
and added: together that is a second ``make book``.

Full mode also times ``jupyter-book build`` of the executed notebooks into a temporary folder
(the last step of ``make book``, which the state file does not record).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def up_to_date(state: dict, names: list[str], out_dir: Path) -> tuple[bool, str, Any]:
    """(ok, reason, cfg): whether ``execute`` would skip every notebook in ``names``."""
    from simlib import config
    from simlib.publish.runner import NOTEBOOK_DIR, notebook_key

    missing = [n for n in names if n not in state or not (out_dir / f"{n}.ipynb").exists()]
    if missing:
        return False, f"not executed yet: {', '.join(missing)}", None
    profiles = {state[n].get("profile") for n in names}
    if len(profiles) != 1:
        return False, f"notebooks executed under different profiles: {sorted(map(str, profiles))}", None
    cfg = config.load(profiles.pop())
    upstream: list[str] = []
    for n in names:
        key = notebook_key(NOTEBOOK_DIR / f"{n}.ipynb", cfg, upstream)
        upstream.append(key)
        if state[n].get("key") != key:
            return False, (f"{n} is out of date (its source, the simlib code, the data registry or the "
                           "parameters changed since it ran, or it ran with --set overrides)"), None
    return True, "", cfg


def book_current() -> bool:
    """Whether :func:`simlib.publish.runner.build_book` would skip the build (same key as the runner's)."""
    from simlib.publish import runner
    from simlib.cache import content_hash, file_hash

    state = runner._read_state(runner.EXECUTED_DIR)
    key = content_hash({
        "notebooks": {k: v.get("key") for k, v in state.items() if isinstance(v, dict)},
        "book": runner.tree_hash(runner.REPO_ROOT / "book", "**/*"),
        "config": file_hash(runner.REPO_ROOT / "_config.yml"),
        "toc": file_hash(runner.REPO_ROOT / "_toc.yml"),
    })
    stamp = runner.BUILD_DIR / ".book-key"
    return (runner.BUILD_DIR / "html" / "index.html").exists() and stamp.exists() and stamp.read_text() == key


def _import_seconds() -> float:
    """Start-up of a fresh Python that imports what ``simlib run`` imports before skipping."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import simlib.publish.cli, simlib.publish.runner, papermill"], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def _models_seconds() -> float:
    """``make models`` with everything provisioned: a fresh Python checking each model is in place."""
    from simlib.publish.runner import REPO_ROOT

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simlib.lm.weights"], check=True, capture_output=True, cwd=REPO_ROOT)
    return time.perf_counter() - t0


def _key_seconds(names: list[str], profile: str) -> float:
    """The hashing a no-op re-run does: every notebook's key, then the book's key."""
    from simlib import config
    from simlib.publish.runner import NOTEBOOK_DIR, notebook_key

    t0 = time.perf_counter()
    cfg = config.load(profile)
    upstream: list[str] = []
    for n in names:
        upstream.append(notebook_key(NOTEBOOK_DIR / f"{n}.ipynb", cfg, upstream))
    book_current()
    return time.perf_counter() - t0


def noop_rerun(repeats: int = 3) -> dict[str, Any]:
    """Time ``execute`` + ``build_book`` when nothing changed (median of ``repeats``), or say why not.

    When it cannot be timed, ``estimate_s`` is what such a re-run spends without executing anything
    (the imports of ``simlib run`` in a fresh Python, and hashing the sources into the notebooks' and
    the book's keys), measured now.
    """
    import statistics

    from simlib.publish import perf, runner

    names = runner.manifest()
    state = perf.read_state(runner.EXECUTED_DIR / ".state.json")
    ok, reason, cfg = up_to_date(state, names, runner.EXECUTED_DIR)
    if ok and not book_current():
        ok, reason = False, "the built book is not current (simlib run would rebuild it)"
    if not ok:
        profile = next((v.get("profile") for v in state.values() if v.get("profile")), "ci")
        imports, keys, models = _import_seconds(), _key_seconds(names, profile), _models_seconds()
        return {"available": False, "reason": reason, "estimate_s": round(imports + keys + models, 3),
                "estimate": "make models + imports of simlib run + hashing every key (nothing executed)",
                "make_models_s": round(models, 3), "startup_imports_s": round(imports, 3),
                "key_hashing_s": round(keys, 3)}
    t_exec, t_build = [], []
    for _ in range(repeats):
        ok, reason, cfg = up_to_date(perf.read_state(runner.EXECUTED_DIR / ".state.json"), names, runner.EXECUTED_DIR)
        if not ok or not book_current():  # something changed meanwhile (a run in progress): stop
            return {"available": False, "reason": f"changed while measuring: {reason or 'book'}"}
        t0 = time.perf_counter()
        res = runner.execute(cfg, {}, log=lambda *a: None)
        t1 = time.perf_counter()
        runner.build_book(log=lambda *a: None)
        t2 = time.perf_counter()
        if any(r.get("status") != "skipped" for r in res.values()):
            raise RuntimeError(f"a notebook was executed during the no-op measurement: {res}")
        t_exec.append(t1 - t0)
        t_build.append(t2 - t1)
    t_import, t_models = _import_seconds(), _models_seconds()
    e, b = statistics.median(t_exec), statistics.median(t_build)
    return {"available": True, "profile": cfg.profile, "execute_s": round(e, 3), "build_book_s": round(b, 3),
            "startup_imports_s": round(t_import, 3), "make_models_s": round(t_models, 3),
            "total_s": round(e + b + t_import + t_models, 3),
            "execute_s_all": [round(x, 3) for x in t_exec]}


def book_build_seconds() -> float | None:
    """``jupyter-book build`` of the repository into a temporary folder (None if the book is not complete)."""
    from simlib.publish import perf, runner

    names = runner.manifest()
    ok, _, _ = up_to_date(perf.read_state(runner.EXECUTED_DIR / ".state.json"), names, runner.EXECUTED_DIR)
    if not ok:
        return None
    jb = Path(sys.executable).with_name("jupyter-book")
    with tempfile.TemporaryDirectory(prefix="bench-book-") as d:
        t0 = time.perf_counter()
        proc = subprocess.run([str(jb), "build", str(runner.REPO_ROOT), "--path-output", d, "--keep-going"],
                              cwd=runner.REPO_ROOT, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"jupyter-book build failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return round(dt, 2)


def run(quick: bool = False, state_file: str | None = None) -> dict[str, Any]:
    """Notebook times and peak memory of the last run, their totals, and the no-op re-run time.

    ``state_file`` (default ``$SIMLIB_BENCH_STATE``, else this checkout's ``executed/.state.json``)
    may point at another checkout's state, e.g. a clean CI run; the no-op re-run is then still
    measured (or estimated) on this checkout.
    """
    import os

    from simlib.publish import perf, runner

    names = runner.manifest()
    path = Path(state_file or os.environ.get("SIMLIB_BENCH_STATE") or runner.EXECUTED_DIR / ".state.json")
    state = perf.read_state(path)
    times = perf.notebook_times(state, names)
    own = path.resolve() == (runner.EXECUTED_DIR / ".state.json").resolve()
    out: dict[str, Any] = {
        "state_file": "executed/.state.json" + ("" if own else f" of the checkout {path.resolve().parents[1].name!r}"),
        "manifest": names,
        "missing": [n for n in names if n not in state],
        "notebooks": times.round(3).to_dict("records"),
        "totals": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in perf.time_totals(times).items()},
        "noop_rerun": noop_rerun(repeats=1 if quick else 3),
        "book_build_s": None if quick else book_build_seconds(),
    }
    out["complete"] = not out["missing"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args(argv)
    print(json.dumps(run(ns.quick), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
