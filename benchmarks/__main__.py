"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME] [--merge] [--out PATH] [--threads N]``.

Each module ``benchmarks/bench_<name>.py`` has ``run(quick: bool) -> dict``. This runner calls them
in turn (``--only`` picks some), prints one table of the headline numbers against the project's
targets (:data:`simlib.publish.perf.TARGETS`) and writes everything as JSON, with the machine it ran on:
CPU model, cores, RAM, Python/torch/transformers versions, date, git commit, and the load average
before and after (the machine may be shared: a load average above the core count means other
jobs competed for the CPU, and absolute times are then slower than on a quiet machine; ratios
are measured within one run, alternating the two sides, and hold up better).

A full run (``make bench``) writes ``benchmarks/results/latest.json``, which the Performance
chapter shows; it also reads ``benchmarks/results/llama_server.json``, written by ``--only
llama_server --threads 0 --out benchmarks/results/llama_server.json``, and
``benchmarks/results/grpo_recipe.json``, written by ``--only recipe --out benchmarks/results/grpo_recipe.json``
(the GRPO recipe sweep, which a full run leaves out: it takes about 45 minutes). ``--quick`` runs every
benchmark at a toy size, to check they still work (the tests and CI use it); it writes no file
unless ``--out`` is given and judges no target.
``--merge`` keeps the other benchmarks already in the output file (e.g. ``--only generate
--merge`` re-measures generation only); every benchmark records the date, commit and load average
of its own run, the top-level ``machine`` is the latest run's. The exit status is 1 when a
benchmark raised.
"""
from __future__ import annotations

import argparse
import datetime as dt
import inspect
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("logprob", "generate", "grpo", "allocator", "llama_server", "pipeline", "recipe")  # cheap-to-fail first
# run only when named (--only): the GRPO recipe sweep trains dozens of runs (about 45 minutes on 2 cores)
OPT_IN = ("recipe",)
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latest.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: hardware, versions, date, commit, and how busy the machine was."""
    import psutil

    from simlib.lm.hardware import native_bf16

    def version(mod: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:  # noqa: BLE001
            return None

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "native_bf16": native_bf16("cpu"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "llama_cpp_python": version("llama_cpp_python"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_one(name: str, quick: bool, threads: int | None) -> dict[str, Any]:
    """Import ``benchmarks.bench_<name>`` and call its ``run``; errors are caught and recorded."""
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        kwargs: dict[str, Any] = {"quick": quick}
        if threads and "threads" in inspect.signature(mod.run).parameters:
            kwargs["threads"] = threads
        result = mod.run(**kwargs)
        return {"status": "ok", "wall_s": round(time.perf_counter() - t0, 2), "result": result}
    except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
        return {"status": "error", "wall_s": round(time.perf_counter() - t0, 2),
                "error": f"{type(exc).__name__}: {exc}"[-2000:], "traceback": traceback.format_exc()[-6000:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes: check that every benchmark still runs")
    ap.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    ap.add_argument("--merge", action="store_true",
                    help="keep the benchmarks of the existing output file that this run does not measure")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"JSON output (default: {DEFAULT_OUT.relative_to(ROOT)} for a full run, none for --quick)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads of torch and of the servers (default 1: on a CPU shared with other jobs, "
                         "threads spin-waiting against them make multi-threaded timings erratic and up to 10x "
                         "slower; 0 = each benchmark's own default)")
    ns = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from simlib.publish import perf  # after argparse: --help stays fast

    names = ns.only or [n for n in BENCHMARKS if n not in OPT_IN]
    results: dict[str, Any] = {"quick": ns.quick, "threads": ns.threads or "default", "machine": machine_info(), "benchmarks": {}}
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        load0 = [round(x, 2) for x in os.getloadavg()]
        res = run_one(name, ns.quick, ns.threads)
        res["ran"] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "git_commit": results["machine"]["git_commit"], "git_dirty": results["machine"]["git_dirty"],
                      "loadavg_start": load0, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
        results["benchmarks"][name] = res
        msg = f"{res['status']} in {res['wall_s']:.1f} s"
        print(f"[bench] {name}: {msg}" + (f"\n{res['traceback']}" if res["status"] != "ok" else ""),
              file=sys.stderr, flush=True)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    cores = results["machine"]["cores_available"] or 1
    own = ns.threads or cores  # the benchmarks' own threads raise the load average too
    if results["machine"]["loadavg_start"][0] > cores * 0.5 or results["machine"]["loadavg_end"][0] > own + cores * 0.5:
        results["machine"]["note"] = ("shared machine: other jobs were running (see the load averages); "
                                      "absolute times are pessimistic, ratios are measured side by side")

    out = ns.out or (None if ns.quick else DEFAULT_OUT)
    if ns.merge and out is not None and out.exists():
        old = json.loads(out.read_text())
        if old.get("quick") == ns.quick:
            for name, res in old.get("benchmarks", {}).items():
                if name not in results["benchmarks"]:
                    res.setdefault("ran", {k: old["machine"].get(k) for k in
                                           ("date", "git_commit", "git_dirty", "loadavg_start", "loadavg_end")})
                    results["benchmarks"][name] = res
            results["benchmarks"] = {n: results["benchmarks"][n] for n in BENCHMARKS if n in results["benchmarks"]}
    table = perf.benchmark_table(results)
    print(perf.machine_line(results))
    print(table.to_string(index=False) if len(table) else "(no results)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
        os.replace(tmp, out)
        print(f"[bench] wrote {out}", file=sys.stderr)
    return 0 if all(b["status"] == "ok" for b in results["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
