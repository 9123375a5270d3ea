"""Generation throughput: the local llama.cpp servers vs ``transformers serve``, same prompts, same client.

``python -m benchmarks.bench_generate [--quick] [--threads N]`` prints a JSON dict; :func:`run` returns it.

The servers answer the OpenAI chat API on 127.0.0.1 and serve SmolLM2-135M-Instruct:

* ``llama_server`` (the book's, llama.cpp's ``llama-server``): the shipped Q4_1 weights as a
  16-bit GGUF (``smollm2_gguf_f16``), up to ``slots`` replies decoded together, sent as the pipeline
  sends them (a post's replies as one request with ``n``, ``slots`` replies in flight);
* ``transformers`` (the baseline): ``transformers serve`` on the float32 Hugging Face folder
  dequantised from that same GGUF (``simlib.lm.weights.resolve``), loaded offline from the local path,
  one request at a time (it handles one at a time unless continuous batching is on);
* ``transformers_cb``: the same with ``--continuous-batching``, sent ``slots`` at a time (recorded
  as an error if it does not run on this CPU).

The requests are the book's own: real r/AITAH posts of the ``smoke`` profile through
``simlib.generate.make_requests`` (its prompt styles), sent by ``simlib.generate.generate`` into a
fresh temporary store per repetition. Decoding is greedy (``temperature=0``): ``transformers
serve`` samples only when the model's generation config sets ``do_sample`` (SmolLM2's does not,
so it would ignore a temperature) and it ignores ``n`` (so it is sent one request per reply); with ``temperature=0`` every server does
the same work per token. All get the same number of CPU threads. Reported: completion tokens per
second of each server per repetition (wall time of the whole ``generate`` call, prompt processing
included), the medians and their ratios. If ``transformers serve`` cannot start here, a plain
``model.generate`` loop in this process is the baseline instead and ``baseline`` says so.
"""
from __future__ import annotations

import argparse
import contextlib
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

from simlib.lm import weights  # noqa: F401  (offline environment variables)


class TransformersServe:
    """``transformers serve <local folder>`` on 127.0.0.1 and a free port, as a context manager."""

    def __init__(self, model_dir: str, threads: int, log_path: Path, startup_timeout: float = 180.0,
                 extra: list[str] | None = None):
        self.model_dir, self.threads, self.log_path, self.extra = model_dir, threads, log_path, list(extra or [])
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
               "--device", "cpu", "--dtype", "float32", "--log-level", "warning", *self.extra]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.__exit__()
                raise RuntimeError(f"transformers serve exited with code {code}: "
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


def _requests(n_prompts: int, max_tokens: int, n_samples: int = 1, skip: int = 0, max_post_chars: int | None = None):
    """``n_prompts`` requests (x ``n_samples`` consecutive samples each) for real posts of the
    ``smoke`` profile, one style per post first, so a few prompts span many posts."""
    from simlib import config, steps
    from simlib.generate import make_requests

    cfg = config.load("smoke")
    df, _ = steps.real_responses(cfg)
    posts = steps.test_posts(cfg, df)
    reqs = make_requests(posts, cfg.styles, n_samples, None, temperature=0.0, top_p=1.0, max_tokens=max_tokens,
                         seed=cfg.seed, max_post_chars=max_post_chars or cfg.max_post_chars)
    reqs = sorted(reqs, key=lambda r: (cfg.styles.index(r.style), str(r.post_id), r.sample_index))
    return reqs[skip * n_samples:(skip + n_prompts) * n_samples]


def _timed_generate(reqs, base_url: str, model: str, tmp: Path, tag: str, concurrency: int = 1,
                    max_n: int | None = None) -> dict[str, Any]:
    from simlib.cache import JsonlStore
    from simlib.generate import generate

    store = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=tmp)) / "store.jsonl"
    t0 = time.perf_counter()
    report = generate(reqs, store, base_url, model, concurrency=concurrency, progress=False, timeout=300.0,
                      max_retries=1, max_n=max_n)
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

    from simlib.lm.weights import load_causal_lm

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
            "median_wall_s": round(statistics.median(r["wall_s"] for r in reps), 3),
            "median_completion_tokens": statistics.median(r["completion_tokens"] for r in reps),
            "tok_per_s": [round(r["tok_per_s"], 2) for r in reps],
            "wall_s": [round(r["wall_s"], 2) for r in reps],
            "completion_tokens": [r["completion_tokens"] for r in reps],
            "finish_length": [r["finish_length"] for r in reps]}


def _decode_rate(full: dict, prefill: dict) -> float | None:
    """Tokens/s after the prompt: (tokens - prefill tokens) / (wall - prefill wall), medians."""
    dt = full["median_wall_s"] - prefill["median_wall_s"]
    dn = full["median_completion_tokens"] - prefill["median_completion_tokens"]
    return round(dn / dt, 2) if dt > 0 and dn > 0 else None


