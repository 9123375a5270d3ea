"""Execute the book's notebooks with papermill, skipping what has not changed, then build the book.

The table of contents (``_toc.yml``) is the manifest: every ``executed/<name>`` entry in it is a
notebook ``notebooks/<name>.ipynb``, run in toc order. A notebook is re-executed only when its key
changes: a hash of its source, the resolved config, the simlib source code, the pinned data
registry and the keys of the notebooks before it. Executed copies are written to a temporary name
and renamed on success, so a crash or an error never leaves a copy that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from simlib.cache import atomic_write_json, content_hash, file_hash, tree_hash
from simlib.config import REPO_ROOT, Config
from simlib.lm import allocator
from simlib.publish.live import Watch

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "executed"
BUILD_DIR = REPO_ROOT / "_build"


class NotebookFailed(RuntimeError):
    """A notebook raised while executing; the message holds its name and the failing cell's traceback."""


@dataclass
class Step:
    name: str
    source: Path
    output: Path


def manifest(toc: Path = REPO_ROOT / "_toc.yml") -> list[str]:
    """Notebook names in the order the toc lists them (entries ``executed/<name>``)."""
    names: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file") or node.get("root")
            if isinstance(f, str) and f.startswith("executed/"):
                names.append(Path(f).name.removesuffix(".ipynb"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(toc.read_text()))
    return names


def notebook_inputs(source: Path) -> list[str]:
    """Files a notebook reads besides the config and the runs' caches, from its metadata
    (``"simlib": {"inputs": [paths relative to the repository]}``), e.g. the benchmark results
    the Performance chapter shows."""
    meta = json.loads(source.read_text()).get("metadata", {}).get("simlib", {})
    return list(meta.get("inputs", []))


def cell_count(source: Path) -> int:
    """How many cells papermill numbers in a notebook: all of them, prose included, as its "Executing
    Cell N" log counts them, plus the parameters cell it injects."""
    return 1 + len(json.loads(source.read_text()).get("cells", []))


def notebook_key(source: Path, cfg: Config, upstream: list[str]) -> str:
    """What a notebook's output depends on: its source, the config, simlib's code, the data
    registry, the keys of the notebooks before it and the files it declares as inputs."""
    parts = {
        "notebook": file_hash(source),
        "config": cfg.to_dict(),
        "simlib": tree_hash(REPO_ROOT / "simlib", "**/*.py"),
        "registry": tree_hash(REPO_ROOT / "simlib", "**/*registry*.txt"),
        "upstream": upstream,
    }
    inputs = notebook_inputs(source)
    if inputs:  # only then, so other notebooks' keys keep their form
        parts["inputs"] = {p: file_hash(REPO_ROOT / p) if (REPO_ROOT / p).is_file() else None for p in inputs}
    return content_hash(parts)


def _state_path(out_dir: Path) -> Path:
    return out_dir / ".state.json"


def _read_state(out_dir: Path) -> dict:
    try:
        return json.loads(_state_path(out_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _failure_message(name: str, exc: Exception) -> str:
    tb = getattr(exc, "traceback", None)
    detail = "\n".join(tb) if tb else str(exc)
    # papermill keeps ANSI colours in tracebacks; strip them for logs.
    import re

    detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)
    return f"notebook {name} failed:\n{detail}"


class PeakMemory:
    """Peak resident memory of this process's descendants (kernel, servers) while a notebook runs.

    Sampled every ``interval`` seconds in a thread; approximate by design (a spike shorter than
    the interval can be missed), and cheap enough to leave on for every run.
    """

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = None

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            total = 0
            for p in me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_bytes = max(self.peak_bytes, total)

    def __enter__(self) -> "PeakMemory":
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# MyST-NB tags a notebook may set itself; a cell that has one keeps it and gets no other.
_SHOW_TAGS = frozenset({"hide-input", "hide-output", "hide-cell", "remove-input", "remove-output",
                        "remove-cell", "show-input"})


def reader_tags(cell: dict) -> list[str]:
    """The tags a code cell carries in the book: readers see prose and figures first.

    The defaults cell (``parameters``) is removed, since the book shows the values a run used;
    papermill's ``injected-parameters`` cell is collapsed whole (``hide-cell``); every other code
    cell shows its output with its source behind a toggle (``hide-input``), unless the notebook
    tagged it itself (``show-input`` keeps the source visible). Markdown cells are unchanged.

    >>> reader_tags({"cell_type": "code", "metadata": {"tags": ["parameters"]}})
    ['parameters', 'remove-cell']
    >>> reader_tags({"cell_type": "code", "metadata": {}})
    ['hide-input']
    """
    tags = list(cell.get("metadata", {}).get("tags", []))
    if cell.get("cell_type") != "code" or _SHOW_TAGS & set(tags):
        return tags
    if "parameters" in tags:
        return tags + ["remove-cell"]
    if "injected-parameters" in tags:
        return tags + ["hide-cell"]
    return tags + ["hide-input"]


def _tag_for_readers(path: Path) -> None:
    """Write :func:`reader_tags` into the executed copy at ``path`` (the source notebook is untouched)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = reader_tags(cell)
        if tags:
            cell.metadata["tags"] = tags
    nbformat.write(nb, path)


_hide_default_parameters = _tag_for_readers  # the earlier name


def execute(cfg: Config, overrides: dict, out_dir: Path = EXECUTED_DIR, names: list[str] | None = None,
            force: bool = False, log=print, notebook_dir: Path = NOTEBOOK_DIR, log_dir: Path | None = None) -> dict:
    """Run the manifest's notebooks with papermill; return {name: 'ran'|'skipped'} with timings.

    While a notebook runs, the terminal shows its progress and each notebook's full log is written
    to ``log_dir`` (default ``<work_dir>/logs``; :class:`simlib.publish.live.Watch`)."""
    import logging

    import papermill as pm
    from tqdm.auto import tqdm

    # papermill warns about every override not named in the parameters cell; the notebook's own
    # validation (simlib.publish.notebook.setup) is the check that matters, so silence the duplicate.
    logging.getLogger("papermill").setLevel(logging.ERROR)

    names = names or manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(log_dir) if log_dir else cfg.path("logs", "x").parent
    state = _read_state(out_dir)
    results: dict[str, dict] = {}
    upstream: list[str] = []
    # Progress bars belong in the terminal, not in the book: the kernel inherits these.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # papermill must never carry a secret: parameters are the profile and its overrides only.
    params = {"profile": cfg.profile, **{k: getattr(cfg, k, v) for k, v in overrides.items() if k != "profile"}}
    for name in tqdm(names, desc="notebooks", unit="nb", disable=None):
        src = notebook_dir / f"{name}.ipynb"
        if not src.exists():
            raise FileNotFoundError(f"_toc.yml lists executed/{name} but {src} does not exist")
        out = out_dir / f"{name}.ipynb"
        key = notebook_key(src, cfg, upstream)
        upstream.append(key)
        if not force and out.exists() and state.get(name, {}).get("key") == key:
            results[name] = {"status": "skipped", "seconds": state[name].get("seconds")}
            log(f"[simlib] {name}: unchanged, skipped")
            continue
        log(f"[simlib] {name}: executing")
        tmp = out_dir / f".{name}.running.ipynb"
        out.unlink(missing_ok=True)
        state.pop(name, None)
        atomic_write_json(_state_path(out_dir), state)
        t0 = time.perf_counter()
        try:
            # the kernel and the servers it starts use tcmalloc when installed (simlib.lm.allocator)
            with allocator.preloaded() as alloc, PeakMemory() as mem, \
                    Watch(name, log_dir, cells=cell_count(src)):
                pm.execute_notebook(str(src), str(tmp), parameters=params, cwd=str(REPO_ROOT),
                                    kernel_name="python3", progress_bar=False, log_output=True,
                                    request_save_on_cell_execute=False)
        except Exception as exc:
            failed = out_dir / "failed"
            failed.mkdir(exist_ok=True)
            if tmp.exists():
                os.replace(tmp, failed / f"{name}.ipynb")
            raise NotebookFailed(_failure_message(name, exc) + f"\n(full log: {log_dir / (name + '.log')})") from None
        _tag_for_readers(tmp)
        os.replace(tmp, out)
        seconds = round(time.perf_counter() - t0, 2)
        state[name] = {"key": key, "seconds": seconds, "profile": cfg.profile,
                       "peak_rss_mb": round(mem.peak_bytes / 2**20, 1),
                       "allocator": allocator.label(alloc)}
        atomic_write_json(_state_path(out_dir), state)
        results[name] = {"status": "ran", "seconds": seconds, "peak_rss_mb": state[name]["peak_rss_mb"]}
        log(f"[simlib] {name}: done in {seconds:.1f} s (peak memory {state[name]['peak_rss_mb']:.0f} MB)")
    return results


def executed_dir(profile: str) -> Path:
    """Where a profile's executed notebooks live: ``executed/`` for ``ci`` (what CI checks), else
    ``executed-<profile>/``, so that no profile's run overwrites another's."""
    return EXECUTED_DIR if profile == "ci" else REPO_ROOT / f"executed-{profile}"


def build_dir(profile: str) -> Path:
    """Where a profile's book is built: ``_build/html`` for ``ci``, else ``_build/<profile>/html``."""
    return BUILD_DIR if profile == "ci" else BUILD_DIR / profile


def _stage(profile: str, executed: Path) -> Path:
    """A copy of the book's sources whose ``executed/`` holds ``executed``'s notebooks, so every
    relative path of the book resolves as in the ``ci`` build; the footer names the profile."""
    src = BUILD_DIR / profile / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in ("_toc.yml", "book", "_static"):
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name)
        elif (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(executed, src / "executed", ignore=shutil.ignore_patterns(".*", "failed"))
    conf = (REPO_ROOT / "_config.yml").read_text().replace("<code>ci</code> profile", f"<code>{profile}</code> profile")
    (src / "_config.yml").write_text(conf)
    return src


def build_book(force: bool = False, log=print, profile: str = "ci") -> Path:
    """``jupyter-book build`` over the executed copies (execution off), unless nothing changed."""
    executed, out = executed_dir(profile), build_dir(profile)
    state = _read_state(executed)
    key = content_hash({
        "notebooks": {k: v.get("key") for k, v in state.items() if isinstance(v, dict)},
        "book": tree_hash(REPO_ROOT / "book", "**/*"),
        "config": file_hash(REPO_ROOT / "_config.yml"),
        "static": tree_hash(REPO_ROOT / "_static", "**/*"),
        "toc": file_hash(REPO_ROOT / "_toc.yml"),
    })
    stamp = out / ".book-key"
    index = out / "html" / "index.html"
    if not force and index.exists() and stamp.exists() and stamp.read_text() == key:
        log("[simlib] book: unchanged, skipped")
        return index
    stamp.unlink(missing_ok=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    root = REPO_ROOT if profile == "ci" else _stage(profile, executed)
    # --all: Sphinx's incremental build re-renders changed pages but leaves an edited _static file out
    cmd = [str(jb), "build", str(root), "--all", "--warningiserror", "--nitpick", "--keep-going"]
    if profile != "ci":
        cmd += ["--path-output", str(out / "staging")]
    log("[simlib] book: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if profile != "ci" and proc.returncode == 0:
        shutil.rmtree(out / "html", ignore_errors=True)
        os.replace(out / "staging" / "_build" / "html", out / "html")
    if proc.returncode != 0 or not index.exists():
        # Nothing half-built may look complete.
        shutil.rmtree(out / "html", ignore_errors=True)
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return index


def run(cfg: Config, overrides: dict, force: bool = False, book: bool = True,
        names: list[str] | None = None, out_dir: Path | None = None) -> dict:
    """Execute the notebooks into the profile's folder (:func:`executed_dir`), then build its book
    (:func:`build_dir`); a failure removes the built HTML."""
    out = build_dir(cfg.profile)
    try:
        results = execute(cfg, overrides, out_dir=out_dir or executed_dir(cfg.profile), names=names, force=force)
    except Exception:
        if book:
            shutil.rmtree(out / "html", ignore_errors=True)
            (out / ".book-key").unlink(missing_ok=True)
        raise
    if book:
        build_book(force=force, profile=cfg.profile)
    return results
