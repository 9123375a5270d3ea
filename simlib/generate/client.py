"""Resumable, concurrent chat-completion generation against any OpenAI-compatible server.

Requests, records and the key rule live in :mod:`simlib.generate.requests`.

:func:`generate` (sync, safe to call from a Jupyter cell) / :func:`agenerate` (async):

* skip requests whose ``key`` is already in the store (a :class:`~simlib.cache.JsonlStore`);
* send samples that share their messages as one request with ``n`` choices, each choice stored
  under its own sample's key (:mod:`simlib.generate.grouping`), with at most ``concurrency``
  choices in flight;
* retry ourselves (the OpenAI client is built with ``max_retries=0`` so every retry is
  counted) on 429, 408/409, 5xx, timeouts, connection errors and malformed responses, with
  exponential backoff and jitter; a ``Retry-After``/``retry-after-ms`` header is honoured,
  capped at ``retry_after_max`` seconds; other 4xx errors are not retried;
* append each successful response to the store the moment it arrives (fsynced), so a
  killed run loses at most the requests in flight;
* record every request that still fails after all retries in ``<store>.failures.jsonl``
  (beside the store, see :func:`failures_path`) and in the :class:`GenerationReport`;
  a re-run retries them, since only successes are skipped.

The API key is read only from the environment variable ``api_key_env`` (``"sk-local"`` if
unset, which local servers accept) and is never written to the store, the failures file,
logs or the report (error messages are scrubbed of it).

Store record fields: ``key, post_id, style, sample_index, model, text, finish_reason,
usage {prompt_tokens, completion_tokens}, latency_s, created`` plus ``response_model,
temperature, top_p, max_tokens, seed, messages_hash, attempts, source`` (``"online"`` or
``"batch"``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import os
import random
import time
import uuid
from collections import Counter
from typing import Callable, Iterable

from simlib.cache import JsonlStore
from simlib.generate.grouping import choice_fields, group_body, group_requests
from simlib.generate.requests import (GenerationReport, GenRequest, MalformedResponse, api_key, estimate_cost,
                                      failures_path, make_failure, make_record, resolve_requests, scrub)
from simlib.progress import report as report_progress

__all__ = ["generate", "agenerate", "run_sync"]


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _retry_after_s(exc: BaseException) -> float | None:
    """Seconds from ``retry-after-ms`` / ``Retry-After`` (delta seconds or HTTP date)."""
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        ra = headers.get("retry-after")
        if ra is None:
            return None
        try:
            return max(0.0, float(ra))
        except ValueError:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
    except Exception:
        return None


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(kind, retryable) for an exception raised by one attempt."""
    import openai

    if isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError)):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    code = _status_code(exc)
    if isinstance(exc, openai.APIStatusError) and code is not None:
        if code == 429:
            return "429", True
        if code >= 500:
            return "5xx", True
        if code in (408, 409):
            return str(code), True
        return str(code), False  # other 4xx: the request itself is wrong; retrying cannot help
    if isinstance(exc, (MalformedResponse, ValueError, openai.APIResponseValidationError)):
        return "malformed", True  # includes json.JSONDecodeError of a truncated body
    # Anything else raised while sending/reading (e.g. a protocol error of a dropped
    # connection that escaped the client's wrapping) is treated as transient.
    return type(exc).__name__, True


