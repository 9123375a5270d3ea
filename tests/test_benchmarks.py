"""The benchmarks still run (``python -m benchmarks --quick`` piece by piece) and return their keys.

These are not timed tests: the numbers of a quick run mean nothing. Each benchmark's
``run(quick=True)`` runs at a toy size (GRPO at an even smaller one: one step of 4 tokens per setting) with one
CPU thread, and the runner's table and JSON are checked on a canned result. The four model-backed
tests take about a minute together on a 2-core CPU.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package
from benchmarks import __main__ as bench_main
from simlib.data.registry import CRAWLER_SUBDIR, resolve_data_dir  # noqa: E402
from simlib.lm import hardware
from simlib.publish import perf

# the pinned crawl's r/AITAH folder under the data directory ($SIMLIB_DATA_DIR)
AITAH = str((resolve_data_dir() or Path("/nonexistent")) / CRAWLER_SUBDIR / "docs" / "api" / "aitah")


def _need_aitah():
    if not os.path.isdir(AITAH):
        pytest.skip(f"no AITAH threads under {AITAH}")


@pytest.fixture(autouse=True)
def _restore_threads():
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------ the runner
def test_runner_table_and_json(tmp_path, monkeypatch):
    canned = {
        "logprob": {"speedup": 2.5, "max_abs_diff_token_logprob": 3e-5, "linear_flop_bound_speedup": 2.4},
        "generate": {"speedup": 6.0, "llama_cpp": {"median_tok_per_s": 30.0},
                     "transformers": {"median_tok_per_s": 5.0}},
    }
    monkeypatch.setattr(bench_main, "run_one", lambda name, quick, threads: {
        "status": "ok" if name in canned else "error", "wall_s": 0.1,
        **({"result": canned[name]} if name in canned else {"error": "boom", "traceback": "tb"})})
    out = tmp_path / "r.json"
    rc = bench_main.main(["--only", "logprob", "--only", "generate", "--only", "grpo", "--out", str(out)])
    assert rc == 1  # grpo "failed"
    data = json.loads(out.read_text())
    m = data["machine"]
    for key in ("cpu", "cores", "ram_gb", "python", "torch", "date", "git_commit", "loadavg_start", "loadavg_end"):
        assert key in m
    table = perf.benchmark_table(data)
    met = dict(zip(table["measure"], table["met"]))
    assert met["log-prob scoring: prefix-shared vs naive (x)"] == "no"
    assert met["log-prob scoring: max |difference| vs naive"] == "yes"
    assert met["generation: the book's server vs transformers serve, a post's replies (x, tokens/s)"] == "yes"
    assert met["grpo: failed"] == "no"
    data["quick"] = True
    assert set(perf.benchmark_table(data)["met"]) <= {"not judged (quick)", "", "no"}
    assert "cores" in perf.machine_line(data)
    assert isinstance(m["native_bf16"], bool)
    assert ("no native bfloat16" in perf.machine_line(data)) is (not m["native_bf16"])


@pytest.mark.parametrize("bf16,expected", [(True, "bf16 autocast"), (False, "float32"), (None, "bf16 autocast")])
def test_grpo_ci_precision_reads_the_run(bf16, expected):
    ci = {"settings": {}} if bf16 is None else {"settings": {}, "bf16": bf16}  # None: a run before the field
    results = {"benchmarks": {"grpo": {"status": "ok", "result": {"ci_step": ci}}}}
    assert perf.grpo_ci_precision(results) == expected
    assert perf.grpo_ci_precision({"benchmarks": {}}) is None


def test_perf_tables_from_state(tmp_path):
    state = {"01_data": {"key": "a", "seconds": 30.0, "peak_rss_mb": 500.0, "profile": "ci"},
             "02_gap": {"key": "b", "seconds": 90.0, "peak_rss_mb": 1500.0, "profile": "ci"}}
    (tmp_path / ".state.json").write_text(json.dumps(state))
    times = perf.notebook_times(perf.read_state(tmp_path / ".state.json"), ["01_data", "02_gap", "03_reward"])
    assert list(times["notebook"]) == ["01_data", "02_gap"]
    tot = perf.time_totals(times)
    assert tot["total_s"] == 120.0 and tot["total_min"] == 2.0 and tot["max_peak_rss_mb"] == 1500.0
    assert math.isclose(tot["budget_share"], 120 / 1800)
    assert perf.read_state(tmp_path / "missing.json") == {}
    assert perf.load_benchmarks(tmp_path / "missing.json") is None


# ------------------------------------------------------------------------- each benchmark
def test_pipeline_quick():
    from benchmarks import bench_pipeline

    r = bench_pipeline.run(quick=True)
    assert {"manifest", "missing", "notebooks", "totals", "noop_rerun", "complete"} <= set(r)
    assert {"total_s", "total_min", "max_peak_rss_mb"} <= set(r["totals"])
    assert isinstance(r["noop_rerun"]["available"], bool)
    if r["noop_rerun"]["available"]:
        assert r["noop_rerun"]["total_s"] > 0
    else:
        assert r["noop_rerun"]["reason"]


@pytest.mark.slow
def test_logprob_quick():
    _need_aitah()
    from benchmarks import bench_logprob

    # SmolLM2 rather than the benchmark's Gemma: the same code paths, a fifth of the output layer
    r = bench_logprob.run(quick=True, threads=1, model_name="smollm2-135m")
    assert {"naive_s", "prefix_shared_s", "speedup", "max_abs_diff_token_logprob",
            "linear_flop_bound_speedup", "speedup_per_repeat"} <= set(r)
    assert r["max_abs_diff_token_logprob"] < 1e-4
    assert r["naive_s"] > 0 and r["prefix_shared_s"] > 0


@pytest.mark.slow
def test_generate_quick():
    _need_aitah()
    from benchmarks import bench_generate
    from simlib.generate.server import llama_server_binary

    try:
        llama_server_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    r = bench_generate.run(quick=True, threads=1, n_prompts=1)
    assert {"baseline", "llama_server", "transformers", "speedup", "prompts", "max_tokens"} <= set(r)
    for side in ("llama_server", "transformers"):
        assert r[side]["median_tok_per_s"] > 0 and r[side]["completion_tokens"][0] > 0
    assert r["speedup"] > 0


@pytest.mark.slow
def test_grpo_quick(monkeypatch):
    from benchmarks import bench_grpo

    real = bench_grpo._train_setting

    # Where the CPU only emulates bfloat16 (AVX2), a bf16 step costs ~25 s even this small; the wiring
    # is the same either way, and test_train covers bf16 autocast itself.
    native = hardware.native_bf16("cpu")

    def tiny(bf16, lora, steps, n_prompts, n_gen, max_len, refs, prompts, **share):  # 1 step of 4 tokens
        return real(bf16 and native, lora, 1, n_prompts, n_gen, 4, refs, prompts, **share)

    real_prompts = bench_grpo._real_prompts

    def short(n_prompts, chars):  # the ci-post settings on 200 characters: the wiring, not the timing
        return real_prompts(n_prompts, min(chars, 200))

    monkeypatch.setattr(bench_grpo, "_train_setting", tiny)
    monkeypatch.setattr(bench_grpo, "_real_prompts", short)
    r = bench_grpo.run(quick=True, threads=1)
    assert {"setup", "settings", "step1_agreement", "speedup_vs_fp32_full", "reward"} <= set(r)
    assert set(r["settings"]) == {"fp32_full", "bf16_full", "fp32_lora", "bf16_lora"}
    assert all(s["median_step_s"] > 0 for s in r["settings"].values())
    ci = r["ci_step"]
    assert any(k.endswith("_trl_pass") for k in ci["settings"]) and ci["speedup_shared_prompt"] > 0
    assert any(k.endswith("_trl_generate") for k in ci["settings"]) and ci["speedup_shared_rollouts"] > 0
    assert isinstance(ci["shared_prompt_same_step1_rewards"], bool)
    flops = r["flops"]
    assert flops["ci_step_gflop"] > 0 and flops["ci_step_gflops"] > 0
    if flops["fp32_peak_gflops"]:
        assert 0 < flops["ci_step_share_of_peak"] < 1


def test_step_flops_count_the_prompt_once_per_group_when_shared():
    from benchmarks import bench_grpo

    # 100 params, 10 prompt tokens, 8 completion tokens in 4 completions
    shared = bench_grpo.step_gflop(100, 10, 8, share_prompt=True, n_gen=4) * 1e9
    per_completion = bench_grpo.step_gflop(100, 10, 8, share_prompt=False, n_gen=4) * 1e9
    assert shared == 2 * 100 * 18 + 6 * 100 * 18
    assert per_completion - shared == 6 * 100 * 10 * 3


def test_fp32_peak_from_cpuinfo(tmp_path):
    from benchmarks import bench_grpo

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2500.000\nflags\t\t: sse avx2 fma\n")
    assert bench_grpo.fp32_peak_gflops(2, str(info)) == 2 * 2.5 * 8 * 2 * 2
    info.write_text("cpu MHz\t\t: 2000.0\nflags\t\t: avx2 fma avx512f\n")
    assert bench_grpo.fp32_peak_gflops(1, str(info)) == 2.0 * 16 * 4
    info.write_text("cpu MHz\t\t: 2000.0\nflags\t\t: sse2\n")
    assert bench_grpo.fp32_peak_gflops(1, str(info)) is None


@pytest.mark.slow
def test_allocator_quick(monkeypatch):
    _need_aitah()
    from benchmarks import bench_allocator
    from simlib.lm import allocator

    if allocator.find() is None:
        assert bench_allocator.run(quick=True)["available"] is False
        return
    monkeypatch.setattr(bench_allocator, "WORKLOADS", ("logprob",))  # the cheap one: child processes load Gemma
    r = bench_allocator.run(quick=True, threads=1)
    w = r["workloads"]["logprob"]
    assert w["same_results"] is True and w["speedup"] > 0
    assert w["system"]["seconds"] > 0 and w["tcmalloc"]["minor_faults"] > 0


def test_measured_matmul_peak_is_positive_and_below_the_formula():
    import torch

    from benchmarks import bench_grpo

    torch.set_num_threads(1)
    for dtype in ("float32", "bfloat16"):
        assert bench_grpo.matmul_peak_gflops(dtype, n=128, repeats=3) > 0
    formula = bench_grpo.fp32_peak_gflops(1)
    if formula:  # the per-cycle formula is an upper bound a real product cannot beat
        assert bench_grpo.matmul_peak_gflops("float32", n=256, repeats=5) < 1.1 * formula


def test_share_of_peak_row_reads_the_peak_of_the_dtype_the_step_ran_in():
    from simlib.publish import perf

    flops = {"fp32_peak_gflops": 100.0, "bf16_peak_gflops": 250.0, "ci_step_share_of_peak": 0.2}
    for dtype, want in (("bfloat16", 250.0), ("float32", 100.0)):
        rows = dict((label, value) for label, value, _ in perf.headline(
            {"benchmarks": {"grpo": {"status": "ok", "result": {"flops": {**flops, "peak_dtype": dtype}}}}}))
        assert rows["CPU peak at the step's dtype, a matrix product measured on the cores torch used (GFLOP/s)"] == want
        assert rows["GRPO step of the ci profile: share of that measured peak"] == 0.2