def run(quick: bool = False, threads: int | None = None, repeats: int | None = None,
        n_prompts: int | None = None, max_tokens: int | None = None, slots: int = 8) -> dict[str, Any]:
    """Median completion tokens/s of each server on the same requests, and their ratios.

    Three workloads, each repeated with the order of the servers alternating:

    * ``distinct``: ``n_prompts`` different posts, one reply each;
    * ``prefill``: the same requests with ``max_tokens=1``, i.e. the cost of reading the prompt,
      from which ``decode_tok_per_s`` (tokens/s once the prompt is read) is derived;
    * ``samples`` (the headline ``speedup``, llama-server vs ``transformers serve``): 2 posts x
      ``slots`` replies each, the shape of the book's requests (``n_samples`` replies per post):
      llama-server gets each post's replies as one request with ``n``, reads the prompt once and
      decodes the replies together; ``transformers serve`` reads the prompt again every time.

    ``quick``: 2 prompts x 8 tokens, 1 post x 2 samples, posts cut to 400 characters, 1
    repetition, no continuous-batching baseline (checks that everything still runs). Full: 8
    prompts x 64 tokens, 3 repetitions. ``threads``: CPU threads of each server (default: cores
    minus one, the local server's default).
    """
    from simlib.generate import LocalServer
    from simlib.generate.server import default_threads
    from simlib.lm.weights import resolve

    threads = threads or default_threads()
    repeats = repeats or (1 if quick else 3)
    n_prompts = n_prompts or (2 if quick else 8)
    max_tokens = max_tokens or (8 if quick else 64)
    n_samp_prompts, n_samples = (1, 2) if quick else (2, slots)
    chars = 400 if quick else None  # quick: short posts, the prompt is most of the time otherwise
    work = {"distinct": _requests(n_prompts, max_tokens, max_post_chars=chars),
            "prefill": _requests(n_prompts, 1, max_post_chars=chars),
            "samples": _requests(n_samp_prompts, max_tokens, n_samples=n_samples, skip=n_prompts, max_post_chars=chars)}
    warm = _requests(1, 4, skip=n_prompts + n_samp_prompts, max_post_chars=chars)  # a post measured nowhere else
    model_dir = resolve("smollm2-135m")
    res: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct", "prompts": len(work["distinct"]), "max_tokens": max_tokens,
        "samples_workload": f"{n_samp_prompts} posts x {n_samples} replies, consecutive",
        "decoding": "greedy (temperature 0) on all", "threads": threads, "repeats": repeats, "slots": slots,
        "client": (f"simlib.generate.generate, fresh store per repetition; concurrency {slots} for the batching "
                   "servers (llama_server with n per post, transformers_cb), 1 for transformers serve"),
        "llama_server_weights": "F16 GGUF, dequantised from the Q4_1 one",
        "transformers_weights": "float32, dequantised from the Q4_1 GGUF",
    }
    reps: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        servers: dict[str, tuple[str, str, int]] = {}  # name -> (base_url, model, concurrency)
        srv = stack.enter_context(LocalServer(n_threads=threads, seed=0, log_path=tmp / "llama_server.log",
                                              slots=slots))
        servers["llama_server"] = (srv.base_url, srv.model, srv.slots)
        for name, extra, conc in (("transformers", [], 1),) + ((() if quick else
                                  (("transformers_cb", ["--continuous-batching"], slots),))):
            try:
                tf = stack.enter_context(TransformersServe(model_dir, threads, tmp / f"{name}.log", extra=extra))
                _timed_generate(warm, tf.base_url, model_dir, tmp, f"warm-{name}", conc, max_n=1)
                servers[name] = (tf.base_url, model_dir, conc)
            except RuntimeError as exc:
                res[f"{name}_error"] = str(exc)[-500:]
        for name, (url, model, conc) in servers.items():
            if not name.startswith("transformers"):
                _timed_generate(warm, url, model, tmp, f"warm-{name}", conc)
            reps[name] = {k: [] for k in work}
        for k in range(repeats):
            order = list(servers.items())
            for wname, reqs in work.items():
                for name, (url, model, conc) in (order if k % 2 == 0 else order[::-1]):
                    reps[name][wname].append(_timed_generate(reqs, url, model, tmp, f"{name}-{wname}", conc,
                                                             max_n=1 if name.startswith("transformers") else None))
    if "transformers" in servers:
        res["baseline"] = "transformers serve (local folder, offline, --device cpu --dtype float32)"
    else:
        res["baseline"] = "transformers generate loop (fallback: transformers serve did not start)"
        reps["transformers"] = {"distinct": _generate_loop(work["distinct"], threads, repeats)}
    for side, r in reps.items():
        res[side] = _summary(r["distinct"])
        if r.get("prefill"):
            res[side]["prefill"] = _summary(r["prefill"])
            res[side]["prefill_s_per_request"] = round(res[side]["prefill"]["median_wall_s"] / len(work["prefill"]), 3)
            res[side]["decode_tok_per_s"] = _decode_rate(res[side], res[side]["prefill"])
            res[side]["samples"] = _summary(r["samples"])

    def ratio(a: str, b: str, workload: str | None = None) -> float | None:
        ra, rb = res.get(a) or {}, res.get(b) or {}
        if workload:
            ra, rb = ra.get(workload) or {}, rb.get(workload) or {}
        va, vb = ra.get("median_tok_per_s"), rb.get("median_tok_per_s")
        return round(va / vb, 2) if va and vb else None

    res["speedup"] = ratio("llama_server", "transformers", "samples") or ratio("llama_server", "transformers")
    res["speedup_distinct"] = ratio("llama_server", "transformers")
    res["speedup_vs_transformers_cb_samples"] = ratio("llama_server", "transformers_cb", "samples")
    if "prefill" in res["llama_server"] and "prefill" in res["transformers"]:
        dl, dt = res["llama_server"]["decode_tok_per_s"], res["transformers"]["decode_tok_per_s"]
        res["speedup_decode"] = round(dl / dt, 2) if dl and dt else None
        res["speedup_prefill"] = round(res["transformers"]["prefill_s_per_request"]
                                       / res["llama_server"]["prefill_s_per_request"], 2)
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
