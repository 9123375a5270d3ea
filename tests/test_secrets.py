"""A canary API key: used where it must be, written nowhere.

``OPENAI_API_KEY`` is set to a canary; then a generation through the pipeline's own step
(:func:`simlib.steps.synthetic_responses`, against the local stub, with an error that quotes the
key back), a generation whose failures are recorded, a tiny notebook executed by
:func:`simlib.publish.runner.execute` (whose kernel sees the key), a failing one, and the local server's
start-up all run; afterwards no file under the work dir, the executed-notebook dir, the stores,
failure files and logs holds the canary, papermill received only the profile and the overrides,
and ``simlib config`` / ``simlib params`` print no key.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from stub_openai import StubServer  # noqa: E402

from simlib import config, steps
from simlib.generate import build_messages, failures_path, generate, load_failures  # noqa: E402
from simlib.generate.client import GenRequest  # noqa: E402
from simlib.publish import runner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CANARY = "sk-canary-secrets-test-4b7e19d2c0a5"
POSTS = pd.DataFrame([
    {"post_id": "s1", "title": "AITA for keeping my key secret?", "body": "My roommate asked for it.",
     "subreddit": "AITAH"},
    {"post_id": "s2", "title": "What's a secret you never told anyone?", "body": "", "subreddit": "AskReddit"},
])


def files_holding(root: Path, secret: str = CANARY) -> list[Path]:
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def canary(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    return CANARY


def test_generation_through_the_pipeline_writes_the_key_nowhere(tmp_path, canary):
    with StubServer() as stub:
        cfg = config.load("smoke", {"work_dir": str(tmp_path / "runs"), "api_base_url": stub.base_url,
                                    "generator": "stub-model", "n_samples": 2})
        # the first request of one prompt fails with an error body that quotes the Authorization header
        tag = build_messages("plain", POSTS.iloc[0].to_dict(), max_post_chars=cfg.max_post_chars)[-1]["content"]
        stub.state.script[tag] = ["echo_auth_500"]
        stub.state.script[build_messages("plain", POSTS.iloc[1].to_dict(),
                                         max_post_chars=cfg.max_post_chars)[-1]["content"]] = ["429"]
        out, report = steps.synthetic_responses(cfg, POSTS)
        assert report["n_ok"] == len(out) == 2 * 2 * 2 and report["n_failed"] == 0 and report["n_retries"] == 2
        assert set(stub.state.auth_headers) == {f"Bearer {canary}"}  # the key was sent ...
        # ... a request failing for good records its (scrubbed) error
        store = cfg.path("generations.jsonl")
        bad = GenRequest(post_id="s9", style="plain", sample_index=0, messages=[{"role": "user", "content": "leak"}],
                         model="stub-model", max_tokens=8, seed=0)
        stub.state.always["leak"] = "echo_auth_500"
        rep = generate([bad], store, stub.base_url, max_retries=0, progress=False)
        assert rep.n_failed == 1
    fails = load_failures(store)
    assert "***" in fails["error"].iloc[0] and "Bearer" in fails["error"].iloc[0]  # it was there, scrubbed
    assert failures_path(store).exists()
    assert canary not in json.dumps(report) and canary not in str(rep)
    assert files_holding(tmp_path) == []


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import simlib.publish.notebook as nb\nnb.begin(globals())"),
        nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("cfg = nb.setup(globals())\nprint(cfg.to_dict())\nprint(nb.provenance_line())\n"
                                  + body),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_notebooks_never_carry_the_key(tmp_path, canary, monkeypatch):
    import papermill

    monkeypatch.setattr(runner, "tree_hash", lambda root, pattern="": "pinned")
    calls = []
    real = papermill.execute_notebook

    def spy(*args, **kwargs):
        calls.append(kwargs.get("parameters"))
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", spy)
    src, out = tmp_path / "notebooks", tmp_path / "executed"
    src.mkdir()
    # the kernel inherits the key (a paper run needs it there); the notebook prints only its hash
    _notebook(src / "ok.ipynb", "import hashlib, os\n"
                                "print('key sha256', hashlib.sha256(os.environ['OPENAI_API_KEY'].encode()).hexdigest())")
    _notebook(src / "bad.ipynb", "import os\nraise RuntimeError('failing with the key in the environment')")
    cfg = config.load("smoke", {"work_dir": str(tmp_path / "runs"), "n_posts": 4})
    overrides = {"work_dir": cfg.work_dir, "n_posts": "4"}
    runner.execute(cfg, overrides, out_dir=out, names=["ok"], notebook_dir=src, log=lambda *a: None)
    with pytest.raises(runner.NotebookFailed) as exc:
        runner.execute(cfg, overrides, out_dir=out, names=["bad"], notebook_dir=src, log=lambda *a: None)
    assert canary not in str(exc.value)
    # papermill got the profile and the overrides (coerced), nothing else
    assert calls == [{"profile": "smoke", "work_dir": cfg.work_dir, "n_posts": 4}] * 2
    executed = nbformat.read(out / "ok.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert f"key sha256 {hashlib.sha256(canary.encode()).hexdigest()}" in text  # the kernel had the key
    assert canary not in json.dumps(executed.metadata.get("papermill", {}))
    assert (out / "failed" / "bad.ipynb").exists()
    assert files_holding(out) == [] and files_holding(tmp_path) == []


def test_local_server_gets_no_key(tmp_path, canary, monkeypatch):
    """The llama.cpp server needs no key: it is removed from the server's environment and log."""
    from simlib.generate.server import LocalServer, LocalServerError

    fake = tmp_path / "llama-server"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\nprint(json.dumps(dict(os.environ)))\nsys.exit(3)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SIMLIB_LLAMA_SERVER", str(fake))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    log = tmp_path / "logs" / "llama-server.log"
    log.parent.mkdir()
    with pytest.raises(LocalServerError) as exc:
        with LocalServer(model, startup_timeout=20, log_path=log):
            pass
    assert "SIMLIB_LLAMA_SERVER" in log.read_text()  # the fake did dump its environment
    assert "OPENAI_API_KEY" not in log.read_text() and canary not in str(exc.value)
    assert files_holding(tmp_path) == []


@pytest.mark.parametrize("cmd", [["config", "--profile", "paper"], ["config", "--profile", "ci"], ["params"]])
def test_cli_prints_no_key(cmd):
    env = {**__import__("os").environ, "OPENAI_API_KEY": CANARY}
    proc = subprocess.run([sys.executable, "-m", "simlib.publish.cli", *cmd], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert CANARY not in proc.stdout + proc.stderr
    if cmd[0] == "config":
        names = json.loads(proc.stdout)
        secretish = {"key", "apikey", "secret", "password", "credential", "credentials", "auth"}
        assert not [k for k in names if secretish & set(k.lower().split("_"))]


def test_unknown_key_parameter_is_refused():
    """The key is never a parameter: there is no field to pass it through."""
    with pytest.raises(config.ConfigError, match="unknown parameters: 'api_key'"):
        config.load("paper", {"api_key": CANARY})
