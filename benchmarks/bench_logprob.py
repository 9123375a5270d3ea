"""Prefix-shared scoring vs the naive one-pass-per-reply reference, on real r/AITAH threads.

``python -m benchmarks.bench_logprob [--quick] [--threads N] [--model NAME]`` prints a JSON dict:
wall times of :func:`simlib.logprob.score` and :func:`simlib.logprob.score_naive` on the same
requests, the speed ratio, response tokens scored per second, and the largest absolute
differences between the two (per token, mean and sum). Full run: 3 long posts x 8 replies,
Gemma 3 270M, posts up to 2000 characters, replies up to 128 tokens.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

AITAH = "/work/shared/data/reddit/raw/JianLoong__reddit-crawler/docs/api/aitah"


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


def run(quick: bool = False, model_name: str = "gemma3-270m", threads: int | None = None,
        batch_size: int = 16) -> dict:
    """Time prefix-shared vs naive scoring; return timings, the ratio and the max abs difference."""
    import torch

    from simlib.logprob import (ScoreRequest, build_prompt, encode_prompt, encode_response, score,
                                score_naive)
    from simlib.models import load_causal_lm

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

    t0 = time.perf_counter()
    fast = score(reqs, tok, model, batch_size=batch_size, max_response_tokens=max_resp,
                 token_logprobs=True)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = score_naive(reqs, tok, model, max_response_tokens=max_resp, token_logprobs=True)
    t_naive = time.perf_counter() - t0

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
        "speedup": round(t_naive / t_fast, 2),
        "naive_response_tok_per_s": round(resp_toks / t_naive, 1),
        "prefix_shared_response_tok_per_s": round(resp_toks / t_fast, 1),
        "naive_total_tok_per_s": round((resp_toks + sum(
            len(encode_prompt(tok, r.prompt)) for r in reqs)) / t_naive, 1),
        "max_abs_diff_token_logprob": tok_diff,
        "max_abs_diff_mean_logprob": max(abs(x["mean_logprob"] - y["mean_logprob"])
                                         for x, y in zip(fast, ref)),
        "max_abs_diff_sum_logprob": max(abs(x["sum_logprob"] - y["sum_logprob"])
                                        for x, y in zip(fast, ref)),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args(argv)
    print(json.dumps(run(a.quick, a.model, a.threads, a.batch_size), indent=2))


if __name__ == "__main__":
    main()
