"""Samples that share their messages go as one request with ``n`` (simlib.generate.grouping), against
the stub of tests/stub_openai.py: grouping, per-choice records under today's keys (a store written one
request per sample, tests/fixtures/store_one_request_per_sample.jsonl, is read unchanged), resuming
with the missing choices only, partial answers, and usage split so that totals stay right."""
from __future__ import annotations

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
from stub_openai import StubServer, completion  # noqa: E402

from simlib.generate import generate, make_requests  # noqa: E402
from simlib.generate.grouping import choice_fields, group_requests, requests_per_post, split_usage  # noqa: E402
from simlib.generate.prompts import persona_kwargs  # noqa: E402

FAST = dict(progress=False, backoff_base=0.01, backoff_max=0.05, timeout=5.0)
FIXTURE = Path(__file__).parent / "fixtures" / "store_one_request_per_sample.jsonl"
POSTS = [{"id": f"p{i}", "title": f"AITA for thing {i}?", "body": f"Story number {i}.", "subreddit": "AmItheAsshole"}
         for i in range(8)]
KW = dict(temperature=0.7, max_tokens=16, seed=100)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def tag(req) -> str:  # the stub's script key: the content of the last message
    return req.messages[-1]["content"]


@pytest.fixture
def stub():
    with StubServer() as s:
        yield s


# --------------------------------------------------------------------------- pure grouping


def test_group_requests_runs_follow_the_seeds():
    rs = make_requests(POSTS[:2], ["plain", "humanlike"], 6, "m", **KW)
    groups = group_requests(rs)
    assert [len(g) for g in groups] == [6, 6, 6, 6]  # one per post and style, in the order they came
    assert all(len({(r.post_id, r.style) for r in g}) == 1 for g in groups)
    assert [r.sample_index for r in groups[0]] == list(range(6))
    assert [len(g) for g in group_requests(rs, max_n=4)] == [4, 2] * 4
    # samples 2 and 5 missing: the rest go as the runs their seeds allow
    gaps = [r for r in rs[:6] if r.sample_index not in (2, 5)]
    assert [[r.seed for r in g] for g in group_requests(gaps)] == [[100, 101], [103, 104]]
    assert [len(g) for g in group_requests(make_requests(POSTS[:1], "plain", 3, "m", seed=None))] == [3]
    with pytest.raises(ValueError, match="max_n must be at least 1, got 0"):
        group_requests(rs, max_n=0)


def test_per_sample_prompts_stay_single():
    rs = make_requests(POSTS[:2], ["plain", "persona"], 4, "m", style_kwargs={"persona": persona_kwargs}, **KW)
    groups = group_requests(rs)
    assert sorted(len(g) for g in groups) == [1] * 8 + [4, 4]
    assert all(g[0].style == "persona" for g in groups if len(g) == 1)
    assert requests_per_post("persona", 4, 8) == 4 and requests_per_post("seeded", 4, 8) == 4
    assert requests_per_post("plain", 10, 4) == 3 and requests_per_post("plain", 10, 1) == 10


def test_split_usage_adds_up():
    for usage, texts in [({"prompt_tokens": 101, "completion_tokens": 50}, ["a", "bbbb", "", "cc"]),
                         ({"prompt_tokens": 7, "completion_tokens": 0}, ["x", "y", "z"]),
                         ({"prompt_tokens": 0, "completion_tokens": 3}, ["", "", "", "", ""])]:
        shares = split_usage(usage, texts)
        assert len(shares) == len(texts)
        for k in ("prompt_tokens", "completion_tokens"):
            assert sum(s[k] for s in shares) == usage[k] and all(s[k] >= 0 for s in shares)
    shares = split_usage({"prompt_tokens": 100, "completion_tokens": 30}, ["a" * 9, "a" * 19])
    assert [s["completion_tokens"] for s in shares] == [10, 20]  # by the length of each choice
    assert [s["prompt_tokens"] for s in shares] == [50, 50]


