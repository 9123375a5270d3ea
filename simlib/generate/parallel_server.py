"""An OpenAI-compatible chat server that decodes concurrent requests together (llama.cpp, one process).

``python -m simlib.generate.parallel_server --model M.gguf --port P [--slots 8] [--n_threads N]``

Why it exists: llama-cpp-python's own server runs one completion at a time and ignores ``n``, so
the six replies to a post are decoded one after another. On a CPU one decode step of a small model
costs about the time it takes to read its weights, whatever the number of sequences in the step,
so decoding a post's replies in one batch is several times faster (the Performance chapter
measures it). This server keeps up to ``slots`` sequences in one llama.cpp context, one KV cache stream
each, and loops:

1. admit waiting requests into free slots; a new sequence copies the longest prefix of its
   prompt that any slot holds (the samples of a post share the whole prompt, which is then
   stored once) and prefills only the rest;
2. decode one token of every running sequence, and the pending prompt tokens, in one
   ``llama_decode``;
3. sample each sequence with its own sampler chain, seeded by its request's ``seed``: the chain
   llama-cpp-python's server uses by default (repetition penalty 1.1 over the last 64 generated
   tokens, top-k 40, top-p, min-p 0.05, temperature; greedy at temperature 0).

API: ``GET /v1/models``; ``POST /v1/chat/completions`` with ``messages``, ``temperature``,
``top_p``, ``max_tokens`` (or ``max_completion_tokens``), ``seed``, ``n`` (choice ``j`` is seeded
``seed + j``) and ``stop``. Answers carry ``usage`` and ``finish_reason`` (``stop`` or ``length``).
Prompts use the ChatML template (SmolLM2's), formatted as llama-cpp-python formats it. Streaming,
tools and logprobs are not supported (400).

Each sequence attends only to its own cache, so sequences decoded together stay apart: a greedy
reply is the one-at-a-time reply (``tests/test_parallel_server.py``). A sampled reply depends on
its seed, and in its last bits on the batch it was decoded in (a batch sums in another order,
which can flip a sampled token), so replay a reply from the store, not by re-sampling it.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from simlib.lm.weights import quiet_llama_log

__all__ = ["Engine", "Completion", "serve", "main"]

# llama-cpp-python's server defaults, so replies are sampled as they were from it.
TOP_K, MIN_P, REPEAT_PENALTY, PENALTY_LAST_N = 40, 0.05, 1.1, 64


@dataclass
class Completion:
    """One finished choice: its text, why it stopped, and its token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Job:
    prompt: list[int]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    n: int
    stop: list[str]
    choices: list[Completion | None] = field(default_factory=list)
    error: str | None = None
    error_code: int = 500
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Seq:
    job: _Job
    choice: int
    slot: int
    sampler: Any
    pending: list[int]  # tokens to feed: the prompt's uncached rest, then the last sampled token
    n_past: int  # position of pending[0]
    out: list[int] = field(default_factory=list)
    text: bytes = b""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Engine:
    """The model, one context with ``slots`` sequences, and the scheduling loop (run in a thread)."""

    def __init__(self, model_path: str, *, slots: int = 8, n_ctx: int | None = None, n_batch: int = 1024,
                 n_threads: int = 1, seed: int = 0):
        import llama_cpp as L

        self.L, self.slots, self.n_batch, self.default_seed = L, slots, n_batch, seed
        quiet_llama_log(L)
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(str(model_path).encode(), L.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cp = L.llama_context_default_params()
        n_ctx = n_ctx or 1024 * slots
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, n_batch, min(n_batch, 512), slots
        cp.n_threads = cp.n_threads_batch = n_threads
        # One cache stream per slot: a sequence's cells then sit in position order whatever else
        # runs, so its attention sums in the same order (a unified cache interleaves sequences,
        # and the changed order flips sampled tokens). A prefix is copied stream to stream.
        cp.kv_unified = False
        cp.no_perf = True
        # as llama-cpp-python's server (flash attention off), so one sequence decodes as it did there
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.n_ctx = L.llama_n_ctx(self.ctx)
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # tokens whose KV each slot holds
        self.last_used = [0.0] * slots
        self.running: dict[int, _Seq] = {}
        self.waiting: list[tuple[_Job, int]] = []
        self.queue: queue.Queue[_Job] = queue.Queue()

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` with the vocabulary's BOS rule and special tokens parsed."""
        raw = text.encode("utf-8")
        size = len(raw) + 8
        buf = (self.L.llama_token * size)()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, size, True, True)
        if n < 0:
            size = -n
            buf = (self.L.llama_token * size)()
            n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, size, True, True)
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(128)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:max(n, 0)]

    def _sampler(self, temperature: float, top_p: float, seed: int) -> Any:
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(self.n_vocab, PENALTY_LAST_N, REPEAT_PENALTY, 0.0, 0.0))
        if temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            for s in (L.llama_sampler_init_top_k(TOP_K), L.llama_sampler_init_top_p(top_p, 1),
                      L.llama_sampler_init_min_p(MIN_P, 1), L.llama_sampler_init_temp(temperature),
                      L.llama_sampler_init_dist(seed & 0xFFFFFFFF)):
                L.llama_sampler_chain_add(chain, s)
        return chain

    # ------------------------------------------------------------------ scheduling
    def submit(self, job: _Job) -> _Job:
        job.choices = [None] * job.n
        self.queue.put(job)
        return job

    def _admit(self) -> None:
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            # each slot's share of the cache: then the cache cannot overflow, whatever is running
            if len(job.prompt) + job.max_tokens > self.n_ctx // self.slots:
                job.error = (f"prompt ({len(job.prompt)} tokens) + max_tokens ({job.max_tokens}) exceed a slot's "
                             f"{self.n_ctx // self.slots} tokens (raise --n_ctx)")
                job.error_code = 400
                job.done.set()
                continue
            self.waiting.extend((job, j) for j in range(job.n))
        free = [s for s in range(self.slots) if s not in self.running]
        deferred: list[tuple[_Job, int]] = []
        while self.waiting and free:
            job, j = self.waiting.pop(0)
            shared = [_common_prefix(c, job.prompt) for c in self.cached]  # what each slot's cache holds of it
            # A sequence still reading a prompt that shares more with this one than any cache does:
            # wait for it, then copy its prefix instead of reading the same tokens again.
            if any(s.n_past < len(s.job.prompt) and _common_prefix(s.job.prompt, job.prompt) > max(shared) + 16
                   for s in self.running.values()):
                deferred.append((job, j))
                continue
            # the free slot that already holds most of this prompt, else the least recently used
            slot = max(free, key=lambda s: (shared[s], -self.last_used[s]))
            free.remove(slot)
            # copy from the slot holding most of it (the chosen slot itself when none holds more)
            src = slot if shared[slot] == max(shared) else shared.index(max(shared))
            keep = shared[src]
            keep = min(keep, len(job.prompt) - 1)  # feed at least one prompt token to get logits
            if src != slot:  # streams are copied whole; the tail is dropped below
                self.L.llama_memory_seq_rm(self.mem, slot, -1, -1)
                self.L.llama_memory_seq_cp(self.mem, src, slot, -1, -1)
            self.L.llama_memory_seq_rm(self.mem, slot, keep, -1)
            self.cached[slot] = job.prompt[:keep]
            self.running[slot] = _Seq(job, j, slot, self._sampler(job.temperature, job.top_p, job.seed + j),
                                      pending=job.prompt[keep:], n_past=keep)
        self.waiting[:0] = deferred

    def _finish(self, seq: _Seq, reason: str) -> None:
        del self.running[seq.slot]
        self.last_used[seq.slot] = time.monotonic()
        self.L.llama_sampler_free(seq.sampler)
        text = seq.text.decode("utf-8", "replace")
        for s in seq.job.stop:
            if s and s in text:
                text, reason = text[:text.index(s)], "stop"
        seq.job.choices[seq.choice] = Completion(text, reason, len(seq.job.prompt), len(seq.out))
        if all(c is not None for c in seq.job.choices):
            seq.job.done.set()

    def step(self) -> None:
        """One ``llama_decode`` over every running sequence, then one sampled token for each that is due."""
        b, L = self.batch, self.L
        b.n_tokens = 0
        due: list[tuple[_Seq, int]] = []
        # decoding sequences first (one token each), then prompt chunks in the room left
        for seq in sorted(self.running.values(), key=lambda s: len(s.pending)):
            room = self.n_batch - b.n_tokens
            if room <= 0:
                break
            chunk = seq.pending[:room]
            for k, tok in enumerate(chunk):
                i = b.n_tokens
                b.token[i], b.pos[i], b.n_seq_id[i] = tok, seq.n_past + k, 1
                b.seq_id[i][0] = seq.slot
                b.logits[i] = False
                b.n_tokens += 1
            self.cached[seq.slot].extend(chunk)
            seq.n_past += len(chunk)
            seq.pending = seq.pending[len(chunk):]
            if not seq.pending:
                b.logits[b.n_tokens - 1] = True
                due.append((seq, b.n_tokens - 1))
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (KV cache full?)")
        for seq, i in due:
            tok = L.llama_sampler_sample(seq.sampler, self.ctx, i)
            if L.llama_vocab_is_eog(self.vocab, tok):
                self._finish(seq, "stop")
                continue
            seq.out.append(tok)
            seq.text += self._piece(tok)
            if seq.job.stop and any(s in seq.text.decode("utf-8", "replace") for s in seq.job.stop):
                self._finish(seq, "stop")
            elif len(seq.out) >= seq.job.max_tokens:
                self._finish(seq, "length")
            else:
                seq.pending = [tok]

    def _free_idle_cache(self) -> None:
        for s in range(self.slots):
            if s not in self.running and self.cached[s]:
                self.L.llama_memory_seq_rm(self.mem, s, -1, -1)
                self.cached[s] = []

    def loop(self) -> None:
        """Serve forever: block while idle, otherwise admit and step."""
        while True:
            if not self.running and not self.waiting:
                self.queue.put(self.queue.get())  # block until a job arrives
            self._admit()
            if not self.running:
                continue
            try:
                self.step()
            except RuntimeError as exc:
                # a full cache: drop what idle slots keep and fail the running jobs once
                self._free_idle_cache()
                for seq in list(self.running.values()):
                    seq.job.error = str(exc)
                    self.L.llama_sampler_free(seq.sampler)
                    self.L.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)
                    self.cached[seq.slot] = []
                    seq.job.done.set()
                self.running.clear()


def _format_chatml(messages: list[dict[str, Any]]) -> tuple[str, str]:
    from llama_cpp.llama_chat_format import format_chatml

    res = format_chatml(messages)
    return res.prompt, res.stop


def _parse(body: dict[str, Any], engine: Engine) -> _Job:
    for unsupported in ("stream", "tools", "logprobs", "functions"):
        if body.get(unsupported):
            raise ValueError(f"{unsupported!r} is not supported by this server")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    prompt, template_stop = _format_chatml(messages)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    n = int(body.get("n") or 1)
    max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
    temperature = float(body["temperature"]) if body.get("temperature") is not None else 0.8
    top_p = float(body["top_p"]) if body.get("top_p") is not None else 0.95
    if not 1 <= n <= 64 or max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("need 1 <= n <= 64, max_tokens >= 1, temperature >= 0, 0 < top_p <= 1")
    seed = int(body["seed"]) if body.get("seed") is not None else engine.default_seed
    return _Job(engine.tokenize(prompt), temperature, top_p, max_tokens, seed, n, [template_stop, *stop])


def serve(engine: Engine, host: str, port: int, model_alias: str) -> ThreadingHTTPServer:
    """An HTTP server bound to ``host:port`` answering for ``engine`` (call ``serve_forever``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, msg: str) -> None:
            self._send(code, {"error": {"message": msg, "type": "invalid_request_error" if code < 500 else "server_error"}})

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": model_alias, "object": "model", "owned_by": "simlib"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # always read: keep-alive
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(raw or b"{}")
                job = _parse(body, engine)
            except (ValueError, TypeError, KeyError) as exc:
                return self._error(400, str(exc))
            engine.submit(job).done.wait()
            if job.error:
                return self._error(job.error_code, job.error)
            done = [c for c in job.choices if c is not None]
            n_out = sum(c.completion_tokens for c in done)
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or model_alias, "system_fingerprint": None,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                             "finish_reason": c.finish_reason} for i, c in enumerate(done)],
                "usage": {"prompt_tokens": len(job.prompt), "completion_tokens": n_out,
                          "total_tokens": len(job.prompt) + n_out},
            })

        def log_message(self, fmt: str, *args: Any) -> None:  # one line per request on stderr
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    return httpd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simlib.generate.parallel_server", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--model_alias", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--slots", type=int, default=8, help="sequences decoded together")
    ap.add_argument("--n_ctx", type=int, default=None, help="KV cells shared by all slots (default 1024 per slot)")
    ap.add_argument("--n_batch", type=int, default=1024)
    ap.add_argument("--n_threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of requests that send none")
    ns = ap.parse_args(argv)
    engine = Engine(ns.model, slots=ns.slots, n_ctx=ns.n_ctx, n_batch=ns.n_batch, n_threads=ns.n_threads, seed=ns.seed)
    threading.Thread(target=engine.loop, name="engine", daemon=True).start()
    alias = ns.model_alias or ns.model.rsplit("/", 1)[-1].removesuffix(".gguf")
    httpd = serve(engine, ns.host, ns.port, alias)
    print(f"parallel_server: {alias} on http://{ns.host}:{ns.port}/v1 ({ns.slots} slots, {ns.n_threads} threads)",
          file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
