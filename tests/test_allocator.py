"""The notebooks' allocator: which library is preloaded, for whom, and that it really is loaded."""
import json
import os
import subprocess
import sys

import pytest

from simlib import config
from simlib.lm import allocator
from simlib.publish import runner

needs_tcmalloc = pytest.mark.skipif(allocator.find() is None, reason="tcmalloc not installed")


def test_child_env_preloads_the_choice_and_keeps_other_preloads(monkeypatch, tmp_path):
    lib = tmp_path / "libfake.so"
    lib.write_bytes(b"")
    env = allocator.child_env({"LD_PRELOAD": "/x/other.so", allocator.ENV: str(lib)})
    assert env["LD_PRELOAD"] == f"{lib}:/x/other.so"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 2**40  # no large-alloc reports in the book
    assert "LD_PRELOAD" not in allocator.child_env({allocator.ENV: "system"})
    with pytest.raises(FileNotFoundError, match="SIMLIB_ALLOCATOR"):
        allocator.choice({allocator.ENV: str(tmp_path / "missing.so")})
    monkeypatch.setattr(allocator, "find", lambda: None)
    assert allocator.child_env({}) == {}  # auto without tcmalloc: the system allocator, env unchanged


def test_preloaded_sets_the_environment_only_within_the_block(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", raising=False)
    monkeypatch.setenv(allocator.ENV, "auto")
    monkeypatch.setattr(allocator, "find", lambda: "/usr/lib/libtcmalloc_minimal.so.4")
    with allocator.preloaded() as lib:
        assert lib == "/usr/lib/libtcmalloc_minimal.so.4"
        assert os.environ["LD_PRELOAD"] == lib
    assert "LD_PRELOAD" not in os.environ and "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD" not in os.environ
    assert allocator.label(lib) == "tcmalloc" and allocator.label(None) == "system"


@needs_tcmalloc
def test_a_child_started_within_preloaded_runs_on_tcmalloc(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "auto")
    code = "from simlib.lm import allocator; print(allocator.active())"
    with allocator.preloaded():
        inside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=allocator.child_env(lib=None) | {"LD_PRELOAD": ""})
    assert inside.stdout.split() == ["tcmalloc"] and not inside.stderr.strip()
    assert outside.stdout.split() == ["system"]


@needs_tcmalloc
def test_runner_kernels_run_on_tcmalloc_and_the_state_says_so(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv(allocator.ENV, "auto")
    monkeypatch.setattr(runner, "tree_hash", lambda root, pattern="": "pinned")
    src = tmp_path / "notebooks"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import simlib.publish.notebook as nb\nnb.begin(globals())"),
                nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("cfg = nb.setup(globals())\nfrom simlib.lm import allocator\n"
                                          "print('allocator', allocator.active())")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src / "a.ipynb")
    out = tmp_path / "executed"
    runner.execute(config.load("smoke"), {}, out_dir=out, names=["a"], notebook_dir=src, log=lambda *_: None)
    text = "".join(o.get("text", "") for c in nbformat.read(out / "a.ipynb", as_version=4).cells
                   for o in c.get("outputs", []))
    assert "allocator tcmalloc" in text
    assert json.loads((out / ".state.json").read_text())["a"]["allocator"] == "tcmalloc"
