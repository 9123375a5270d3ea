"""The parallel llama.cpp server: batching must not change what a request gets back."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("llama_cpp")

from simlib.generate import generate, load_store, make_requests  # noqa: E402
from simlib.generate.parallel_server import Engine, _Job, _parse  # noqa: E402
from simlib.generate.server import LocalServer, model_alias  # noqa: E402
from simlib.lm.weights import smollm2_gguf  # noqa: E402

pytestmark = pytest.mark.slow

POSTS = [
    {"post_id": "p1", "subreddit": "AITAH", "title": "AITA for not lending my car to my brother?",
     "body": "He crashed the last one and never paid for it. Now he is angry with me."},
    {"post_id": "p2", "subreddit": "AITAH", "title": "AITA for skipping my friend's wedding?",
     "body": "It was on the day of my final exam, which I could not move. She says I ruined her day."},
]


@pytest.fixture(scope="module")
def engine():
    eng = Engine(str(smollm2_gguf()), slots=4, n_threads=2, seed=0)
    threading.Thread(target=eng.loop, daemon=True).start()
    return eng


def _messages(post: dict) -> list[dict]:
    return [{"role": "system", "content": "You are a Reddit user. Reply in one or two sentences."},
            {"role": "user", "content": f"{post['title']}\n\n{post['body']}"}]


def _ask(engine: Engine, post: dict, *, temperature: float, seed: int, n: int = 1, max_tokens: int = 20) -> list[str]:
    job = _parse({"messages": _messages(post), "temperature": temperature, "top_p": 0.95, "seed": seed, "n": n,
                  "max_tokens": max_tokens}, engine)
    engine.submit(job).done.wait(120)
    assert job.error is None and job.done.is_set()
    return [c.text for c in job.choices]


def test_batched_greedy_replies_equal_one_at_a_time(engine):
    """Sequences decoded together stay apart: greedy replies are those of one-at-a-time decoding.

    (Sampled replies are not compared: the floating-point sums of a batch differ in their last bits
    from a single sequence's, which can flip a sampled token; an argmax is far more stable.)
    """
    alone = {p["post_id"]: _ask(engine, p, temperature=0, seed=0)[0] for p in POSTS}
    greedy = [_parse({"messages": _messages(p), "temperature": 0, "max_tokens": 20}, engine) for p in POSTS]
    sampled = [_parse({"messages": _messages(p), "temperature": 0.7, "top_p": 0.95, "seed": 3, "n": 2,
                       "max_tokens": 20}, engine) for p in POSTS]
    for j in [*sampled, *greedy]:
        engine.submit(j)
    for j in [*sampled, *greedy]:
        assert j.done.wait(120) and j.error is None
    assert [j.choices[0].text for j in greedy] == [alone["p1"], alone["p2"]]
    assert alone["p1"] != alone["p2"]
    for j in sampled:  # choice j is seeded seed + j, so the two differ
        assert j.choices[0].text != j.choices[1].text
        assert all(0 < c.completion_tokens <= 20 and c.finish_reason in ("stop", "length") for c in j.choices)


def test_seed_repeats_a_reply(engine):
    first = _ask(engine, POSTS[0], temperature=0.7, seed=11)
    assert _ask(engine, POSTS[0], temperature=0.7, seed=11) == first != _ask(engine, POSTS[0], temperature=0.7, seed=12)


def test_greedy_reply_equals_llama_cpp_python(engine):
    """Same template, same sampler chain: llama-cpp-python's own chat completion gives the same greedy text."""
    from llama_cpp import Llama

    llm = Llama(str(smollm2_gguf()), n_ctx=1024, n_threads=2, verbose=False, chat_format="chatml")
    ref = llm.create_chat_completion(_messages(POSTS[0]), temperature=0, max_tokens=20, repeat_penalty=1.1)
    assert _ask(engine, POSTS[0], temperature=0, seed=0)[0] == ref["choices"][0]["message"]["content"]


def test_too_long_request_is_refused(engine):
    job = _parse({"messages": _messages(POSTS[0]), "max_tokens": 10_000}, engine)
    assert engine.submit(job).done.wait(10)
    assert job.error_code == 400 and "exceed" in job.error
    with pytest.raises(ValueError, match="stream"):
        _parse({"messages": _messages(POSTS[0]), "stream": True}, engine)


def test_local_server_parallel_end_to_end(tmp_path):
    with LocalServer(backend="parallel", slots=4, seed=0) as srv:
        assert srv.model == model_alias("parallel") != model_alias("llama_cpp")
        reqs = make_requests(POSTS, ["plain"], 3, srv.model, max_tokens=16, seed=1, temperature=0.7)
        t0 = time.monotonic()
        rep = generate(reqs, tmp_path / "s.jsonl", srv.base_url, srv.model, concurrency=srv.slots, progress=False,
                       timeout=120)
        assert rep.n_ok == 6 and rep.n_failed == 0, rep
        df = load_store(tmp_path / "s.jsonl")
        assert (df["text"].str.len() > 0).all() and (df["completion_tokens"] <= 16).all()
        assert df.groupby("post_id")["text"].nunique().min() > 1  # seeds differ, so do replies
        assert time.monotonic() - t0 < 120
        body = json.dumps({"model": srv.model, "messages": _messages(POSTS[0]), "n": 2, "max_tokens": 8}).encode()
        r = urllib.request.urlopen(urllib.request.Request(f"{srv.base_url}/chat/completions", body,
                                                          {"Content-Type": "application/json"}), timeout=60)
        out = json.loads(r.read())
        assert len(out["choices"]) == 2 and out["usage"]["completion_tokens"] <= 16
        bad = json.dumps({"messages": []}).encode()
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(urllib.request.Request(f"{srv.base_url}/chat/completions", bad), timeout=30)
        assert ei.value.code == 400
