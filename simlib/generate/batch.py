"""OpenAI Batch API mode for paper-scale runs (half price, results within 24 h).

Flow of :func:`run_batch`:

1. resume: every batch this store submitted earlier and has not collected yet (listed in
   ``<store>.batches.json``) is polled to the end and collected first, so a killed notebook
   never pays for the same requests twice (results for keys that are no longer among the
   requests passed in are ignored: keep the request set fixed while a batch is pending);
2. requests whose key is already in the store are skipped; the rest are written as Batch
   JSONL lines (``custom_id`` = request key, ``POST /v1/chat/completions``) in chunks of at
   most ``max_per_batch``, uploaded with ``files.create(purpose="batch")`` and submitted with
   ``batches.create``; the batch id is saved in the state file before polling;
3. each batch is polled every ``poll_interval`` seconds until it is terminal or ``timeout``
   seconds have passed (then :class:`BatchTimeout` is raised; re-run to resume);
4. the output and error files are downloaded and parsed into the same store records as the
   online mode (``source="batch"``, ``latency_s=None``); failed lines and requests missing
   from both files go to the failures file and are retried by the next run.

Payload building (:func:`batch_line`, :func:`build_batch_jsonl`) and parsing
(:func:`parse_batch_output`) are pure functions. Prices passed to :func:`run_batch` should be
the Batch API prices (about half the online ones).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from simlib.cache import JsonlStore, atomic_write_json, content_hash
from simlib.generate.requests import (
    GenerationReport,
    GenRequest,
    MalformedResponse,
    api_key,
    completion_fields,
    estimate_cost,
    failures_path,
    make_failure,
    make_record,
    resolve_requests,
    scrub,
)

__all__ = [
    "BATCH_ENDPOINT",
    "BatchTimeout",
    "batch_line",
    "build_batch_jsonl",
    "parse_batch_output",
    "missing_failures",
    "batch_state_path",
    "run_batch",
]

BATCH_ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


class BatchTimeout(TimeoutError):
    """Polling gave up before the batch finished; the batch keeps running server-side and
    the next :func:`run_batch` on the same store resumes it."""


# --------------------------------------------------------------------------- pure functions


def batch_line(req: GenRequest, *, send_seed: bool = True, token_param: str = "max_tokens") -> dict[str, Any]:
    """One Batch API input line for ``req`` (``custom_id`` is the request key)."""
    return {
        "custom_id": req.key,
        "method": "POST",
        "url": BATCH_ENDPOINT,
        "body": req.body(send_seed=send_seed, token_param=token_param),
    }


def build_batch_jsonl(requests: Iterable[GenRequest], *, send_seed: bool = True, token_param: str = "max_tokens") -> bytes:
    """The Batch input file (UTF-8 JSONL, one line per request)."""
    lines = [json.dumps(batch_line(r, send_seed=send_seed, token_param=token_param), ensure_ascii=False) for r in requests]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def _error_of(line: Mapping[str, Any]) -> tuple[str, str, int | None]:
    """(error_type, message, status_code) of a failed batch output/error line."""
    resp = line.get("response") or {}
    status = resp.get("status_code")
    err = line.get("error")
    if isinstance(err, Mapping) and err:
        return f"batch:{err.get('code') or 'error'}", str(err.get("message") or err), status
    body = resp.get("body") or {}
    berr = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(berr, Mapping):
        return f"batch:{status}", str(berr.get("message") or berr), status
    return f"batch:{status}", json.dumps(body)[:500], status


def parse_batch_output(
    text: str,
    requests: Mapping[str, GenRequest],
    *,
    run_id: str = "batch",
) -> tuple[list[dict], list[dict]]:
    """Parse a Batch output or error file into (store records, failure records).

    ``requests`` maps key (= ``custom_id``) to request; lines with an unknown ``custom_id`` or
    that are not JSON are ignored. A line is a success when its response has status 200 and a
    usable chat completion body; anything else becomes a failure record.
    """
    records: list[dict] = []
    failures: list[dict] = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        req = requests.get(line.get("custom_id")) if isinstance(line, Mapping) else None
        if req is None:
            continue
        resp = line.get("response") or {}
        if resp.get("status_code") == 200 and not line.get("error"):
            try:
                fields = completion_fields(resp.get("body"))
            except MalformedResponse as exc:
                failures.append(make_failure(req, run_id=run_id, error_type="malformed", error=str(exc),
                                             status_code=200, attempts=1, source="batch"))
                continue
            records.append(make_record(req, fields, latency_s=None, attempts=1, source="batch"))
        else:
            kind, msg, status = _error_of(line)
            failures.append(make_failure(req, run_id=run_id, error_type=kind, error=msg[:1000],
                                         status_code=status, attempts=1, source="batch"))
    return records, failures


def missing_failures(requests: Mapping[str, GenRequest], seen: set[str], *, run_id: str, reason: str) -> list[dict]:
    """Failure records for submitted requests that appear in neither output nor error file."""
    return [
        make_failure(r, run_id=run_id, error_type="batch:missing", error=reason, status_code=None, attempts=1, source="batch")
        for k, r in requests.items()
        if k not in seen
    ]


# --------------------------------------------------------------------------- state


def batch_state_path(store_path: str | os.PathLike) -> Path:
    """``responses.jsonl`` -> ``responses.batches.json``: batches submitted for this store."""
    p = Path(store_path)
    return p.with_name(p.stem + ".batches.json")


def _load_state(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"batches": {}}


# --------------------------------------------------------------------------- driver


def _poll(client: Any, batch_id: str, *, poll_interval: float, deadline: float, on_status=None) -> Any:
    while True:
        b = client.batches.retrieve(batch_id)
        if on_status is not None:
            on_status(b)
        if b.status in TERMINAL:
            return b
        now = time.monotonic()
        if now >= deadline:
            raise BatchTimeout(f"batch {batch_id} still {b.status!r} after polling; re-run run_batch() to resume")
        time.sleep(min(poll_interval, max(0.0, deadline - now)))


def _collect(
    client: Any,
    b: Any,
    reqs: Mapping[str, GenRequest],
    store: JsonlStore,
    fstore: JsonlStore,
    report: GenerationReport,
) -> None:
    """Download a terminal batch's files; append records and failures; update the report."""
    run_id = f"{b.id}"
    records: list[dict] = []
    failures: list[dict] = []
    for fid in (getattr(b, "output_file_id", None), getattr(b, "error_file_id", None)):
        if fid:
            text = client.files.content(fid).text
            r, f = parse_batch_output(text, reqs, run_id=run_id)
            records += r
            failures += f
    seen = {r["key"] for r in records} | {f["request_key"] for f in failures}
    reason = f"batch {b.id} ended {b.status!r} without a result for this request"
    if b.status == "failed" and getattr(b, "errors", None) is not None:
        errs = getattr(b.errors, "data", None) or []
        if errs:
            reason += ": " + "; ".join(str(getattr(e, "message", e)) for e in errs[:3])
    failures += missing_failures(reqs, seen, run_id=run_id, reason=reason)
    done = store.keys()
    new = [r for r in records if r["key"] not in done]
    store.append(new)
    failures = [f for f in failures if f["request_key"] not in done]
    fstore.append(failures)
    report.n_ok += len(new)
    report.n_failed += len(failures)
    report.failed_keys += [f["request_key"] for f in failures]
    for r in new:
        report.tokens_in += r["usage"]["prompt_tokens"]
        report.tokens_out += r["usage"]["completion_tokens"]


