"""The notebooks' memory allocator: glibc's malloc vs tcmalloc, on the two workloads that allocate most.

``python -m benchmarks.bench_allocator [--quick] [--threads N]`` prints a JSON dict; :func:`run`
returns it. Each repetition starts one fresh Python process per allocator (alternating which goes
first) that runs a workload and reports its wall time, minor page faults and system CPU time
(``getrusage``, the workload alone: imports and model loading excluded). Medians over repetitions
and their ratio are reported, with a check that both allocators computed the same numbers.

* ``grpo``: GRPO steps of the ``ci`` profile (a real post cut to ``policy_max_post_chars``, the
  profile's precision on this machine, ``num_generations`` x ``max_completion_length``); the median step after the first.
* ``logprob``: prefix-shared scoring of real replies with Gemma 3 270M in the ``ci`` profile's
  ``inference_dtype`` (262k-token vocabulary: the largest logits of the book).

The runner preloads tcmalloc into the notebook kernels when it is installed (:mod:`simlib.lm.allocator`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from simlib.lm import allocator

WORKLOADS = ("grpo", "logprob")


def _usage() -> tuple[float, int, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_minflt, r.ru_stime


def _grpo(quick: bool) -> tuple[dict, Any]:
    from benchmarks.bench_grpo import _real_prompts, _train_setting
    from simlib import config

    ci = config.load("ci")
    n_gen, max_len, steps = (2, 8, 2) if quick else (ci.num_generations, ci.max_completion_length, 4)
    prompts, refs = _real_prompts(1, ci.policy_max_post_chars)
    from trl import GRPOConfig, GRPOTrainer  # noqa: F401  (their import cost stays out of the timing)

    t0 = _usage()
    res = _train_setting(ci.resolved_bf16(), False, steps, 1, n_gen, max_len, refs, prompts)
    t1 = _usage()
    res.pop("_step1")
    return {"seconds": t1[0] - t0[0], "minor_faults": t1[1] - t0[1], "system_s": t1[2] - t0[2],
            "median_step_s": res["median_step_s"]}, res["reward_mean"]


def _logprob(quick: bool) -> tuple[dict, Any]:
    from benchmarks.bench_logprob import load_threads
    from simlib.config import load
    from simlib.lm.logprob import ScoreRequest, build_prompt, score
    from simlib.lm.weights import load_causal_lm

    n_posts, n_replies = (1, 4) if quick else (2, 8)
    tok, model = load_causal_lm("gemma3-270m", dtype=load("ci").resolved_inference_dtype())
    reqs = []
    for t in load_threads(n_posts, n_replies, min_body_chars=400):
        prompt = build_prompt(t["title"], t["body"], "AITAH", tok, max_post_chars=1200)
        reqs += [ScoreRequest(t["id"], f"{t['id']}-{j}", prompt, c) for j, c in enumerate(t["comments"])]
    t0 = _usage()
    out = score(reqs, tok, model, max_response_tokens=48 if quick else 128)
    t1 = _usage()
    return ({"seconds": t1[0] - t0[0], "minor_faults": t1[1] - t0[1], "system_s": t1[2] - t0[2]},
            [round(r["mean_logprob"], 6) for r in out])


def child(workload: str, quick: bool, threads: int | None) -> dict:
    """Run one workload in this process; what the parent reads from stdout."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    stats, values = {"grpo": _grpo, "logprob": _logprob}[workload](quick)
    return {**stats, "allocator": allocator.active(), "values": values}


def _spawn(workload: str, lib: str | None, quick: bool, threads: int | None) -> dict:
    env = allocator.child_env(lib=lib)
    if not lib:
        env.pop("LD_PRELOAD", None)
    cmd = [sys.executable, "-m", "benchmarks.bench_allocator", "--child", workload]
    cmd += ["--quick"] if quick else []
    cmd += ["--threads", str(threads)] if threads else []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{workload} under {allocator.label(lib)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = True, threads: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Both workloads under both allocators; without tcmalloc installed, says so and measures nothing."""
    lib = allocator.find()
    if lib is None:
        return {"available": False, "reason": "tcmalloc is not installed (Debian: libtcmalloc-minimal4)"}
    repeats = repeats or (1 if quick else 3)
    out: dict[str, Any] = {"available": True, "library": lib, "repeats": repeats, "quick": quick, "workloads": {}}
    for w in WORKLOADS:
        runs: dict[str, list[dict]] = {"system": [], "tcmalloc": []}
        for k in range(repeats):
            order = (("system", None), ("tcmalloc", lib))
            for name, preload in (order if k % 2 == 0 else order[::-1]):
                r = _spawn(w, preload, quick, threads)
                if r["allocator"] != name:
                    raise RuntimeError(f"asked for {name}, the child ran with {r['allocator']}")
                runs[name].append(r)
        med = {n: {m: round(statistics.median(r[m] for r in rs), 3)
                   for m in ("seconds", "minor_faults", "system_s", "median_step_s") if m in rs[0]}
               for n, rs in runs.items()}
        values = {n: [r.pop("values") for r in rs] for n, rs in runs.items()}
        out["workloads"][w] = {
            **med,
            "speedup": round(med["system"]["seconds"] / med["tcmalloc"]["seconds"], 2),
            "speedup_per_repeat": [round(a["seconds"] / b["seconds"], 2)
                                   for a, b in zip(runs["system"], runs["tcmalloc"])],
            "same_results": all(v == values["system"][0] for vs in values.values() for v in vs),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_allocator", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.child:
        print(json.dumps(child(ns.child, ns.quick, ns.threads)))
    else:
        print(json.dumps(run(quick=ns.quick, threads=ns.threads, repeats=ns.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
