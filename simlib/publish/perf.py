"""Where the book's time and memory go: tables for the Performance chapter and ``python -m benchmarks``.

Two sources, both plain JSON files:

* ``executed/.state.json``, written by :func:`simlib.publish.runner.execute`: per notebook the wall time
  (``seconds``) and peak resident memory of the kernel and its child processes (``peak_rss_mb``)
  of the run that produced the executed copy (a skipped notebook keeps the numbers of the run
  that executed it);
* ``benchmarks/results/latest.json``, written by ``python -m benchmarks`` (``make bench``): the
  benchmark results with the machine they ran on.

The targets (:data:`TARGETS`) are the project's time budget on a 2-core CPU.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simlib.config import REPO_ROOT

STATE_FILE = REPO_ROOT / "executed" / ".state.json"
BENCH_FILE = REPO_ROOT / "benchmarks" / "results" / "latest.json"
BUDGET_S = 30 * 60  # the ci profile end to end, the hard limit
# Notebook minutes each profile is sized for on this project's 2-core CPU (the README's table).
PROFILE_BUDGET_MIN = {"smoke": 3, "ci": 15, "book": 90, "gpu-smoke": 10}
MEMORY_BUDGET_MB = 8 * 1024
NOOP_BUDGET_S = 20.0

# measure id -> (label, target text, test); the test returns True when the target is met
TARGETS: dict[str, tuple[str, str, Any]] = {
    "logprob.speedup": ("log-prob scoring: prefix-shared vs naive (x)", ">= 3", lambda v: v >= 3),
    "logprob.max_diff": ("log-prob scoring: max |difference| vs naive", "< 1e-4", lambda v: v < 1e-4),
    "generate.speedup": ("generation: the book's server vs transformers serve, a post's replies (x, tokens/s)",
                         ">= 5", lambda v: v >= 5),
    "pipeline.total_min": ("notebooks of the last run, total (min)", "<= 30", lambda v: v <= BUDGET_S / 60),
    "pipeline.peak_gb": ("peak memory of one notebook (GB)", "<= 8", lambda v: v <= MEMORY_BUDGET_MB / 1024),
    "pipeline.noop_s": ("no-op re-run (s)", "<= 20", lambda v: v <= NOOP_BUDGET_S),
}


def state_file(profile: str = "ci") -> Path:
    """The runner's state file of a profile's executed notebooks (:func:`simlib.publish.runner.executed_dir`)."""
    from simlib.publish.runner import executed_dir

    return executed_dir(profile) / ".state.json"


def read_state(path: str | Path = STATE_FILE) -> dict[str, dict]:
    """The runner's state file as ``{notebook: {key, seconds, peak_rss_mb, profile}}`` ({} if absent)."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def notebook_times(state: dict[str, dict], names: list[str] | None = None, exclude: tuple[str, ...] = ()):
    """One row per notebook (in ``names`` order, default the toc's) that has been executed:
    ``notebook, profile, seconds, minutes, peak_rss_mb, allocator`` (the kernel's, see
    :mod:`simlib.lm.allocator`; ``system`` for runs recorded before the runner noted it)."""
    import pandas as pd

    if names is None:
        from simlib.publish.runner import manifest

        names = manifest()
    rows = [{"notebook": n, "profile": state[n].get("profile"), "seconds": float(state[n].get("seconds") or 0.0),
             "peak_rss_mb": state[n].get("peak_rss_mb"), "allocator": state[n].get("allocator", "system")}
            for n in names if n in state and n not in exclude]
    df = pd.DataFrame(rows, columns=["notebook", "profile", "seconds", "peak_rss_mb", "allocator"])
    df.insert(3, "minutes", df["seconds"] / 60)
    return df


def time_totals(times, profile: str = "ci") -> dict[str, float]:
    """Sum of the notebooks' wall times against :data:`BUDGET_S`, the profile's own budget
    (:data:`PROFILE_BUDGET_MIN`, NaN for a profile without one), and the largest peak memory."""
    total = float(times["seconds"].sum())
    peaks = [float(p) for p in times["peak_rss_mb"] if p is not None and not (isinstance(p, float) and math.isnan(p))]
    return {"n_notebooks": int(len(times)), "total_s": total, "total_min": total / 60,
            "budget_min": BUDGET_S / 60, "budget_share": total / BUDGET_S,
            "profile_budget_min": float(PROFILE_BUDGET_MIN.get(profile, float("nan"))),
            "max_peak_rss_mb": max(peaks) if peaks else float("nan"),
            "max_peak_rss_gb": max(peaks) / 1024 if peaks else float("nan")}