def run_batch(
    requests: Iterable[GenRequest],
    store_path: str | os.PathLike,
    base_url: str | None = None,
    model: str | None = None,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    poll_interval: float = 30.0,
    timeout: float = 25 * 3600.0,
    completion_window: str = "24h",
    max_per_batch: int = 50_000,
    price_per_1k_in: float | None = None,
    price_per_1k_out: float | None = None,
    send_seed: bool = True,
    token_param: str = "max_tokens",
    metadata: Mapping[str, str] | None = None,
    progress: bool = True,
    client: Any = None,
) -> GenerationReport:
    """Generate ``requests`` through the Batch API; see the module docstring.

    ``base_url=None`` uses the OpenAI default. Raises :class:`BatchTimeout` when polling
    exceeds ``timeout`` seconds (the state file keeps the batch ids: re-run to resume).
    ``client`` (an ``openai.OpenAI``) overrides ``base_url``/``api_key_env``.
    """
    import openai

    t_start = time.monotonic()
    deadline = t_start + timeout
    reqs = resolve_requests(requests, model)
    by_key = {r.key: r for r in reqs}
    store = JsonlStore(store_path)
    fstore = JsonlStore(failures_path(store_path))
    spath = batch_state_path(store_path)
    state = _load_state(spath)
    if client is None:
        client = openai.OpenAI(base_url=base_url, api_key=api_key(api_key_env), max_retries=5, timeout=120.0)

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    last_status: dict[str, str] = {}

    def on_status(b: Any) -> None:  # print status changes only, not every poll
        if last_status.get(b.id) != b.status:
            last_status[b.id] = b.status
            counts = getattr(b, "request_counts", None)
            say(f"batch {b.id}: {b.status}" + (f" {counts}" if counts else ""))

    report = GenerationReport(store_path=str(store.path), failures_path=str(fstore.path), mode="batch",
                              n_requested=len(reqs))
    done_before = store.keys()
    report.n_cached = sum(1 for k in by_key if k in done_before)

    def save() -> None:
        atomic_write_json(spath, state)

    try:
        # 1. resume batches submitted earlier and not collected
        for bid, info in list(state["batches"].items()):
            if info.get("collected"):
                continue
            say(f"resuming batch {bid} ({info.get('n')} requests)")
            keys = set(info.get("keys") or [])
            sub = {k: by_key[k] for k in keys if k in by_key}
            b = _poll(client, bid, poll_interval=poll_interval, deadline=deadline,
                      on_status=on_status)
            _collect(client, b, sub, store, fstore, report)
            info.update(collected=True, status=b.status)
            save()

        # 2. submit what is still missing
        done = store.keys()
        todo = [r for r in reqs if r.key not in done]
        submitted: list[tuple[str, dict[str, GenRequest]]] = []
        for i in range(0, len(todo), max_per_batch):
            chunk = todo[i : i + max_per_batch]
            payload = build_batch_jsonl(chunk, send_seed=send_seed, token_param=token_param)
            name = f"simlib-{content_hash(sorted(r.key for r in chunk))}.jsonl"
            f = client.files.create(file=(name, payload, "application/jsonl"), purpose="batch")
            b = client.batches.create(
                input_file_id=f.id,
                endpoint=BATCH_ENDPOINT,
                completion_window=completion_window,
                metadata=dict(metadata or {"source": "simlib"}),
            )
            state["batches"][b.id] = {
                "input_file_id": f.id,
                "n": len(chunk),
                "keys": [r.key for r in chunk],
                "created": int(time.time()),
                "status": b.status,
                "collected": False,
            }
            save()
            say(f"submitted batch {b.id} ({len(chunk)} requests)")
            submitted.append((b.id, {r.key: r for r in chunk}))

        # 3-4. poll and collect
        for bid, sub in submitted:
            b = _poll(client, bid, poll_interval=poll_interval, deadline=deadline,
                      on_status=on_status)
            _collect(client, b, sub, store, fstore, report)
            state["batches"][bid].update(collected=True, status=b.status)
            save()
    except openai.APIError as exc:  # never let the key leak through an error message
        raise RuntimeError(scrub(f"{type(exc).__name__}: {exc}", api_key(api_key_env))) from None
    finally:
        report.cost_usd = estimate_cost(report.tokens_in, report.tokens_out, price_per_1k_in, price_per_1k_out)
        report.wall_s = time.monotonic() - t_start
    # a key both resumed-and-failed and later stored is not a failure of this run
    final = store.keys()
    report.failed_keys = sorted({k for k in report.failed_keys if k not in final})
    report.n_failed = len(report.failed_keys)
    return report
