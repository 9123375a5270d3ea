"""Prefix-shared scoring vs the naive one-pass-per-reply reference, on real r/AITAH threads.

``python -m benchmarks.bench_logprob [--quick] [--threads N] [--model NAME]`` prints a JSON dict:
wall times of :func:`simlib.lm.logprob.score` and :func:`simlib.lm.logprob.score_naive` on the same
requests (``repeats`` alternating repetitions, medians reported), the speed ratio, response tokens
scored per second, and the largest absolute differences between the two (per token, mean and sum).
Full run: 3 long posts x 8 replies, Gemma 3 270M, posts up to 2000 characters, replies up to 128
tokens. ``linear_flop_bound_speedup`` is the ratio of the two methods' linear-layer FLOPs (decoder
weights per token, vocabulary projection per scored position; attention ignored): what prefix
sharing alone could give, since both pay the same vocabulary projection for every scored token.
The prefix-shared scoring is also timed with bfloat16 weights (``speedup_bf16_vs_fp32``), with the
largest and mean absolute change of a reply's mean log-prob that this precision costs.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

from pathlib import Path  # noqa: E402
from simlib.data.registry import CRAWLER_SUBDIR, resolve_data_dir  # noqa: E402

# the pinned crawl's r/AITAH folder under the data directory ($SIMLIB_DATA_DIR)
AITAH = str((resolve_data_dir() or Path("/nonexistent")) / CRAWLER_SUBDIR / "docs" / "api" / "aitah")


def load_threads(n_posts: int, n_replies: int, min_body_chars: int, folder: str = AITAH) -> list[dict]:
    """First ``n_posts`` threads (sorted file names) with a long body and enough replies."""
    out = []
    for f in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(f, encoding="utf-8") as fh:
            d = json.load(fh)
        cs = [c["message"].strip() for c in d.get("comments") or []
              if isinstance(c, dict) and (c.get("message") or "").strip()
              and c["message"].strip() not in ("[deleted]", "[removed]")]
        if len(cs) >= n_replies and len((d.get("selftext") or "").strip()) >= min_body_chars:
            out.append({"id": d["submission_id"], "title": d["title"], "body": d["selftext"],
                        "comments": cs[:n_replies]})
        if len(out) == n_posts:
            break
    if len(out) < n_posts:
        raise RuntimeError(f"only {len(out)} suitable threads under {folder}")
    return out


def linear_flops(model, prompt_lens: dict, resp_lens: list[tuple[str, int]]) -> dict:
    """Linear-layer FLOPs of both methods: ``2 * params`` per token through the decoder (embedding
    excluded) and ``2 * vocab * hidden`` per position projected onto the vocabulary."""
    cfg = model.config
    emb = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - emb
    if not getattr(cfg, "tie_word_embeddings", False):
        body -= model.get_output_embeddings().weight.numel()
    head = 2 * model.get_output_embeddings().weight.numel()
    naive = sum(2 * body * (prompt_lens[p] + m) + head * (m + 1) for p, m in resp_lens if m)
    shared = sum(2 * body * n + head for n in prompt_lens.values())
    shared += sum((2 * body + head) * (m - 1) for _, m in resp_lens if m > 1)
    return {"naive_gflop": round(naive / 1e9, 1), "prefix_shared_gflop": round(shared / 1e9, 1),
            "head_share_of_prefix_shared": round(
                (head * (len(prompt_lens) + sum(m - 1 for _, m in resp_lens if m > 1))) / shared, 3),
            "linear_flop_bound_speedup": round(naive / shared, 2)}


def _gemv_gb_per_s(model, repeats: int = 20) -> float:
    """Bytes of the vocabulary projection read per second when one token's hidden state is
    multiplied by it (what every sampled token costs): the memory bandwidth a small model gets."""
    import torch

    w = model.get_output_embeddings().weight.detach()
    x = torch.randn(1, w.shape[1], dtype=w.dtype)
    with torch.inference_mode():
        for _ in range(3):
            x @ w.T
        t0 = time.perf_counter()
        for _ in range(repeats):
            x @ w.T
        dt = (time.perf_counter() - t0) / repeats
    return round(w.numel() * w.element_size() / dt / 1e9, 2)


def run(quick: bool = False, model_name: str = "gemma3-270m", threads: int | None = None,
        batch_size: int = 16, repeats: int | None = None) -> dict:
    """Time prefix-shared vs naive scoring; return timings, the ratio and the max abs difference."""
    import torch

    from simlib.lm.logprob import (ScoreRequest, build_prompt, encode_prompt, encode_response, score,
                                score_naive)
    from simlib.lm.weights import load_causal_lm

    if threads:
        torch.set_num_threads(threads)
    n_posts, n_replies, max_chars, max_resp = (1, 4, 800, 48) if quick else (3, 8, 2000, 128)
    tok, model = load_causal_lm(model_name)
    posts = load_threads(n_posts, n_replies, min_body_chars=max_chars // 2)
    reqs = []
    for t in posts:
        prompt = build_prompt(t["title"], t["body"], "AITAH", tok, max_post_chars=max_chars)
        reqs += [ScoreRequest(t["id"], f"{t['id']}-{j}", prompt, c) for j, c in enumerate(t["comments"])]
    prompt_toks = [len(encode_prompt(tok, p)) for p in dict.fromkeys(r.prompt for r in reqs)]
    resp_toks = sum(len(encode_response(tok, r.response, max_resp)) for r in reqs)

    # warm-up: first-call costs (head-split check, allocator, kernels) stay out of the timings
    warm = [ScoreRequest("w", "w", reqs[0].prompt[:200], "warm up")]
    score(warm, tok, model)
    score_naive(warm, tok, model)

    repeats = repeats or (1 if quick else 3)
    t_fast, t_naive = [], []
    for k in range(repeats):  # alternate which goes first, so drifting machine load hits both
        for which in (("fast", "naive") if k % 2 == 0 else ("naive", "fast")):
            t0 = time.perf_counter()
            if which == "fast":
                fast = score(reqs, tok, model, batch_size=batch_size, max_response_tokens=max_resp,
                             token_logprobs=True)
                t_fast.append(time.perf_counter() - t0)
            else:
                ref = score_naive(reqs, tok, model, max_response_tokens=max_resp, token_logprobs=True)
                t_naive.append(time.perf_counter() - t0)
    flops = linear_flops(model, {r.prompt: len(encode_prompt(tok, r.prompt)) for r in reqs},
                         [(r.prompt, len(encode_response(tok, r.response, max_resp))) for r in reqs])
    # The same prefix-shared scoring with bfloat16 weights (the ci profile's inference_dtype).
    _, model16 = load_causal_lm(model_name, dtype="bfloat16")
    score(warm, tok, model16)
    t_bf16 = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast16 = score(reqs, tok, model16, batch_size=batch_size, max_response_tokens=max_resp)
        t_bf16.append(time.perf_counter() - t0)
    gemv = {"float32": _gemv_gb_per_s(model), "bfloat16": _gemv_gb_per_s(model16)}
    del model16
    per_rep = [n / f for n, f in zip(t_naive, t_fast)]
    t_fast, t_naive, t_bf16 = statistics.median(t_fast), statistics.median(t_naive), statistics.median(t_bf16)
    bf16_diff = [abs(x["mean_logprob"] - y["mean_logprob"]) for x, y in zip(fast16, fast)]

    tok_diff = max(abs(a - b) for x, y in zip(fast, ref)
                   for a, b in zip(x["token_logprobs"], y["token_logprobs"]))
    return {
        "model": model_name,
        "quick": quick,
        "torch_threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device),
        "n_posts": n_posts,
        "n_requests": len(reqs),
        "batch_size": batch_size,
        "max_response_tokens": max_resp,
        "prompt_tokens": prompt_toks,
        "response_tokens": resp_toks,
        "naive_s": round(t_naive, 3),
        "prefix_shared_s": round(t_fast, 3),
        "repeats": repeats,
        "speedup": round(t_naive / t_fast, 2),
        "speedup_per_repeat": [round(x, 2) for x in per_rep],
        **flops,
        "naive_response_tok_per_s": round(resp_toks / t_naive, 1),
        "prefix_shared_response_tok_per_s": round(resp_toks / t_fast, 1),
        "naive_total_tok_per_s": round((resp_toks + sum(
            len(encode_prompt(tok, r.prompt)) for r in reqs)) / t_naive, 1),
        "max_abs_diff_token_logprob": tok_diff,
        "max_abs_diff_mean_logprob": max(abs(x["mean_logprob"] - y["mean_logprob"])
                                         for x, y in zip(fast, ref)),
        "max_abs_diff_sum_logprob": max(abs(x["sum_logprob"] - y["sum_logprob"])
                                        for x, y in zip(fast, ref)),
        "bf16_prefix_shared_s": round(t_bf16, 3),
        "speedup_bf16_vs_fp32": round(t_fast / t_bf16, 2),
        "bf16_max_abs_diff_mean_logprob": round(max(bf16_diff), 4),
        "bf16_mean_abs_diff_mean_logprob": round(statistics.mean(bf16_diff), 4),
        "head_gemv_gb_per_s": gemv,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 1 quick, 3 full)")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.quick, a.model, a.threads, a.batch_size, a.repeats), indent=2))


if __name__ == "__main__":
    main()
