"""The local OpenAI-compatible server: llama.cpp's own ``llama-server`` serving SmolLM2-135M-Instruct.

``with LocalServer(slots=6) as srv: generate(reqs, store, srv.base_url, srv.model, concurrency=srv.slots)``

:class:`LocalServer` runs ``llama-server`` (:func:`llama_server_binary`, built by ``make models`` from
the llama.cpp vendored in the pinned llama-cpp-python sdist) on ``127.0.0.1`` and a free port, waits
until ``GET /v1/models`` answers (raising, with the tail of the server log, if the process dies or the
wait times out), and stops it on exit (SIGTERM, then SIGKILL after a grace period). It decodes up to
``slots`` sequences together (continuous batching) on the 16-bit copy of the shipped weights
(:func:`simlib.lm.weights.smollm2_gguf_f16`), sampling with top-k 40, min-p 0.05 and a repetition
penalty of 1.1 over 64 tokens (:data:`LLAMA_SERVER_SAMPLING`, llama-cpp-python's server defaults, which
the book's replies were sampled with before).

Notes for this ``llama-server`` release:

* the chat template is llama.cpp's built-in ChatML (``--chat-template chatml``, the format of
  SmolLM2's own template without its default system message);
* per-request ``seed``, ``temperature``, ``top_p``, ``max_tokens``, ``stop`` and ``n`` are honoured:
  choice ``j`` of a request is seeded ``seed + j`` and copies the prompt's cache from choice 0, so the
  client sends a post's samples as one request (:mod:`simlib.generate.grouping`); a request with ``n``
  waits until ``n`` slots are free, and its ``usage`` counts choice 0's tokens only;
* its threads spin for a while when they run out of work (``--poll``); on a CPU shared with other
  jobs that spinning takes cores they need (:data:`DEFAULT_POLL`, measured in
  ``benchmarks/results/llama_server_contention.json``);
* its repetition penalty also counts the prompt's last tokens.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from simlib.config import LOCAL_SERVERS
from simlib.lm.weights import smollm2_gguf_f16

__all__ = ["SMOLLM2_MODEL", "DEFAULT_POLL", "free_port", "default_threads", "LocalServer", "model_alias",
           "LocalServerError", "llama_server_binary"]

SMOLLM2_MODEL = "smollm2-135m-instruct"
BACKENDS = LOCAL_SERVERS
# llama-server's sampler settings: llama-cpp-python's server defaults, which the book sampled with before;
# llama-server's own repetition penalty default is 1.0 (off).
LLAMA_SERVER_SAMPLING = ("--top-k", "40", "--min-p", "0.05", "--repeat-penalty", "1.1", "--repeat-last-n", "64")
# --poll of both thread pools (0-100: how long idle threads spin before they sleep; None: llama.cpp's 50).
# 0: spinning takes a core that other jobs on a shared machine need (benchmarks/results/llama_server_contention.json).
DEFAULT_POLL: int | None = 0


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def model_alias(backend: str = "llama_server") -> str:
    """The name SmolLM2 answers under on ``backend``: what requests carry and cache keys hash (earlier
    servers answered under other names, so their cached replies are never mixed with these)."""
    _check_backend(backend)
    return f"{SMOLLM2_MODEL}-f16-llama-server"


_alias = model_alias  # LocalServer's parameter of that name shadows the function


class LocalServerError(RuntimeError):
    """The local server could not be started (the message carries its log tail)."""


def llama_server_binary() -> Path:
    """llama.cpp's ``llama-server``: ``$SIMLIB_LLAMA_SERVER``, else beside this Python (``make models``
    installs it into ``.venv/bin``). Not looked up on ``PATH``: another build could be another release."""
    env = os.environ.get("SIMLIB_LLAMA_SERVER")
    path = Path(env) if env else Path(sys.executable).parent / "llama-server"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"llama-server not found at {path} (`make llama-server` builds it into .venv/bin; "
                                "$SIMLIB_LLAMA_SERVER names another)")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_threads() -> int:
    """Cores available to this process minus one (at least 1).

    llama.cpp's worker threads spin-wait; with as many threads as cores and anything else
    running (the client, a notebook, other jobs) they wait on each other and a reply takes many
    times longer; one core is left free for the rest.
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, n - 1)


def _tail(path: Path, n_bytes: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"


class LocalServer:
    """Context manager around a ``llama-server`` process (see the module docstring).

    Attributes once started: ``base_url`` (``http://127.0.0.1:<port>/v1``), ``model`` (the
    alias to send as ``model``), ``port``, ``log_path`` (server stdout+stderr), ``proc``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        model_alias: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        chat_format: str | None = None,
        seed: int | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        log_path: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        backend: str = "llama_server",
        slots: int = 8,
        poll: int | None = DEFAULT_POLL,
    ):
        _check_backend(backend)
        self.backend, self.slots = backend, slots
        # several sequences decode in one step, where llama.cpp's 16-bit kernels beat its 4-bit ones
        self.model_path = Path(model_path) if model_path is not None else smollm2_gguf_f16()
        self.model = model_alias or (_alias(backend) if model_path is None else self.model_path.stem)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.poll = poll  # llama-server's --poll (0-100: how long its idle threads spin); None: its default
        self.chat_format = chat_format
        self.seed = seed
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_fh: Any = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [str(llama_server_binary()), "--model", str(self.model_path), "--alias", self.model,
               "--host", "127.0.0.1", "--port", str(self.port),
               "--parallel", str(self.slots), "--cont-batching",
               "--ctx-size", str(self.n_ctx * self.slots),  # n_ctx cells for each slot
               "--threads", str(self.n_threads), "--threads-batch", str(self.n_threads),
               "--chat-template", self.chat_format or "chatml", "--no-webui", *LLAMA_SERVER_SAMPLING]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.poll is not None:  # both thread pools: an explicit --threads-batch keeps its own default otherwise
            cmd += ["--poll", str(self.poll), "--poll-batch", str(self.poll)]
        return cmd + self.extra_args

    def start(self) -> "LocalServer":
        if self.proc is not None:
            return self
        if not self.model_path.is_file():
            raise FileNotFoundError(self.model_path)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        last_err: Exception | None = None
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            self._log_fh = open(self.log_path, "ab")
            env = dict(os.environ)
            env.pop("OPENAI_API_KEY", None)  # the server needs no key; keep it out of its env
            self.proc = subprocess.Popen(
                self.command(), stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )
            try:
                self._wait_ready()
                return self
            except LocalServerError as exc:
                last_err = exc
                self.stop()
                if "address already in use" not in str(exc).lower():
                    raise
        raise last_err  # type: ignore[misc]

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise LocalServerError(
                    f"{self._name()} exited with code {rc} before answering; log tail ({self.log_path}):\n"
                    + _tail(self.log_path)
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    data = json.loads(r.read())
                    if r.status == 200 and data.get("data"):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"{self._name()} did not answer {url} within {self.startup_timeout:.0f}s; log tail:\n"
                    + _tail(self.log_path)
                )
            time.sleep(0.25)

    def _name(self) -> str:
        return "llama-server"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self.stop_timeout)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def alive(self) -> bool:
        """Whether the server process is running."""
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> "LocalServer":
        """Stop what is left of the server and start it again (on a new port: read ``base_url`` again)."""
        self.stop()
        return self.start()

    def log_tail(self, n_bytes: int = 4000) -> str:
        return _tail(self.log_path, n_bytes) if self.log_path else ""

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; never leave a server running
        try:
            self.stop()
        except Exception:
            pass
