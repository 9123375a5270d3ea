"""The runner: papermill execution, skip-if-unchanged, failures that name the notebook."""
import json

import nbformat
import pytest

from simlib import config, progress
from simlib.publish import live, runner


def _notebook(path, body: str, prose: bool = False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import simlib.publish.notebook as nb\nnb.begin(globals())"),
        nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}),
        *([nbformat.v4.new_markdown_cell("Prose between cells.")] if prose else []),
        nbformat.v4.new_code_cell("cfg = nb.setup(globals())\n" + body),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def book(tmp_path, monkeypatch):
    # Other changes to simlib's source would change every key; pin it to test the notebook logic.
    monkeypatch.setattr(runner, "tree_hash", lambda root, pattern="": "pinned")
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "a.ipynb", "print('n_posts', cfg.n_posts)")
    _notebook(src / "b.ipynb", "print('seed', cfg.seed)")
    return src, tmp_path / "executed"


def _run(book, cfg, overrides=None, names=("a", "b")):
    src, out = book
    return runner.execute(cfg, overrides or {}, out_dir=out, names=list(names), notebook_dir=src, log=lambda *_: None,
                          log_dir=out.parent / "logs")


def test_second_run_skips_and_changes_rerun(book):
    cfg = config.load("smoke")
    first = _run(book, cfg)
    assert [r["status"] for r in first.values()] == ["ran", "ran"]
    assert [r["status"] for r in _run(book, cfg).values()] == ["skipped", "skipped"]
    # a new parameter value re-runs everything that depends on the config
    cfg2 = config.load("smoke", {"n_posts": 5})
    third = _run(book, cfg2, {"n_posts": 5})
    assert [r["status"] for r in third.values()] == ["ran", "ran"]
    out = nbformat.read(book[1] / "a.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert "n_posts 5" in text  # the injected parameter reached the notebook's config


def test_code_change_reruns(book, monkeypatch):
    cfg = config.load("smoke")
    _run(book, cfg)
    monkeypatch.setattr(runner, "tree_hash", lambda root, pattern="": "changed")
    assert [r["status"] for r in _run(book, cfg).values()] == ["ran", "ran"]


def test_editing_upstream_notebook_reruns_downstream(book):
    cfg = config.load("smoke")
    _run(book, cfg)
    _notebook(book[0] / "a.ipynb", "print('edited')")
    assert [r["status"] for r in _run(book, cfg).values()] == ["ran", "ran"]
    _notebook(book[0] / "b.ipynb", "print('edited b')")
    assert [r["status"] for r in _run(book, cfg).values()] == ["skipped", "ran"]


def test_declared_input_file_reruns_only_its_notebook(book, monkeypatch):
    """A notebook reading a file outside the caches (the Performance chapter's benchmark results)
    declares it; a change of that file re-runs that notebook only."""
    src, _ = book
    root = src.parent
    monkeypatch.setattr(runner, "REPO_ROOT", root)
    (root / "results.json").write_text('{"speedup": 2}')
    path = str(root / "results.json")
    _notebook(src / "b.ipynb", f"import os\nprint(open({path!r}).read() if os.path.exists({path!r}) else 'none')")
    nb = nbformat.read(src / "b.ipynb", as_version=4)
    nb.metadata["simlib"] = {"inputs": ["results.json"]}
    nbformat.write(nb, src / "b.ipynb")
    cfg = config.load("smoke")
    _run(book, cfg)
    assert [r["status"] for r in _run(book, cfg).values()] == ["skipped", "skipped"]
    (root / "results.json").write_text('{"speedup": 3}')
    assert [r["status"] for r in _run(book, cfg).values()] == ["skipped", "ran"]
    (root / "results.json").unlink()  # a missing input is an input state too
    assert [r["status"] for r in _run(book, cfg).values()] == ["skipped", "ran"]
    assert runner.notebook_inputs(src / "a.ipynb") == []


def test_failing_notebook_names_itself_and_leaves_no_output(book):
    src, out = book
    cfg = config.load("smoke")
    _run(book, cfg)
    _notebook(src / "b.ipynb", "raise ValueError('boom from b')")
    with pytest.raises(runner.NotebookFailed) as exc:
        _run(book, cfg)
    msg = str(exc.value)
    assert "notebook b failed" in msg and "ValueError" in msg and "boom from b" in msg
    assert not (out / "b.ipynb").exists(), "a failed notebook must not look complete"
    assert (out / "failed" / "b.ipynb").exists()
    assert "b" not in json.loads((out / ".state.json").read_text())


def test_unknown_injected_parameter_fails_the_notebook(book):
    cfg = config.load("smoke")
    with pytest.raises(runner.NotebookFailed, match="unknown parameters: 'bogus'"):
        _run(book, cfg, {"bogus": 1}, names=("a",))


def test_manifest_reads_toc_order(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: executed/01_x\n  - file: book/p\n"
                   "  - file: executed/02_y\n")
    assert runner.manifest(toc) == ["01_x", "02_y"]


def test_real_toc_lists_only_existing_notebooks():
    names = runner.manifest()
    assert names and names[0] == "01_data"
    for n in names:
        assert (runner.NOTEBOOK_DIR / f"{n}.ipynb").exists()


def test_progress_reaches_the_terminal_and_the_log_never_the_notebook(book, monkeypatch, capsys):
    src, out = book
    _notebook(src / "a.ipynb", "from simlib import progress\nimport time\nprint('hello from a')\n"
              "for k in (1, 2):\n    progress.report('GRPO step', k, 4, run='real seed 0')\n    time.sleep(0.3)", prose=True)
    monkeypatch.setattr(live.Watch, "__init__", _fast_watch(live.Watch.__init__))
    _run(book, config.load("smoke"), names=("a",))
    logs = out.parent / "logs"
    assert "hello from a" in (logs / "a.log").read_text()  # the notebook's full log
    events = progress.read(logs / "a.progress.jsonl")
    assert [e["done"] for e in events] == [1, 2] and events[0]["total"] == 4
    shown = capsys.readouterr().err
    # papermill numbers prose cells too, and injects the parameters: the last cell is 5 of 5
    assert "[simlib] a: cell 5/5 · GRPO step" in shown and "(run real seed 0)" in shown
    executed = (out / "a.ipynb").read_text()
    assert "hello from a" in executed and "GRPO step" not in executed.replace("progress.report('GRPO step'", "")


def _fast_watch(init):
    def fast(self, *a, **k):
        init(self, *a, **{**k, "every": 0.2})
    return fast


def test_status_line_estimates_the_time_left():
    events = [{"t": 100.0, "step": "generation", "done": 10, "total": 110, "model": "m"},
              {"t": 120.0, "step": "generation", "done": 30, "total": 110, "model": "m"}]
    assert progress.seconds_left(events) == 80.0  # 1 s per reply, 80 replies left
    assert progress.status(events) == "generation 30/110 (model m) · about 1:20 left"
    assert progress.status(events + [{"t": 121.0, "step": "scoring", "done": 5, "total": None}]) == "scoring 5"
    assert progress.clock(3725) == "1:02:05" and progress.clock(12) == "12 s"


def test_report_without_the_variable_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.report("generation", 1, 2)  # no file named: nothing to write, nothing raised
    monkeypatch.setenv(progress.ENV, str(tmp_path / "p.jsonl"))
    progress.report("generation", 1, 2, model="x")
    assert progress.read(tmp_path / "p.jsonl")[0]["model"] == "x"
