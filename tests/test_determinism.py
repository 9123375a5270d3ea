"""Determinism: the same inputs give bit-identical outputs, across processes and work dirs.

Checked here:

- the data step (:func:`simlib.steps.real_responses`, smoke profile) in two work dirs and two
  processes with different ``PYTHONHASHSEED``: identical tables, reports and cached bytes;
- the diversity measures (per post, bootstrap summaries, paired differences, subsampling) on the
  same inputs, in both processes: identical;
- MiniLM embeddings and Gemma 3 270M log-prob scoring of the same requests, twice: identical
  (``slow``: they load models).

What is NOT bit-identical (by design or by the hardware), found by reading the code:

- log-prob scoring with a different ``batch_size`` / ``pack_tokens``, or ``bf16=True``: other
  packings change the shapes of the matrix products, so results agree to ~1e-5, not bitwise
  (checked below to 1e-4, the tolerance ``tests/test_logprob.py`` uses against the naive scorer);
- torch on a different number of intra-op threads or another CPU (oneDNN/MKL pick kernels and
  reduction orders by ISA and thread count); ``bf16`` autocast also depends on AVX-512-BF16;
- GRPO (:mod:`simlib.train`): on one CPU with the same thread count a run is bit-reproducible,
  and a resumed run equals an uninterrupted one (``tests/test_train.py``
  ``test_killed_run_resumes_from_checkpoint`` asserts a max weight difference of 0.0, so it is not
  repeated here). It is not bit-reproducible on GPUs: ``train.py`` does not set
  ``torch.use_deterministic_algorithms`` / ``CUBLAS_WORKSPACE_CONFIG`` or TRL's
  ``full_determinism``, and vLLM's batched sampling is not deterministic; under ``accelerate``
  with several processes the gathered rewards are reduced in a process-dependent order.
  ``log.jsonl`` holds wall-clock fields (``step_seconds``, ``elapsed_seconds``, ``time``) and
  ``run.json``/``done.json`` timestamps, so those files differ between identical runs;
- generation: llama.cpp honours the per-request ``seed`` (same seed, same text, on one machine and
  build), but its numerics depend on the CPU, thread count and batch; the OpenAI API's ``seed``
  is best-effort only. Both are cached by request key, so a re-run reads the stored text;
- executed notebooks and provenance lines carry the run date and the git commit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simlib import config, steps
from simlib.data.schema import COLUMNS
from simlib.measures import diversity

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("SIMLIB_DATA_DIR") or REPO.parent / "shared" / "data")
needs_real = pytest.mark.skipif(not (REAL_ROOT / "reddit").is_dir(), reason="real sample absent")


def diversity_inputs(seed: int = 7):
    rng = np.random.default_rng(seed)
    verdicts = ["NTA", "YTA", "ESH", "NAH", "INFO", "nah", "honestly no idea", "you're the asshole"]
    rows = [{"post_id": f"p{p}", "source": src, "text": f"{verdicts[rng.integers(len(verdicts))]} reply {i} "
             + " ".join(rng.choice(["a", "b", "c", "d", "e"], size=rng.integers(1, 8)))}
            for p in range(12) for src in ("real", "synthetic") for i in range(int(rng.integers(3, 9)))]
    df = pd.DataFrame(rows)
    return df, rng.normal(size=(len(df), 16)).astype(np.float32)


def diversity_outputs(df: pd.DataFrame, emb: np.ndarray) -> dict:
    sub, sub_emb = diversity.subsample_groups(df, emb, seed=3)
    per_post = diversity.per_post_diversity(sub, sub_emb)
    return {
        "subsample": sub,
        "per_post": per_post,
        "summary": diversity.summarise(per_post, n_boot=300, seed=1),
        "paired": pd.DataFrame([diversity.paired_difference(per_post, m, "synthetic", "real", n_boot=300, seed=1)
                                for m in diversity.MEASURES]),
    }


def test_diversity_measures_identical_on_same_inputs():
    df, emb = diversity_inputs()
    a, b = diversity_outputs(df, emb), diversity_outputs(df.copy(), emb.copy())
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True)
    assert a["per_post"]["vendi"].notna().any() and a["summary"]["lo"].notna().any()  # not vacuous


SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    sys.path.insert(0, sys.argv[2])
    from test_determinism import diversity_inputs, diversity_outputs
    from simlib import config, steps
    out = {}
    for k, v in diversity_outputs(*diversity_inputs()).items():
        out[k] = hashlib.sha256(v.to_json(orient="split", double_precision=15).encode()).hexdigest()
    if sys.argv[3] == "1":
        cfg = config.load("smoke", {"work_dir": sys.argv[1]})
        df, report = steps.real_responses(cfg)
        out["table"] = hashlib.sha256(df.to_json(orient="split").encode()).hexdigest()
        out["report"] = json.dumps(report, sort_keys=True)
        out["files"] = sorted(p.name for p in (cfg.path("data", "x").parent).iterdir())
        out["bytes"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cfg.path("data", "x").parent.iterdir()}
    print(json.dumps(out))
""")