def load_benchmarks(path: str | Path = BENCH_FILE) -> dict | None:
    """``benchmarks/results/latest.json`` as a dict, or None when nobody has run ``make bench``."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _result(results: dict, name: str) -> dict | None:
    b = (results.get("benchmarks") or {}).get(name) or {}
    return b.get("result") if b.get("status") == "ok" else None


def grpo_ci_precision(results: dict | None) -> str | None:
    """"bf16 autocast" or "float32": how the benchmark ran the ci profile's GRPO step (the profile's
    ``bf16: auto`` decided on the benchmark's machine; runs before that field record bf16)."""
    ci = (_result(results or {}, "grpo") or {}).get("ci_step")
    if not ci:
        return None
    return "bf16 autocast" if ci.get("bf16", True) else "float32"


def headline(results: dict | None) -> list[tuple[str, float | None, str]]:
    """``(measure id or label, value, unit)`` for the numbers worth a row, from a results dict."""
    rows: list[tuple[str, float | None, str]] = []
    if not results:
        return rows
    lp = _result(results, "logprob")
    if lp:
        rows += [("logprob.speedup", lp.get("speedup"), "x"),
                 ("logprob.max_diff", lp.get("max_abs_diff_token_logprob"), "")]
        if lp.get("linear_flop_bound_speedup") is not None:
            rows.append(("log-prob scoring: speed-up bound from linear-layer FLOPs (x)",
                         lp["linear_flop_bound_speedup"], "x"))
        if lp.get("speedup_bf16_vs_fp32") is not None:
            rows += [("log-prob scoring: bfloat16 vs float32 weights (x)", lp["speedup_bf16_vs_fp32"], "x"),
                     ("log-prob scoring: max |change of a mean log-prob| in bfloat16",
                      lp["bf16_max_abs_diff_mean_logprob"], "")]
        for dt, gbs in (lp.get("head_gemv_gb_per_s") or {}).items():
            rows.append((f"vocabulary projection, one token, {dt} (GB/s)", gbs, ""))
    gen = _result(results, "generate")
    if gen:
        rows += [("generate.speedup", gen.get("speedup"), "x"),
                 ("generation, distinct posts, one reply each (x)", gen.get("speedup_distinct"), "x"),
                 ("generation, reading the prompt only (x)", gen.get("speedup_prefill"), "x"),
                 ("generation, writing the reply only (x)", gen.get("speedup_decode"), "x"),
                 ("generation: parallel vs one-at-a-time llama.cpp, a post's replies (x)",
                  gen.get("speedup_parallel_vs_llama_cpp_samples"), "x"),
                 ("generation: parallel vs transformers serve with continuous batching (x)",
                  gen.get("speedup_vs_transformers_cb_samples"), "x")]
        for side, label in (("llama_server", "llama-server (the book's)"), ("parallel", "simlib's parallel llama.cpp (retired)"),
                            ("llama_cpp", "llama-cpp-python server (retired)"), ("transformers", "transformers serve")):
            rows.append((f"generation: {label}, a post's replies (tokens/s)",
                         ((gen.get(side) or {}).get("samples") or {}).get("median_tok_per_s"), ""))
    grpo = _result(results, "grpo")
    if grpo:
        for k, v in (grpo.get("settings") or {}).items():
            rows.append((f"GRPO step, {k.replace('_', ' ')} (s)", v.get("median_step_s"), "s"))
        ci = grpo.get("ci_step") or {}
        for k, v in (ci.get("settings") or {}).items():
            rows.append((f"GRPO step of the ci profile, {k.removeprefix('ci_').replace('_', ' ')} (s)",
                         v.get("median_step_s"), "s"))
        rows.append(("GRPO step of the ci profile: TRL's training pass / prompt read once per group (x)",
                     ci.get("speedup_shared_prompt"), "x"))
        rows.append(("GRPO step of the ci profile: TRL's rollouts (generate) / simlib's, prompt read once per group (x)",
                     ci.get("speedup_shared_rollouts"), "x"))
        rows.append(("GRPO step of the ci profile: training pass without / with the rollout's prompt prefill reused (x)",
                     ci.get("speedup_prefill_reuse"), "x"))
        flops = grpo.get("flops") or {}
        rows += [("GRPO step of the ci profile: matrix-multiply work (GFLOP)", flops.get("ci_step_gflop"), ""),
                 ("GRPO step of the ci profile: achieved (GFLOP/s)", flops.get("ci_step_gflops"), ""),
                 ("CPU peak at the step's dtype, a matrix product measured on the cores torch used (GFLOP/s)",
                  flops.get({"bfloat16": "bf16_peak_gflops"}.get(flops.get("peak_dtype"), "fp32_peak_gflops")), ""),
                 ("GRPO step of the ci profile: share of that measured peak", flops.get("ci_step_share_of_peak"), "")]
    alloc = _result(results, "allocator")
    if alloc and alloc.get("available"):
        for w, label in (("grpo", "GRPO steps of the ci profile"), ("logprob", "log-prob scoring, Gemma 3 270M")):
            r = (alloc.get("workloads") or {}).get(w) or {}
            rows.append((f"allocator: {label}, tcmalloc vs glibc malloc (x)", r.get("speedup"), "x"))
            faults = [(r.get(a) or {}).get("minor_faults") for a in ("system", "tcmalloc")]
            if all(faults):
                rows.append((f"allocator: {label}, page faults under glibc malloc / under tcmalloc (x)",
                             round(faults[0] / faults[1], 2), "x"))
    pipe = _result(results, "pipeline")
    if pipe:
        rows += [("pipeline.total_min", (pipe.get("totals") or {}).get("total_min"), "min"),
                 ("pipeline.peak_gb", (pipe.get("totals") or {}).get("max_peak_rss_gb"), "GB")]
        noop = pipe.get("noop_rerun") or {}
        rows.append(("pipeline.noop_s", noop.get("total_s") if noop.get("available") else None, "s"))
        if not noop.get("available") and noop.get("estimate_s") is not None:
            rows.append(("no-op re-run, estimated: imports + hashing, nothing executed (s)", noop["estimate_s"], "s"))
        if pipe.get("book_build_s") is not None:
            rows.append(("book build from executed notebooks (s)", pipe["book_build_s"], "s"))
    return rows


