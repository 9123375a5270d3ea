"""A scriptable stub of the OpenAI HTTP API for tests (127.0.0.1 only, threaded).

Chat completions (``POST /v1/chat/completions``) answer ``"reply to <tag>"`` where ``<tag>``
is the content of the last message, unless a *script* says otherwise. Scripts are per tag:
``stub.script["post-3"] = ["429", "500", "ok"]`` makes the first three requests for that tag
answer 429, then 500, then normally; when a script runs out the ``default`` action applies.
``stub.always["post-9"] = "500"`` fails that tag forever.

Actions: ``ok``, ``429`` (with ``Retry-After: <retry_after>``), ``500``, ``400``, ``drop``
(headers and half a body, then the connection is closed), ``truncated`` (200 with a cut
JSON body), ``empty`` (200 with ``choices: []``), ``slow`` (sleep ``slow_s`` then ok), ``echo_auth_500``
(500 whose error message quotes the request's Authorization header).
``short`` (the last of ``n`` choices missing), ``null_first`` (choice 0 without content).
Requests with ``n`` get ``n`` choices, choice ``j`` seeded ``seed + j``.
``delay_s`` delays every response.

The stub also implements a minimal Batch API: ``POST /v1/files`` (multipart), ``POST
/v1/batches``, ``GET /v1/batches/{id}`` (``validating`` -> ``in_progress`` -> ``completed``
over successive polls), ``GET /v1/files/{id}/content``. Batch lines whose tag is in
``batch_fail`` get an error line in the error file.
"""
from __future__ import annotations

import email.parser
import itertools
import json
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _tag(body: dict) -> str:
    msgs = body.get("messages") or [{}]
    return str(msgs[-1].get("content", ""))


class StubState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: dict[str, list[str]] = defaultdict(list)
        self.always: dict[str, str] = {}
        self.default = "ok"
        self.retry_after = "0"
        self.delay_s = 0.0
        self.slow_s = 3.0
        self.requests: list[dict] = []  # every chat body received, in order
        self.tag_counts: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.log_path: str | None = None
        # batch API
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls: Counter[str] = Counter()
        self.batch_fail: set[str] = set()
        self.ids = itertools.count(1)

    def next_action(self, tag: str) -> str:
        with self.lock:
            if tag in self.always:
                return self.always[tag]
            if self.script.get(tag):
                return self.script[tag].pop(0)
            return self.default


def completion(body: dict, tag: str) -> dict:
    """``n`` choices (default 1), choice ``j`` seeded ``seed + j`` as the local servers seed them; usage
    counts the prompt once and every choice's completion, as the OpenAI API bills it."""
    seed = body.get("seed")
    texts = [f"reply to {tag} seed={None if seed is None else seed + j} t={body.get('temperature')}"
             for j in range(int(body.get("n") or 1))]
    n_in = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    n_out = sum(len(t.split()) for t in texts)
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [{"index": j, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                    for j, t in enumerate(texts)],
        "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
    }


