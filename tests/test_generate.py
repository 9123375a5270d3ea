"""Tests of simlib.generate against a local stub of the OpenAI API (tests/stub_openai.py).

Everything binds 127.0.0.1. The real llama-server is tested in tests/test_llama_server.py.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from stub_openai import StubServer  # noqa: E402

from simlib.cache import JsonlStore  # noqa: E402
from simlib.generate import (  # noqa: E402
    STYLES,
    GenRequest,
    build_messages,
    failures_path,
    generate,
    get_style,
    load_failures,
    load_store,
    make_requests,
    prompt_hash,
)
from simlib.generate import batch as gbatch  # noqa: E402
from simlib.generate import prompts as gprompts  # noqa: E402
from simlib.lm.weights import smollm2_gguf  # noqa: E402
from simlib.text import truncate_post  # noqa: E402

FAST = dict(progress=False, backoff_base=0.01, backoff_max=0.05, timeout=5.0)


def reqs(n: int, model: str = "stub-model", seed: int | None = 100, **kw) -> list[GenRequest]:
    """n requests whose last message (the stub's tag) is ``post-<i>``."""
    return [
        GenRequest(post_id=f"p{i}", style="plain", sample_index=0, messages=[{"role": "user", "content": f"post-{i}"}],
                   model=model, temperature=0.7, top_p=1.0, max_tokens=16, seed=seed, **kw)
        for i in range(n)
    ]


def raw_lines(path: Path) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


@pytest.fixture
def stub():
    with StubServer() as s:
        yield s


# --------------------------------------------------------------------------- prompts

POST = {"id": "abc", "title": "AITA for eating my roommate's leftovers?", "body": "So yesterday I came home...",
        "subreddit": "AmItheAsshole"}
NON_AITA = {"id": "def", "title": "What's the best budget keyboard?", "body": "Looking for one under $50.",
            "subreddit": "r/MechanicalKeyboards"}


def test_styles_registry_and_unknown_style():
    assert {"plain", "humanlike"} <= set(STYLES)
    with pytest.raises(KeyError) as ei:
        get_style("nope")
    assert "humanlike" in str(ei.value) and "plain" in str(ei.value)
    with pytest.raises(KeyError):
        build_messages("no-such-style", POST)


def test_plain_and_humanlike_messages():
    plain = build_messages("plain", POST)
    assert [m["role"] for m in plain] == ["user"]
    assert "write a comment" in plain[0]["content"].lower()
    assert POST["title"] in plain[0]["content"] and "r/AmItheAsshole" in plain[0]["content"]

    hl = build_messages("humanlike", POST)
    assert [m["role"] for m in hl] == ["system", "user"]
    sys_msg = hl[0]["content"]
    for verdict in ("NTA", "YTA", "ESH", "NAH", "INFO"):
        assert verdict in sys_msg
    hl2 = build_messages("humanlike", NON_AITA)
    assert "NTA" not in hl2[0]["content"]
    assert "r/MechanicalKeyboards" in hl2[1]["content"]
    # AITA detected from the title too
    assert "NTA" in build_messages("humanlike", {**NON_AITA, "title": "WIBTA if I quit"})[0]["content"]
    # unexpected builder kwargs are an error, not silently ignored
    with pytest.raises(TypeError):
        build_messages("plain", POST, persona="a teenager")


def test_prompt_hash_tracks_template_text():
    h_plain, h_hl = prompt_hash("plain"), prompt_hash("humanlike")
    assert h_plain != h_hl and h_plain == prompt_hash("plain")
    st_ = get_style("plain")
    edited = gprompts.PromptStyle("plain_edited", {**st_.templates, "user": st_.templates["user"] + " Be brief."},
                                  st_.builder)
    same_text = gprompts.PromptStyle("plain_edited", dict(st_.templates), st_.builder)
    assert edited.hash != same_text.hash


def test_register_style_with_kwargs():
    def build(style, title, body, sub, *, persona):
        return [{"role": "system", "content": style.templates["system"].format(persona=persona)},
                {"role": "user", "content": title}]

    s = gprompts.PromptStyle("persona_test", {"system": "You are {persona}."}, build)
    gprompts.register_style(s)
    try:
        with pytest.raises(ValueError):
            gprompts.register_style(s)
        msgs = build_messages("persona_test", POST, persona="a retired teacher")
        assert msgs[0]["content"] == "You are a retired teacher."
        rs = make_requests([POST], ["persona_test"], 1, "m", style_kwargs={"persona_test": {"persona": "x"}})
        assert rs[0].messages[0]["content"] == "You are x."
    finally:
        del STYLES["persona_test"]


def test_truncation_examples():
    assert truncate_post("short", 100) == "short"
    out = truncate_post("alpha beta gamma delta epsilon", 20)
    assert out.endswith(" […]") and len(out) <= 20 and out.startswith("alpha beta")
    assert not out[: -len(" […]")].endswith(" ")
    # one giant token: hard cut
    out = truncate_post("x" * 100, 20)
    assert out == "x" * 16 + " […]"
    long_post = {**POST, "body": "word " * 2000}
    msgs = build_messages("plain", long_post, max_post_chars=500)
    assert "[…]" in msgs[0]["content"] and len(msgs[0]["content"]) < 800


# --------------------------------------------------------------------------- requests


def test_request_key_covers_every_field():
    base = reqs(1)[0]
    variants = [
        dataclasses.replace(base, **{k: v})
        for k, v in dict(post_id="q", style="humanlike", sample_index=1, model="other", temperature=0.1, top_p=0.5,
                         max_tokens=17, seed=7, messages=[{"role": "user", "content": "post-X"}]).items()
    ]
    keys = {base.key} | {v.key for v in variants}
    assert len(keys) == 1 + len(variants)
    assert base.key == reqs(1)[0].key


def test_make_requests_seeds_and_shape():
    rs = make_requests([POST, NON_AITA], ["plain", "humanlike"], 3, "m", seed=10, max_tokens=48)
    assert len(rs) == 12 and len({r.key for r in rs}) == 12
    assert sorted({r.seed for r in rs}) == [10, 11, 12]
    assert all(r.seed == 10 + r.sample_index for r in rs)
    assert all(r.max_tokens == 48 for r in rs)
    assert "seed" not in make_requests([POST], "plain", 1, "m", seed=None)[0].body()


# --------------------------------------------------------------------------- generate


def test_generate_happy_path_and_cache(stub, tmp_path):
    store = tmp_path / "out.jsonl"
    rs = reqs(10)
    rep = generate(rs, store, stub.base_url, concurrency=4, **FAST)
    assert (rep.n_requested, rep.n_cached, rep.n_ok, rep.n_failed, rep.n_retries) == (10, 0, 10, 0, 0)
    assert rep.complete and rep.tokens_in > 0 and rep.tokens_out > 0 and rep.cost_usd is None
    lines = raw_lines(store)
    assert len(lines) == 10 and {r["key"] for r in lines} == {r.key for r in rs}
    rec = lines[0]
    for f in ("key", "post_id", "style", "sample_index", "model", "text", "finish_reason", "usage", "latency_s",
              "created"):
        assert f in rec
    assert set(rec["usage"]) == {"prompt_tokens", "completion_tokens"}
    # one request per sample, seed = base seed + sample index, sampling params sent
    assert len(stub.state.requests) == 10
    assert all(b["seed"] == 100 and b["temperature"] == 0.7 and b["max_tokens"] == 16 and "n" not in b
               for b in stub.state.requests)
    df = load_store(store)
    assert len(df) == 10 and {"prompt_tokens", "completion_tokens", "text"} <= set(df.columns)
    assert df.set_index("post_id").loc["p3", "text"].startswith("reply to post-3")
    # re-run: everything cached, nothing sent
    rep2 = generate(rs + reqs(2), store, stub.base_url, **FAST)  # duplicates in the input are collapsed
    assert (rep2.n_requested, rep2.n_cached, rep2.n_ok) == (10, 10, 0)
    assert len(stub.state.requests) == 10


def test_cost_estimate(stub, tmp_path):
    rep = generate(reqs(3), tmp_path / "s.jsonl", stub.base_url, price_per_1k_in=1.0, price_per_1k_out=2.0, **FAST)
    assert rep.cost_usd == pytest.approx(rep.tokens_in / 1000 + 2 * rep.tokens_out / 1000)


def test_retries_on_transient_failures(stub, tmp_path):
    """429, 500, dropped connection, truncated JSON, empty choices, timeout: all recovered."""
    store = tmp_path / "s.jsonl"
    stub.state.slow_s = 1.5
    scripts = {
        "post-0": ["429", "429"],
        "post-1": ["500"],
        "post-2": ["drop"],
        "post-3": ["truncated", "500"],
        "post-4": ["empty"],
        "post-5": ["slow"],
    }
    for tag, s in scripts.items():
        stub.state.script[tag] = list(s)
    rs = reqs(8)
    rep = generate(rs, store, stub.base_url, concurrency=4, max_retries=3, **{**FAST, "timeout": 0.5})
    assert rep.n_ok == 8 and rep.n_failed == 0 and rep.complete
    n_fail = sum(len(s) for s in scripts.values())
    assert rep.n_retries == n_fail
    assert rep.retry_reasons.get("429") == 2 and rep.retry_reasons.get("5xx") == 2
    assert rep.retry_reasons.get("timeout") == 1
    assert rep.retry_reasons.get("malformed", 0) >= 2  # truncated + empty (+ drop, depending on where it surfaces)
    assert sum(rep.retry_reasons.values()) == n_fail
    for i in range(8):
        assert stub.state.tag_counts[f"post-{i}"] == 1 + len(scripts.get(f"post-{i}", []))
    lines = raw_lines(store)
    assert len(lines) == 8 and len({r["key"] for r in lines}) == 8
    by_post = {r["post_id"]: r for r in lines}
    assert by_post["p0"]["attempts"] == 3 and by_post["p7"]["attempts"] == 1
    assert not failures_path(store).exists()


def test_retry_after_is_honoured(stub, tmp_path):
    stub.state.retry_after = "1"
    stub.state.script["post-0"] = ["429"]
    t0 = time.monotonic()
    rep = generate(reqs(1), tmp_path / "s.jsonl", stub.base_url, **FAST)
    assert rep.n_ok == 1 and rep.n_retries == 1
    assert time.monotonic() - t0 >= 1.0  # backoff alone would be ~0.01 s


def test_retry_after_is_capped(stub, tmp_path):
    stub.state.retry_after = "3600"
    stub.state.script["post-0"] = ["429"]
    t0 = time.monotonic()
    rep = generate(reqs(1), tmp_path / "s.jsonl", stub.base_url, retry_after_max=0.2, **FAST)
    assert rep.n_ok == 1 and time.monotonic() - t0 < 5


def test_permanent_failure_recorded_then_retried_next_run(stub, tmp_path):
    store = tmp_path / "s.jsonl"
    stub.state.always["post-2"] = "500"
    rs = reqs(4)
    rep = generate(rs, store, stub.base_url, max_retries=2, **FAST)
    assert (rep.n_ok, rep.n_failed, rep.n_retries) == (3, 1, 2)
    assert rep.failed_keys == [rs[2].key] and not rep.complete
    assert stub.state.tag_counts["post-2"] == 3
    fails = raw_lines(failures_path(store))
    assert len(fails) == 1 and fails[0]["request_key"] == rs[2].key
    assert fails[0]["error_type"] == "5xx" and fails[0]["status_code"] == 500 and "boom" in fails[0]["error"]
    assert fails[0]["attempts"] == 3
    # next run: only the failed key is sent, and now it works
    del stub.state.always["post-2"]
    before = dict(stub.state.tag_counts)
    rep2 = generate(rs, store, stub.base_url, max_retries=2, **FAST)
    assert (rep2.n_cached, rep2.n_ok, rep2.n_failed) == (3, 1, 0)
    assert {t: c - before.get(t, 0) for t, c in stub.state.tag_counts.items() if c != before.get(t, 0)} == {"post-2": 1}
    assert len(raw_lines(store)) == 4
    lf = load_failures(store)
    assert len(lf) == 1 and bool(lf["resolved"].iloc[0])


def test_client_errors_are_not_retried(stub, tmp_path):
    stub.state.always["post-0"] = "400"
    rep = generate(reqs(1), tmp_path / "s.jsonl", stub.base_url, max_retries=5, **FAST)
    assert (rep.n_ok, rep.n_failed, rep.n_retries) == (0, 1, 0)
    assert stub.state.tag_counts["post-0"] == 1


def test_api_key_canary_never_written(stub, tmp_path, monkeypatch):
    canary = "sk-CANARY-7f3a9b2e-do-not-store"
    monkeypatch.setenv("SIMLIB_TEST_KEY", canary)
    store = tmp_path / "s.jsonl"
    stub.state.always["post-1"] = "echo_auth_500"  # the server quotes the key back in an error
    stub.state.script["post-2"] = ["429"]
    rep = generate(reqs(3), store, stub.base_url, api_key_env="SIMLIB_TEST_KEY", max_retries=1, **FAST)
    assert rep.n_ok == 2 and rep.n_failed == 1
    assert all(h == f"Bearer {canary}" for h in stub.state.auth_headers)  # the key was used ...
    for p in tmp_path.rglob("*"):  # ... and written nowhere
        if p.is_file():
            assert canary not in p.read_text(errors="replace"), p
    assert canary not in str(rep) and canary not in json.dumps(rep.to_dict())
    assert "***" in raw_lines(failures_path(store))[0]["error"]


def test_default_local_key_when_env_unset(stub, tmp_path, monkeypatch):
    monkeypatch.delenv("SIMLIB_UNSET_KEY", raising=False)
    generate(reqs(1), tmp_path / "s.jsonl", stub.base_url, api_key_env="SIMLIB_UNSET_KEY", **FAST)
    assert stub.state.auth_headers == ["Bearer sk-local"]


def test_sync_wrapper_inside_running_event_loop(stub, tmp_path):
    """As in a Jupyter cell: generate() called while an event loop runs in this thread."""

    async def cell():
        assert asyncio.get_running_loop()
        return generate(reqs(3), tmp_path / "s.jsonl", stub.base_url, **{**FAST, "progress": True})

    rep = asyncio.run(cell())
    assert rep.n_ok == 3


def test_model_filled_and_checked(stub, tmp_path):
    rs = reqs(2, model=None)
    rep = generate(rs, tmp_path / "s.jsonl", stub.base_url, "served-model", **FAST)
    assert rep.n_ok == 2 and all(b["model"] == "served-model" for b in stub.state.requests)
    with pytest.raises(ValueError):
        generate(reqs(1, model="a"), tmp_path / "t.jsonl", stub.base_url, "b", **FAST)
    with pytest.raises(ValueError):
        generate(reqs(1, model=None), tmp_path / "t.jsonl", stub.base_url, **FAST)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from simlib.generate import GenRequest, generate
    base_url, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rs = [GenRequest(post_id=f"p{i}", style="plain", sample_index=0,
                     messages=[{"role": "user", "content": f"post-{i}"}], model="stub-model",
                     temperature=0.7, top_p=1.0, max_tokens=16, seed=100) for i in range(n)]
    generate(rs, store, base_url, concurrency=2, progress=False, timeout=30)
    """
)


def test_kill_mid_run_then_resume(stub, tmp_path):
    n = 16
    stub.state.delay_s = 0.15
    store = tmp_path / "s.jsonl"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), stub.base_url, str(store), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if store.exists() and len(raw_lines(store)) >= 4:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    stored = {r["key"] for r in raw_lines(store)}
    assert 4 <= len(stored) < n, "kill came too late to test resuming"
    sent_before = dict(stub.state.tag_counts)
    # resume in-process
    stub.state.delay_s = 0.0
    rs = reqs(n)
    rep = generate(rs, store, stub.base_url, **FAST)
    assert rep.n_cached == len(stored) and rep.n_ok == n - len(stored) and rep.n_failed == 0
    resent = {t for t, c in stub.state.tag_counts.items() if c > sent_before.get(t, 0)}
    missing_tags = {f"post-{i}" for i, r in enumerate(rs) if r.key not in stored}
    assert resent == missing_tags  # only the missing ones were requested again
    lines = raw_lines(store)
    assert len(lines) == n and len({r["key"] for r in lines}) == n  # exactly one response per key
    assert {r["key"] for r in JsonlStore(store)} == {r.key for r in rs}


# --------------------------------------------------------------------------- batch


def test_batch_payload_and_parse_pure():
    rs = reqs(3)
    lines = [json.loads(x) for x in gbatch.build_batch_jsonl(rs).decode().splitlines()]
    assert [x["custom_id"] for x in lines] == [r.key for r in rs]
    assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
    assert lines[0]["body"]["seed"] == 100 and lines[0]["body"]["messages"][0]["content"] == "post-0"
    assert "max_completion_tokens" in gbatch.batch_line(rs[0], token_param="max_completion_tokens")["body"]
    by_key = {r.key: r for r in rs}
    ok = {"custom_id": rs[0].key, "response": {"status_code": 200, "body": {
        "model": "m", "created": 1, "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}}, "error": None}
    bad = {"custom_id": rs[1].key, "response": {"status_code": 429, "body": {"error": {"message": "slow down"}}}}
    err = {"custom_id": rs[2].key, "response": None, "error": {"code": "expired", "message": "not run"}}
    unknown = {**ok, "custom_id": "zzz"}
    text = "\n".join(json.dumps(x) for x in (ok, bad, err, unknown)) + "\n{torn"
    recs, fails = gbatch.parse_batch_output(text, by_key, run_id="b1")
    assert [r["key"] for r in recs] == [rs[0].key] and recs[0]["text"] == "hi" and recs[0]["source"] == "batch"
    assert recs[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1}
    assert [f["request_key"] for f in fails] == [rs[1].key, rs[2].key]
    assert fails[0]["error_type"] == "batch:429" and "slow down" in fails[0]["error"]
    assert fails[1]["error_type"] == "batch:expired"


def test_batch_end_to_end_with_failures_and_rerun(stub, tmp_path, monkeypatch):
    canary = "sk-CANARY-batch-1234"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    store = tmp_path / "b.jsonl"
    stub.state.batch_fail = {"post-4"}
    rs = reqs(6)
    rep = gbatch.run_batch(rs, store, stub.base_url, poll_interval=0.01, timeout=10, progress=False,
                           price_per_1k_in=0.5, price_per_1k_out=1.0)
    assert rep.mode == "batch" and (rep.n_requested, rep.n_ok, rep.n_failed) == (6, 5, 1)
    assert rep.failed_keys == [rs[4].key] and rep.cost_usd > 0
    recs = raw_lines(store)
    assert len(recs) == 5 and all(r["source"] == "batch" for r in recs)
    assert raw_lines(failures_path(store))[0]["request_key"] == rs[4].key
    # re-run submits only the failed request
    stub.state.batch_fail = set()
    rep2 = gbatch.run_batch(rs, store, stub.base_url, poll_interval=0.01, timeout=10, progress=False)
    assert (rep2.n_cached, rep2.n_ok, rep2.n_failed) == (5, 1, 0)
    assert len(stub.state.batches) == 2
    last_input = stub.state.files[list(stub.state.batches.values())[-1]["input_file_id"]].decode().splitlines()
    assert len(last_input) == 1 and json.loads(last_input[0])["custom_id"] == rs[4].key
    assert len(raw_lines(store)) == 6
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert canary not in p.read_text(errors="replace")


def test_batch_resume_after_timeout(stub, tmp_path):
    store = tmp_path / "b.jsonl"
    rs = reqs(4)
    with pytest.raises(gbatch.BatchTimeout):
        gbatch.run_batch(rs, store, stub.base_url, poll_interval=0.01, timeout=0.0, progress=False)
    state = json.loads(gbatch.batch_state_path(store).read_text())
    assert len(state["batches"]) == 1 and not list(state["batches"].values())[0]["collected"]
    rep = gbatch.run_batch(rs, store, stub.base_url, poll_interval=0.01, timeout=10, progress=False)
    assert rep.n_ok == 4 and rep.n_failed == 0
    assert len(stub.state.batches) == 1  # resumed, not resubmitted
    assert len(raw_lines(store)) == 4


# --------------------------------------------------------------------------- local server


def test_smollm2_gguf_found():
    p = smollm2_gguf()
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and p.stat().st_size > 50_000_000


def test_f16_copy_holds_the_shipped_weights(tmp_path, monkeypatch):
    """llama-server's 16-bit GGUF: the package's Q4_1 values, to within float16 rounding."""
    from simlib.lm.weights import llama_quantize_binary

    if llama_quantize_binary() is None:
        pytest.skip("llama-quantize is not built (make llama-server)")
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    from simlib.lm.weights import smollm2_gguf_f16

    monkeypatch.setenv("SIMLIB_MODEL_CACHE", str(tmp_path))
    f16 = smollm2_gguf_f16()
    assert f16.parent == tmp_path / "gguf" and smollm2_gguf_f16() == f16  # written once, then reused
    q = {t.name: t for t in GGUFReader(smollm2_gguf()).tensors}
    h = {t.name: t for t in GGUFReader(f16).tensors}
    assert q.keys() == h.keys()
    checked = 0
    for name in ("blk.0.attn_q.weight", "blk.29.ffn_down.weight", "token_embd.weight"):
        assert q[name].tensor_type in (GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0)
        assert h[name].tensor_type == GGMLQuantizationType.F16
        want = dequantize(q[name].data, q[name].tensor_type).astype(np.float32)
        got = np.asarray(h[name].data, dtype=np.float32).reshape(want.shape)
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
        assert not np.array_equal(got, np.zeros_like(got))
        checked += 1
    assert checked == 3