def test_llama_server_usage_of_the_first_choice_is_completed_by_estimates():
    """llama-server's usage with n counts choice 0 only (its ``timings`` give it away): the others are
    estimated, max_tokens for a reply cut at the limit, and the records say so."""
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "a" * 40}, "finish_reason": "stop"},
                        {"index": 1, "message": {"role": "assistant", "content": "b" * 20}, "finish_reason": "stop"},
                        {"index": 2, "message": {"role": "assistant", "content": "c" * 90}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 10}, "timings": {"predicted_n": 10}}
    fields, estimated = choice_fields(body, 3, max_tokens=16)
    assert estimated and [f["usage"]["completion_tokens"] for f in fields] == [10, 5, 16]
    assert sum(f["usage"]["prompt_tokens"] for f in fields) == 30  # the prompt was read once
    fields, estimated = choice_fields({k: v for k, v in body.items() if k != "timings"}, 3, max_tokens=16)
    assert not estimated and sum(f["usage"]["completion_tokens"] for f in fields) == 10  # OpenAI: the total, split


# --------------------------------------------------------------------------- against the stub


def test_same_messages_one_call_with_n_mixed_styles_apart(stub, tmp_path):
    rs = make_requests(POSTS[:2], ["plain", "persona"], 4, "stub-model", style_kwargs={"persona": persona_kwargs},
                       **KW)
    rep = generate(rs, tmp_path / "s.jsonl", stub.base_url, concurrency=4, **FAST)
    assert rep.complete and rep.n_ok == 16
    sent = stub.state.requests
    assert sorted(b.get("n", 1) for b in sent) == [1] * 8 + [4, 4]  # plain: one call a post; persona: one a sample
    assert all(b["seed"] == 100 for b in sent if b.get("n"))
    recs = lines(tmp_path / "s.jsonl")
    assert {r["key"] for r in recs} == {r.key for r in rs}
    for r in recs:  # choice j answered with seed 100 + j, stored under sample j's key and seed
        assert f"seed={r['seed']} " in r["text"] and r["seed"] == 100 + r["sample_index"]
        assert r.get("n_choices", 1) == (4 if r["style"] == "plain" else 1)


def test_store_written_one_request_per_sample_is_read_unchanged(stub, tmp_path):
    """The fixture was written by the client before it sent ``n`` (samples 0-2 of two posts, two styles)."""
    store = tmp_path / "s.jsonl"
    store.write_bytes(FIXTURE.read_bytes())
    before = lines(store)
    assert len(before) == 12 and all("n_choices" not in r for r in before)
    rep = generate(make_requests(POSTS[:2], ["plain", "humanlike"], 3, "stub-model", **KW), store, stub.base_url,
                   concurrency=6, **FAST)
    assert (rep.n_cached, rep.n_ok) == (12, 0) and stub.state.requests == []
    # two more samples: only they are asked for, as one request with n = 2 seeded where sample 3 is
    rs = make_requests(POSTS[:2], ["plain", "humanlike"], 5, "stub-model", **KW)
    rep = generate(rs, store, stub.base_url, concurrency=6, **FAST)
    assert (rep.n_cached, rep.n_ok) == (12, 8)
    assert [(b["n"], b["seed"]) for b in stub.state.requests] == [(2, 103)] * 4
    after = lines(store)
    assert after[:12] == before and {r["key"] for r in after} == {r.key for r in rs}


def test_resume_with_gaps_asks_for_the_missing_choices_only(stub, tmp_path):
    store = tmp_path / "s.jsonl"
    rs = make_requests(POSTS[:1], "plain", 6, "stub-model", **KW)
    generate([r for r in rs if r.sample_index in (0, 1, 3)], store, stub.base_url, max_n=1, **FAST)
    stub.state.requests.clear()
    rep = generate(rs, store, stub.base_url, concurrency=6, **FAST)
    assert (rep.n_cached, rep.n_ok) == (3, 3)
    # the two requests are in flight together, so the server may see them in either order
    assert sorted((b.get("n", 1), b["seed"]) for b in stub.state.requests) == [(1, 102), (2, 104)]
    assert {r["key"] for r in lines(store)} == {r.key for r in rs}