def make_handler(state: StubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:  # quiet
            pass

        # ---- helpers
        def _send(self, code: int, obj: Any = None, raw: bytes | None = None, headers: dict | None = None,
                  ctype: str = "application/json") -> None:
            data = raw if raw is not None else json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        # ---- routes
        def do_GET(self) -> None:
            try:
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
                if self.path.startswith("/v1/batches/"):
                    return self._batch_get(self.path.split("/")[3])
                if self.path.startswith("/v1/files/") and self.path.endswith("/content"):
                    fid = self.path.split("/")[3]
                    if fid not in state.files:
                        return self._send(404, {"error": {"message": "no such file"}})
                    return self._send(200, raw=state.files[fid], ctype="application/octet-stream")
                self._send(404, {"error": {"message": "not found"}})
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:
            try:
                raw = self._body()
                if self.path.rstrip("/") == "/v1/chat/completions":
                    return self._chat(json.loads(raw))
                if self.path.rstrip("/") == "/v1/files":
                    return self._file_upload(raw)
                if self.path.rstrip("/") == "/v1/batches":
                    return self._batch_create(json.loads(raw))
                self._send(404, {"error": {"message": "not found"}})
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _chat(self, body: dict) -> None:
            tag = _tag(body)
            with state.lock:
                state.requests.append(body)
                state.tag_counts[tag] += 1
                state.auth_headers.append(self.headers.get("Authorization", ""))
                if state.log_path:
                    with open(state.log_path, "a") as fh:
                        fh.write(tag + "\n")
            action = state.next_action(tag)
            if state.delay_s:
                time.sleep(state.delay_s)
            if action == "slow":
                time.sleep(state.slow_s)
                action = "ok"
            if action == "ok":
                return self._send(200, completion(body, tag))
            if action == "429":
                return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                  headers={"Retry-After": state.retry_after})
            if action == "500":
                return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
            if action == "echo_auth_500":  # an error body that quotes the credentials back
                return self._send(500, {"error": {"message": f"bad auth {self.headers.get('Authorization')}"}})
            if action == "400":
                return self._send(400, {"error": {"message": "bad request", "type": "invalid_request_error"}})
            if action == "empty":
                c = completion(body, tag)
                c["choices"] = []
                return self._send(200, c)
            if action == "short":  # the last choice is missing
                c = completion(body, tag)
                c["choices"] = c["choices"][:-1]
                return self._send(200, c)
            if action == "null_first":  # choice 0 has no content (and did not stop for length)
                c = completion(body, tag)
                c["choices"][0]["message"]["content"] = None
                return self._send(200, c)
            if action == "truncated":
                data = json.dumps(completion(body, tag)).encode()
                return self._send(200, raw=data[: len(data) // 2])
            if action == "drop":
                data = json.dumps(completion(body, tag)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            raise ValueError(f"unknown stub action {action!r}")

        # ---- batch API
        def _file_upload(self, raw: bytes) -> None:
            ctype = self.headers.get("Content-Type", "")
            msg = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw
            )
            content, purpose, filename = b"", "", "upload.jsonl"
            for part in msg.get_payload():
                name = part.get_param("name", header="content-disposition")
                if name == "file":
                    content = part.get_payload(decode=True)
                    filename = part.get_filename() or filename
                elif name == "purpose":
                    purpose = part.get_payload(decode=True).decode()
            fid = f"file-{next(state.ids)}"
            state.files[fid] = content
            self._send(200, {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                             "filename": filename, "purpose": purpose, "status": "processed"})

        def _batch_obj(self, bid: str) -> dict:
            return state.batches[bid]

        def _batch_create(self, body: dict) -> None:
            bid = f"batch_{next(state.ids)}"
            state.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"], "status": "validating",
                "created_at": int(time.time()), "metadata": body.get("metadata"),
            }
            self._send(200, state.batches[bid])

        def _batch_get(self, bid: str) -> None:
            if bid not in state.batches:
                return self._send(404, {"error": {"message": "no such batch"}})
            b = state.batches[bid]
            state.batch_polls[bid] += 1
            if b["status"] == "validating":
                b["status"] = "in_progress"
            elif b["status"] == "in_progress":
                self._run_batch(b)
            self._send(200, b)

        def _run_batch(self, b: dict) -> None:
            out, err = [], []
            lines = state.files[b["input_file_id"]].decode().splitlines()
            for i, line in enumerate(lines):
                req = json.loads(line)
                tag = _tag(req["body"])
                with state.lock:
                    state.requests.append(req["body"])
                    state.tag_counts[tag] += 1
                if tag in state.batch_fail:
                    err.append({"id": f"batch_req_{i}", "custom_id": req["custom_id"],
                                "response": {"status_code": 500, "request_id": "r",
                                             "body": {"error": {"message": "batch item failed", "type": "server_error"}}},
                                "error": None})
                else:
                    out.append({"id": f"batch_req_{i}", "custom_id": req["custom_id"],
                                "response": {"status_code": 200, "request_id": "r", "body": completion(req["body"], tag)},
                                "error": None})
            b["status"] = "completed"
            b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
            if out:
                fid = f"file-{next(state.ids)}"
                state.files[fid] = ("\n".join(json.dumps(x) for x in out) + "\n").encode()
                b["output_file_id"] = fid
            if err:
                fid = f"file-{next(state.ids)}"
                state.files[fid] = ("\n".join(json.dumps(x) for x in err) + "\n").encode()
                b["error_file_id"] = fid

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # dropped sockets are expected
        pass


class StubServer:
    """``with StubServer() as stub: stub.base_url ...``; ``stub.state`` holds scripts and counts."""

    def __init__(self) -> None:
        self.state = StubState()
        self.httpd = _QuietServer(("127.0.0.1", 0), make_handler(self.state))
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "StubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

