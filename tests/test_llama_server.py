"""llama.cpp's own llama-server as a LocalServer backend: its command line, and what it answers."""
from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from simlib.generate import generate, load_failures, load_store, make_requests
from simlib.generate.local import generate_local
from simlib.lm import weights
from simlib.generate.server import (LLAMA_SERVER_SAMPLING, LocalServer, LocalServerError, llama_server_binary,
                                    model_alias)

POSTS = [
    {"post_id": "p1", "subreddit": "AITAH", "title": "AITA for not lending my car to my brother?",
     "body": "He crashed the last one and never paid for it. Now he is angry with me."},
    {"post_id": "p2", "subreddit": "AITAH", "title": "AITA for skipping my friend's wedding?",
     "body": "It was on the day of my final exam, which I could not move. She says I ruined her day."},
]


def _fake_binary(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "llama-server"
    exe.write_text(f"#!{sys.executable}\n{body}")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLIB_LLAMA_SERVER", str(_fake_binary(tmp_path, "")))
    model = tmp_path / "m.gguf"
    srv = LocalServer(model, backend="llama_server", slots=6, seed=3, n_threads=2, n_ctx=1024)
    srv.port = 1234
    cmd = srv.command()

    def arg(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert cmd[0] == str(tmp_path / "llama-server") and "--cont-batching" in cmd and "--no-webui" in cmd
    assert arg("--parallel") == "6" and srv.slots == 6  # one slot per request in flight
    assert arg("--ctx-size") == str(6 * 1024) and arg("--seed") == "3" and arg("--chat-template") == "chatml"
    assert arg("--threads") == arg("--threads-batch") == "2" and arg("--model") == str(model)
    assert arg("--poll") == arg("--poll-batch") == "0"  # no spinning by default: the CPU is shared
    other = LocalServer(model, slots=2, poll=None)
    other.port = 1
    assert "--poll" not in other.command()
    assert " ".join(LLAMA_SERVER_SAMPLING) in " ".join(cmd)


def test_alias_weights_and_defaults():
    assert model_alias() == "smollm2-135m-instruct-f16-llama-server"  # earlier servers' replies are not reused
    with pytest.raises(ValueError, match="backend must be one of"):
        LocalServer(backend="parallel")
    if weights.llama_quantize_binary() is None and not weights.smollm2_gguf_f16_path().is_file():
        pytest.skip("nothing here writes the 16-bit copy (make llama-server builds llama-quantize)")
    assert LocalServer().model_path.name.endswith(".F16.gguf")


def test_missing_binary_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLIB_LLAMA_SERVER", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="make llama-server"):
        llama_server_binary()


def test_death_reports_log_tail(tmp_path, monkeypatch):
    body = "import sys\nprint('error: failed to load model XYZ', file=sys.stderr)\nsys.exit(1)\n"
    monkeypatch.setenv("SIMLIB_LLAMA_SERVER", str(_fake_binary(tmp_path, body)))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"not a model")
    with pytest.raises(LocalServerError, match="failed to load model XYZ") as ei:
        LocalServer(model, backend="llama_server", startup_timeout=20).start()
    assert "llama-server exited with code 1" in str(ei.value)


# ------------------------------------------------------------------------------ the real binary
def _need_binary() -> None:
    try:
        llama_server_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        weights.smollm2_gguf_f16()  # llama-server's weights, written once by llama-quantize
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def server():
    _need_binary()
    with LocalServer(backend="llama_server", slots=2, seed=0, n_threads=min(2, os.cpu_count() or 1)) as srv:
        yield srv


def _chat(srv: LocalServer, post: dict, **params) -> dict:
    body = {"model": srv.model, "messages": [{"role": "system", "content": "You are a Reddit user. Reply briefly."},
                                             {"role": "user", "content": f"{post['title']}\n\n{post['body']}"}],
            "max_tokens": 16, **params}
    req = urllib.request.Request(f"{srv.base_url}/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_greedy_and_seeded_replies_repeat(server):
    greedy = _chat(server, POSTS[0], temperature=0)
    text = greedy["choices"][0]["message"]["content"]
    assert text.strip() and 0 < greedy["usage"]["completion_tokens"] <= 16
    assert _chat(server, POSTS[0], temperature=0)["choices"][0]["message"]["content"] == text
    first = _chat(server, POSTS[1], temperature=0.7, seed=11)["choices"][0]["message"]["content"]
    assert _chat(server, POSTS[1], temperature=0.7, seed=11)["choices"][0]["message"]["content"] == first
    assert _chat(server, POSTS[1], temperature=0.7, seed=12)["choices"][0]["message"]["content"] != first


@pytest.mark.slow
def test_stop_and_max_tokens_are_honoured(server):
    long = _chat(server, POSTS[0], temperature=0, max_tokens=5)["choices"][0]
    assert long["finish_reason"] == "length"
    cut = _chat(server, POSTS[0], temperature=0, max_tokens=40, stop=[" "])["choices"][0]
    assert cut["finish_reason"] == "stop" and " " not in cut["message"]["content"].strip()


@pytest.mark.slow
def test_n_choices_have_their_own_seeds(server):
    """llama-server seeds choice j of a request seed + j: the choices differ, and the request repeats."""
    texts = [c["message"]["content"] for c in _chat(server, POSTS[0], temperature=0.9, seed=5, n=2)["choices"]]
    assert len(texts) == 2 and texts[0] != texts[1]
    assert [c["message"]["content"] for c in _chat(server, POSTS[0], temperature=0.9, seed=5, n=2)["choices"]] == texts


@pytest.mark.slow
def test_pipeline_client_end_to_end(server, tmp_path):
    reqs = make_requests(POSTS, ["plain"], 3, server.model, max_tokens=12, seed=1, temperature=0.7)
    rep = generate(reqs, tmp_path / "s.jsonl", server.base_url, server.model, concurrency=server.slots,
                   progress=False, timeout=120)
    assert rep.n_ok == 6 and rep.n_failed == 0, rep
    df = load_store(tmp_path / "s.jsonl")
    assert (df["text"].str.len() > 0).all() and (df["completion_tokens"] <= 12).all()
    assert df.groupby("post_id")["text"].nunique().min() > 1  # seeds differ, so do replies


@pytest.mark.slow
def test_benchmark_quick():
    _need_binary()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package
    from benchmarks import bench_llama_server

    r = bench_llama_server.run(quick=True)
    assert r["replies"] == 2 and r["repeats"] == 1 and r["ratio_n_vs_one_per_reply"] > 0
    for arm in bench_llama_server.ARMS:
        assert r[arm]["median_tok_per_s"] > 0 and 0 < r[arm]["completion_tokens"][0] <= 2 * 8
    # the client sends the post's two replies as one request: llama-server reads the prompt once
    grp, one = r["llama_server"], r["llama_server_one_per_reply"]
    assert 0 < grp["prompt_tokens_read"][0] <= r["prompt_tokens_once_per_post"] < one["prompt_tokens_read"][0]


# ------------------------------------------------------------------------------ faults
# A stand-in for the binary: the OpenAI stub of tests/stub_openai.py on the port LocalServer gives it,
# answering after $FAKE_DELAY seconds and logging every request it receives to $FAKE_LOG.
FAKE_SERVER = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from stub_openai import StubState, _QuietServer, make_handler
port = int(sys.argv[sys.argv.index("--port") + 1])
state = StubState()
state.delay_s, state.log_path = float(os.environ.get("FAKE_DELAY", "0")), os.environ.get("FAKE_LOG")
print("fake llama-server listening", flush=True)
_QuietServer(("127.0.0.1", port), make_handler(state)).serve_forever()
"""


def _kill_when(srv: LocalServer, store: Path, n_lines: int) -> threading.Thread:
    """SIGKILL the server once ``store`` holds ``n_lines`` replies (as the kernel's OOM killer would)."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if store.exists() and len(store.read_text().splitlines()) >= n_lines:
                os.kill(srv.proc.pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_server_dies_mid_run_restarted_and_resumed_stub(tmp_path, monkeypatch):
    """Nothing stored is lost, every reply is stored once, and only the request in flight is sent twice."""
    monkeypatch.setenv("SIMLIB_LLAMA_SERVER", str(_fake_binary(tmp_path, FAKE_SERVER)))
    monkeypatch.setenv("FAKE_DELAY", "0.2")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "sent.log"))
    model, store = tmp_path / "m.gguf", tmp_path / "s.jsonl"
    model.write_bytes(b"x")
    posts = [{**POSTS[i % 2], "post_id": f"p{i}"} for i in range(8)]
    with LocalServer(model, backend="llama_server", slots=3, startup_timeout=30) as srv:
        reqs = make_requests(posts, "plain", 3, srv.model, max_tokens=8, seed=1)
        watcher = _kill_when(srv, store, 6)
        port = srv.port
        rep = generate_local(srv, reqs, store, concurrency=3, progress=False, timeout=10, backoff_base=0.01,
                             backoff_max=0.05)
        watcher.join(timeout=5)
        assert srv.alive() and srv.port != port  # a new process
    assert rep.complete and rep.n_restarts == 1 and rep.n_ok == 24 and rep.retry_reasons.get("server_died") == 1
    keys = [json.loads(x)["key"] for x in store.read_text().splitlines()]
    assert sorted(keys) == sorted(r.key for r in reqs)  # every reply once
    last_line = reqs[0].messages[-1]["content"].splitlines()[-1]  # the log holds each request's last message
    sent = [x for x in (tmp_path / "sent.log").read_text().splitlines() if x == last_line]
    assert 8 <= len(sent) <= 8 + 1  # one request a post (n = 3), and again the one in flight when it died, if any
    assert load_failures(store)["resolved"].all()
    assert "fake llama-server listening" in srv.log_tail()


@pytest.mark.slow
def test_real_server_fails_to_start_with_its_log_tail(tmp_path):
    _need_binary()
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"GGUF but not really a model file")
    with pytest.raises(LocalServerError) as ei:
        LocalServer(model, backend="llama_server", startup_timeout=60).start()
    msg = str(ei.value)
    assert "llama-server exited with code" in msg and "log tail" in msg and "model" in msg.split("log tail", 1)[1]


@pytest.mark.slow
def test_real_server_dies_mid_run_restarted_and_resumed(tmp_path):
    _need_binary()
    store = tmp_path / "s.jsonl"
    posts = [{**POSTS[i % 2], "post_id": f"p{i}"} for i in range(6)]
    with LocalServer(backend="llama_server", slots=2, seed=0, n_threads=min(2, os.cpu_count() or 1)) as srv:
        reqs = make_requests(posts, "plain", 2, srv.model, max_tokens=16, seed=1, temperature=0.7)
        watcher = _kill_when(srv, store, 2)
        rep = generate_local(srv, reqs, store, concurrency=2, progress=False, timeout=120, backoff_base=0.01,
                             backoff_max=0.05)
        watcher.join(timeout=5)
    assert rep.complete and rep.n_restarts == 1 and rep.n_cached == 0, rep
    keys = [json.loads(x)["key"] for x in store.read_text().splitlines()]
    assert sorted(keys) == sorted(r.key for r in reqs)