def _run(work_dir: Path, hash_seed: str, with_data: bool) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "SIMLIB_OFFLINE": "1"}
    if with_data:
        env["SIMLIB_DATA_DIR"] = str(REAL_ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(work_dir), str(Path(__file__).parent),
                           "1" if with_data else "0"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("with_data", [pytest.param(True, marks=needs_real), False], ids=["data+diversity", "diversity"])
def test_two_processes_two_work_dirs_identical(tmp_path, with_data):
    a = _run(tmp_path / "a", "1", with_data)
    b = _run(tmp_path / "b", "2", with_data)
    assert a == b
    if with_data:
        assert len(a["files"]) == 2 and json.loads(a["report"])["files"] == config.load("smoke").n_posts


@needs_real
def test_data_step_in_process_identical_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLIB_DATA_DIR", str(REAL_ROOT))
    monkeypatch.setenv("SIMLIB_OFFLINE", "1")
    runs = [steps.real_responses(config.load("smoke", {"work_dir": str(tmp_path / w)})) for w in ("a", "b")]
    (df_a, rep_a), (df_b, rep_b) = runs
    pd.testing.assert_frame_equal(df_a, df_b, check_exact=True)
    assert rep_a == rep_b and len(df_a) > 0
    # a warm run (read from the cache) returns exactly what the cold run computed, dtypes included
    # (it used to come back with str/int64/float64 columns instead of the schema's object/Int64/boolean)
    df_c, rep_c = steps.real_responses(config.load("smoke", {"work_dir": str(tmp_path / "a")}))
    assert rep_c == rep_a
    pd.testing.assert_frame_equal(df_c, df_a, check_exact=True)
    assert df_c.dtypes.astype(str).to_dict() == {**COLUMNS, "split": "object"}


# ------------------------------------------------------------------------------ models (slow)
@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_embeddings_identical(one_thread):
    from simlib.lm.embed import embed_texts

    texts = ["NTA, she was rude.", "YTA and you know it", "", "Honestly ESH here, talk to each other."]
    a, b = embed_texts(texts), embed_texts(list(texts))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    # another batch size changes only the rounding (padding is masked out)
    np.testing.assert_allclose(embed_texts(texts, batch_size=1), a, atol=1e-5)


@pytest.mark.slow
def test_logprob_scoring_identical(one_thread, tmp_path):
    from simlib.lm import logprob as lp
    from simlib.lm.weights import load_causal_lm

    tok, model = load_causal_lm("gemma3-270m")
    prompt = lp.build_prompt("AITA for eating my roommate's leftovers?", "They were in the fridge for a week.",
                             "AITAH", tok, max_post_chars=200)
    reqs = [lp.ScoreRequest("p1", "r1", prompt, "NTA, a week is long enough."),
            lp.ScoreRequest("p1", "r2", prompt, "YTA. Ask first next time, it is not that hard.")]
    a = lp.score(reqs, tok, model, max_response_tokens=24)
    b = lp.score(list(reqs), tok, model, max_response_tokens=24)
    assert a == b and all(np.isfinite(r["mean_logprob"]) for r in a)  # bit-identical, float for float
    # one request per pass: other shapes, same values up to float rounding (not bitwise)
    c = lp.score(reqs, tok, model, max_response_tokens=24, batch_size=1)
    for x, y in zip(a, c):
        assert x["n_tokens"] == y["n_tokens"] and abs(x["mean_logprob"] - y["mean_logprob"]) < 1e-4
    # the cached path returns what was computed, and a second call reads it back unchanged
    store = tmp_path / "lp.jsonl"
    first = lp.score_cached(reqs, store, "gemma3-270m", tokenizer=tok, model=model, max_response_tokens=24)
    again = lp.score_cached(reqs, store, "gemma3-270m", max_response_tokens=24)
    assert [r["mean_logprob"] for r in first] == [r["mean_logprob"] for r in again] == [r["mean_logprob"] for r in a]
