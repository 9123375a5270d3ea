"""The memory allocator of the processes that run the models: tcmalloc when it is installed.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MB, often far less)
with a fresh ``mmap`` and gives it back to the kernel on ``free``. A GRPO step allocates and frees
such activation, gradient and logit tensors hundreds of times, so the kernel zeroes the same
gigabytes again and again. tcmalloc keeps freed memory for reuse, which removes most of those page
faults; log-prob scoring allocates little per batch and gains little. ``benchmarks/bench_allocator.py``
measures both (the Performance chapter shows the result). The allocator changes where tensors live,
never what they hold: both runs compute the same rewards and log-probs.

A library cannot swap the allocator of a running process, so the runner starts the notebook
kernels (and, through them, the local servers) with ``LD_PRELOAD`` naming the library
(:func:`preloaded`). ``SIMLIB_ALLOCATOR`` chooses: ``auto`` (default: tcmalloc if found, else the
system's), ``system`` (never preload), or a path to a shared library to preload instead.
tcmalloc is the Debian/Ubuntu package ``libtcmalloc-minimal4`` (``.ci/run`` installs it).
"""
from __future__ import annotations

import contextlib
import ctypes.util
import os
from pathlib import Path
from typing import Iterator, Mapping

ENV = "SIMLIB_ALLOCATOR"
NAMES = ("tcmalloc_minimal", "tcmalloc")
# tcmalloc reports every allocation above 1 GB on stderr; a vocabulary's logits can be that large,
# and the report would land in the book as a notebook's output.
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def find() -> str | None:
    """The tcmalloc shared library to preload (a file path, or a soname the loader resolves), or None."""
    for name in NAMES:
        lib = ctypes.util.find_library(name)
        if lib:
            for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                      "/usr/local/lib"):
                if (Path(d) / lib).exists():
                    return str(Path(d) / lib)
            return lib
    return None


def choice(env: Mapping[str, str] | None = None) -> str | None:
    """The library ``SIMLIB_ALLOCATOR`` asks for (None: the system allocator)."""
    env = os.environ if env is None else env
    want = env.get(ENV, "auto").strip() or "auto"
    if want == "system":
        return None
    if want == "auto":
        return find()
    if not Path(want).exists():
        raise FileNotFoundError(f"{ENV}={want!r}: no such library (use auto, system or a path)")
    return want


def child_env(env: Mapping[str, str] | None = None, lib: str | None | bool = True) -> dict[str, str]:
    """A copy of ``env`` (default: this process's) with ``lib`` preloaded for child processes;
    ``lib=True`` takes :func:`choice`, ``None``/``False`` leaves the environment as it is."""
    out = dict(os.environ if env is None else env)
    lib = choice(out) if lib is True else lib
    if not lib:
        return out
    preload = [p for p in out.get("LD_PRELOAD", "").split(":") if p and p != lib]
    out["LD_PRELOAD"] = ":".join([lib, *preload])
    for k, v in QUIET.items():
        out.setdefault(k, v)
    return out


@contextlib.contextmanager
def preloaded(lib: str | None | bool = True) -> Iterator[str | None]:
    """Within the block, processes started from this one preload ``lib`` (see :func:`child_env`);
    yields the library (None: nothing preloaded). This process keeps its own allocator."""
    lib = choice() if lib is True else (lib or None)
    new = child_env(lib=lib)
    keys = ("LD_PRELOAD", *QUIET)
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: new[k] for k in keys if k in new})
    try:
        yield lib
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def label(lib: str | None) -> str:
    """A short name for a preloaded library: ``tcmalloc``, the file name of another, or ``system``."""
    if not lib:
        return "system"
    return "tcmalloc" if "tcmalloc" in Path(lib).name else Path(lib).name


def active() -> str:
    """The allocator of this process: ``tcmalloc`` when a tcmalloc library is mapped, else ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "tcmalloc" if "tcmalloc" in maps else "system"


if __name__ == "__main__":
    # `python -m simlib.lm.allocator`: print what the runner would preload
    print(choice() or "system")
