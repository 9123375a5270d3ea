"""Generation on a local server that may die mid-run: start it again and resume.

A llama.cpp server can be killed by the kernel (memory), a signal or a crash while a chapter waits for
it. :func:`generate_local` then starts the server again and sends what the store still lacks: every
reply that had arrived is kept (the client appends each the moment it comes), and only the requests
in flight when it died are sent twice.
"""
from __future__ import annotations

import os
import sys

from simlib.generate.client import generate
from simlib.generate.requests import GenerationReport, GenRequest
from simlib.generate.server import LocalServer

__all__ = ["generate_local", "merge_reports"]


def merge_reports(first: GenerationReport, later: GenerationReport) -> GenerationReport:
    """One report for a run resumed after a restart: what was cached at the start, everything sent, the
    failures that remain at the end."""
    first.n_ok += later.n_ok
    first.n_retries += later.n_retries
    first.tokens_in += later.tokens_in
    first.tokens_out += later.tokens_out
    first.wall_s += later.wall_s
    first.n_failed, first.failed_keys = later.n_failed, later.failed_keys
    for k, v in later.retry_reasons.items():
        first.retry_reasons[k] = first.retry_reasons.get(k, 0) + v
    if first.cost_usd is not None or later.cost_usd is not None:
        first.cost_usd = (first.cost_usd or 0.0) + (later.cost_usd or 0.0)
    return first


def generate_local(server: LocalServer, requests: list[GenRequest], store_path: str | os.PathLike, *,
                   restarts: int = 2, **kwargs) -> GenerationReport:
    """:func:`simlib.generate.generate` on a started ``server``; when it dies mid-run, start it again (at
    most ``restarts`` times) and resume. ``kwargs`` go to ``generate``."""
    requests = list(requests)
    report: GenerationReport | None = None
    while True:
        part = generate(requests, store_path, server.base_url, server.model, healthy=server.alive, **kwargs)
        report = part if report is None else merge_reports(report, part)
        if part.complete or server.alive() or report.n_restarts >= restarts:
            return report
        rc = server.proc.poll() if server.proc is not None else None
        print(f"{server.model}: the server exited (code {rc}) with {part.n_failed} requests unanswered; starting it "
              f"again ({report.n_restarts + 1}/{restarts}). Log tail:\n{server.log_tail(1500)}", file=sys.stderr, flush=True)
        server.restart()
        report.n_restarts += 1