class _Budget:
    """At most ``cap`` choices in flight; a request larger than ``cap`` still runs, alone."""

    def __init__(self, cap: int) -> None:
        self.cap, self.used = max(1, cap), 0
        self.cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, k: int):
        async with self.cond:
            await self.cond.wait_for(lambda: self.used == 0 or self.used + k <= self.cap)
            self.used += k
        try:
            yield
        finally:
            async with self.cond:
                self.used -= k
                self.cond.notify_all()


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter for retry number ``attempt`` (1-based)."""
    d = min(cap, base * (2 ** (attempt - 1)))
    return d / 2 + random.uniform(0, d / 2)


async def agenerate(
    requests: Iterable[GenRequest],
    store_path: str | os.PathLike,
    base_url: str | None,
    model: str | None = None,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
    max_retries: int = 6,
    timeout: float = 60.0,
    price_per_1k_in: float | None = None,
    price_per_1k_out: float | None = None,
    progress: bool = True,
    send_seed: bool = True,
    token_param: str = "max_tokens",
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
    retry_after_max: float = 60.0,
    max_n: int | None = None,
    healthy: Callable[[], bool] | None = None,
) -> GenerationReport:
    """Async version of :func:`generate` (same arguments)."""
    import openai

    t_start = time.monotonic()
    reqs = resolve_requests(requests, model)
    store = JsonlStore(store_path)
    fstore = JsonlStore(failures_path(store_path))
    done = store.keys()
    todo = [r for r in reqs if r.key not in done]
    report = GenerationReport(
        n_requested=len(reqs),
        n_cached=len(reqs) - len(todo),
        store_path=str(store.path),
        failures_path=str(fstore.path),
    )
    run_id = uuid.uuid4().hex[:12]
    secret = api_key(api_key_env)
    reasons: Counter[str] = Counter()
    if not todo:
        report.cost_usd = estimate_cost(0, 0, price_per_1k_in, price_per_1k_out)
        report.wall_s = time.monotonic() - t_start
        return report

    client = openai.AsyncOpenAI(base_url=base_url, api_key=secret, max_retries=0, timeout=timeout)
    del secret  # only the client holds it; scrub reads the env again
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="generate", unit="req")

    budget = _Budget(concurrency)

    def fail(group: list[GenRequest], exc: BaseException, kind: str) -> None:
        for req in group:
            fstore.append(make_failure(req, run_id=run_id, error_type=kind,
                                       error=scrub(f"{type(exc).__name__}: {exc}", api_key(api_key_env)),
                                       status_code=_status_code(exc), attempts=attempts[req.key], source="online"))
            report.failed_keys.append(req.key)
        report.n_failed += len(group)

    def keep(group: list[GenRequest], resp, latency: float) -> list[GenRequest]:
        """Store every usable choice under its own sample's record; the samples still missing."""
        fields, estimated = choice_fields(resp, len(group), group[0].max_tokens)
        for req, f in zip(group, fields):
            if f is not None:
                store.append(make_record(req, f, latency_s=latency, attempts=attempts[req.key], source="online",
                                         n_choices=len(group), usage_estimated=estimated))
                report.n_ok += 1
                report.tokens_in += f["usage"]["prompt_tokens"]
                report.tokens_out += f["usage"]["completion_tokens"]
        return [req for req, f in zip(group, fields) if f is None]

    async def one(first: list[GenRequest]) -> None:
        pending = [first]
        while pending:
            group = pending.pop(0)
            for req in group:
                attempts[req.key] += 1
            attempt = attempts[group[0].key]
            t0 = time.monotonic()
            try:
                async with budget.hold(len(group)):
                    if stopped.is_set():  # the server died while this request waited its turn
                        return
                    resp = await asyncio.wait_for(client.chat.completions.create(
                        **group_body(group, send_seed=send_seed, token_param=token_param), timeout=timeout),
                        timeout=timeout + 5.0)
                missing = keep(group, resp, time.monotonic() - t0)
                if not missing:
                    continue
                exc: BaseException = MalformedResponse(f"{len(missing)} of {len(group)} choices missing or unusable")
                group = missing
            except Exception as err:  # noqa: BLE001 - classified below
                exc = err
            kind, retryable = _classify(exc)
            if healthy is not None and not healthy():  # the server is gone: no retry can succeed
                kind, retryable = "server_died", False
                stopped.set()
            reasons[kind] += 1
            if not retryable or attempt > max_retries:
                fail(group, exc, kind)
                continue
            report.n_retries += len(group_requests(group))
            hint = _retry_after_s(exc)
            delay = (min(hint, retry_after_max) + random.uniform(0, 0.1 * max(hint, 0.1)) if hint is not None
                     else _backoff(attempt, backoff_base, backoff_max))
            await asyncio.sleep(min(delay, max(retry_after_max, backoff_max)))
            pending[:0] = group_requests(group)  # the missing choices, as runs their seeds allow

    groups = group_requests(todo, max_n or concurrency)
    attempts: Counter[str] = Counter()
    queue: asyncio.Queue[list[GenRequest]] = asyncio.Queue()
    for g in groups:
        queue.put_nowait(g)

    stopped = asyncio.Event()  # the server died: leave the rest for the caller to resume

    async def worker() -> None:
        while not stopped.is_set():
            try:
                group = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await one(group)
            finally:
                report_progress("generation", report.n_ok + report.n_failed, len(todo), model=group[0].model)
                if bar is not None:
                    bar.update(len(group))
                    bar.set_postfix(ok=report.n_ok, failed=report.n_failed, retries=report.n_retries, refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(groups))))))
    finally:
        if bar is not None:
            bar.close()
        await client.close()
    report.retry_reasons = dict(reasons)
    report.cost_usd = estimate_cost(report.tokens_in, report.tokens_out, price_per_1k_in, price_per_1k_out)
    report.wall_s = time.monotonic() - t_start
    return report


def run_sync(coro_factory):
    """Run ``coro_factory()`` to completion from sync code, even inside a running event loop
    (Jupyter): then it runs in a worker thread with its own loop via ``asyncio.run``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="simlib-generate") as ex:
        return ex.submit(lambda: asyncio.run(coro_factory())).result()


def generate(
    requests: Iterable[GenRequest],
    store_path: str | os.PathLike,
    base_url: str | None,
    model: str | None = None,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
    max_retries: int = 6,
    timeout: float = 60.0,
    price_per_1k_in: float | None = None,
    price_per_1k_out: float | None = None,
    progress: bool = True,
    send_seed: bool = True,
    token_param: str = "max_tokens",
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
    retry_after_max: float = 60.0,
    max_n: int | None = None,
    healthy: Callable[[], bool] | None = None,
) -> GenerationReport:
    """Generate every request not yet in ``store_path``; see the module docstring.

    ``base_url``: e.g. ``LocalServer.base_url`` or ``"https://api.openai.com/v1"`` (``None``:
    the openai client's default). ``model`` fills requests built with ``model=None`` (a request naming another model is an
    error). ``max_retries`` counts retries after the first attempt; ``timeout`` bounds each
    attempt (seconds). ``send_seed=False`` for servers that reject ``seed``;
    ``token_param="max_completion_tokens"`` for OpenAI models that reject ``max_tokens``.
    ``healthy`` (e.g. :meth:`LocalServer.alive`): once it answers False a failing request is not retried
    and no new one is sent, so the caller can restart the server and resume
    (:func:`simlib.generate.local.generate_local`). Samples that share their messages go as one request with ``n`` of at most ``max_n`` choices
    (default ``concurrency``; 1 sends one request per sample), and ``concurrency`` bounds the
    choices in flight (:mod:`simlib.generate.grouping`).
    Prices are USD per 1000 tokens. Works from plain scripts and from Jupyter cells.
    """
    requests = list(requests)
    return run_sync(
        lambda: agenerate(
            requests,
            store_path,
            base_url,
            model,
            api_key_env=api_key_env,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            price_per_1k_in=price_per_1k_in,
            price_per_1k_out=price_per_1k_out,
            progress=progress,
            send_seed=send_seed,
            token_param=token_param,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            retry_after_max=retry_after_max,
            max_n=max_n,
            healthy=healthy,
        )
    )