def headline_values(results: dict | None) -> dict[str, float | None]:
    """:func:`headline` as ``{measure id or label: value}``."""
    return {k: v for k, v, _ in headline(results)}


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v != 0 and abs(v) < 1e-2:
        return f"{v:.1e}"
    return f"{v:.2f}"


def benchmark_table(results: dict | None):
    """One row per headline number: ``measure, value, target, met`` (``met`` is empty without a
    target, and "not judged" for a ``--quick`` run, whose sizes are too small to mean anything).
    Without results, one row saying so."""
    import pandas as pd

    if not results:
        return pd.DataFrame([{"measure": "no benchmark run recorded yet (make bench)", "value": "n/a",
                              "target": "", "met": ""}])
    quick = bool(results.get("quick"))
    pipe = _result(results, "pipeline") or {}
    rows = []
    for mid, value, _unit in headline(results):
        label, target, test = TARGETS.get(mid, (mid, "", None))
        if test is None or value is None:
            met = "" if test is None else "n/a"
        elif quick:
            met = "not judged (quick)"
        elif mid.startswith("pipeline.") and not pipe.get("complete", True):
            met = "not judged (run incomplete)"
        else:
            met = "yes" if test(value) else "no"
        rows.append({"measure": label, "value": _fmt(value), "target": target, "met": met})
    failed = [n for n, b in (results.get("benchmarks") or {}).items() if b.get("status") != "ok"]
    for n in failed:
        rows.append({"measure": f"{n}: failed", "value": "n/a", "target": "", "met": "no"})
    return pd.DataFrame(rows, columns=["measure", "value", "target", "met"])


def machine_line(results: dict | None) -> str:
    """``AMD EPYC, 2 cores, 23 GB RAM, native bfloat16; load average 2.6 at start; 2026-11-25; commit 0563616``."""
    if not results:
        return "none recorded yet"
    m = results.get("machine") or {}
    parts = [f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores, {m.get('ram_gb', '?')} GB RAM"
             + {True: ", native bfloat16", False: ", no native bfloat16"}.get(m.get("native_bf16"), "")]
    if m.get("loadavg_start") is not None:
        parts.append(f"load average {m['loadavg_start'][0]:.1f} at start, {m.get('loadavg_end', [float('nan')])[0]:.1f} at end")
    parts.append(str(m.get("date", "?"))[:10])
    if m.get("git_commit"):
        parts.append(f"commit {m['git_commit'][:7]}{' (with local changes)' if m.get('git_dirty') else ''}")
    return "; ".join(parts)


def generation_server(results: dict | None) -> str:
    """Which server the generation benchmark of ``results`` measured as the book's (it changed with issue 29)."""
    gen = (_result(results, "generate") if results else None) or {}
    return "llama.cpp's llama-server" if gen.get("llama_server") else "simlib's parallel server (since retired)"