def test_a_missing_or_empty_choice_is_asked_for_again_alone(stub, tmp_path):
    store = tmp_path / "s.jsonl"
    rs = make_requests(POSTS[:2], "plain", 4, "stub-model", **KW)
    stub.state.script[tag(rs[0])] = ["short"]  # post 0: the last choice missing
    stub.state.script[tag(rs[4])] = ["null_first"]  # post 1: choice 0 without content
    rep = generate(rs, store, stub.base_url, concurrency=4, **FAST)
    assert rep.complete and rep.n_ok == 8 and rep.n_retries == 2 and rep.retry_reasons == {"malformed": 2}
    def sent(r):
        return [(b.get("n", 1), b["seed"]) for b in stub.state.requests if b["messages"][-1]["content"] == tag(r)]

    assert sent(rs[0]) == [(4, 100), (1, 103)] and sent(rs[4]) == [(4, 100), (1, 100)]
    recs = {r["key"]: r for r in lines(store)}
    assert len(recs) == 8 and all(f"seed={r['seed']} " in r["text"] for r in recs.values())
    assert recs[rs[3].key]["attempts"] == 2 and recs[rs[4].key]["attempts"] == 2 and recs[rs[5].key]["attempts"] == 1


def test_usage_and_cost_split_across_choices_add_up(stub, tmp_path):
    store = tmp_path / "s.jsonl"
    rs = make_requests(POSTS[:3], ["plain", "humanlike"], 5, "stub-model", **KW)
    rep = generate(rs, store, stub.base_url, concurrency=5, price_per_1k_in=1.0, price_per_1k_out=2.0, **FAST)
    sent = [completion(b, b["messages"][-1]["content"])["usage"] for b in stub.state.requests]
    assert len(sent) == 6  # a post's five samples in one request, in each style
    recs = lines(store)
    for k, total in (("prompt_tokens", rep.tokens_in), ("completion_tokens", rep.tokens_out)):
        assert sum(r["usage"][k] for r in recs) == sum(u[k] for u in sent) == total
    assert rep.cost_usd == pytest.approx(rep.tokens_in / 1000 + 2 * rep.tokens_out / 1000)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from simlib.generate import generate, make_requests
    base_url, store = sys.argv[1], sys.argv[2]
    posts = [{"id": f"p{i}", "title": f"AITA for thing {i}?", "body": f"Story number {i}.",
              "subreddit": "AmItheAsshole"} for i in range(8)]
    rs = make_requests(posts, "plain", 4, "stub-model", temperature=0.7, max_tokens=16, seed=100)
    generate(rs, store, base_url, concurrency=4, progress=False, timeout=30)
    """
)


def test_kill_mid_run_resumes_missing_groups_only(stub, tmp_path):
    stub.state.delay_s = 0.3
    store = tmp_path / "s.jsonl"
    (tmp_path / "run.py").write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), stub.base_url, str(store)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (store.exists() and len(lines(store)) >= 8):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "nothing stored in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    stored = {r["key"] for r in lines(store)}
    assert 8 <= len(stored) < 32 and len(stored) % 4 == 0  # a request's choices are stored together
    n_before = len(stub.state.requests)
    stub.state.delay_s = 0.0
    rs = make_requests(POSTS, "plain", 4, "stub-model", **KW)
    rep = generate(rs, store, stub.base_url, concurrency=4, **FAST)
    assert rep.n_cached == len(stored) and rep.n_ok == 32 - len(stored)
    resent = stub.state.requests[n_before:]
    done_posts = {r["post_id"] for r in lines(store)[: len(stored)]}
    assert len(resent) == 8 - len(done_posts) and all(b["n"] == 4 for b in resent)
    assert sorted(r["key"] for r in lines(store)) == sorted(r.key for r in rs)  # one record per key
