"""Tests for simlib.lm.logprob (prefix-shared scoring vs the naive reference) and simlib.measures.alignment.

Real data: two r/AITAH threads from the JianLoong reddit-crawler dump (skipped if absent), scored
by both local models (Gemma 3 270M base, SmolLM2-135M-Instruct with its chat template). Posts and
replies are truncated so the whole file stays well under a minute on a shared 2-core CPU.
"""
from __future__ import annotations

import doctest
import glob
import json
import math
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from simlib.lm import forward as fw
from simlib.lm import logprob as lp
from simlib.measures import alignment as al
from simlib.lm.logprob import (ScoreRequest, build_prompt, encode_prompt, encode_response, sample_own,
                            score, score_cached, score_naive)

torch = pytest.importorskip("torch")

from pathlib import Path  # noqa: E402
from simlib.data.registry import CRAWLER_SUBDIR, resolve_data_dir  # noqa: E402

# the pinned crawl's r/AITAH folder under the data directory ($SIMLIB_DATA_DIR)
AITAH = str((resolve_data_dir() or Path("/nonexistent")) / CRAWLER_SUBDIR / "docs" / "api" / "aitah")
MAX_POST_CHARS = 240  # ~60-90 prompt tokens: enough context, cheap forward passes
MAX_RESP = 32  # the replies used are 23-113 tokens long: some are cut, some padded
TOL = 1e-4


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Under contention from other processes, 2 OpenMP threads on 2 shared cores run ~10x slower.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def threads():
    files = sorted(glob.glob(os.path.join(AITAH, "*.json")))
    if not files:
        pytest.skip(f"no AITAH threads under {AITAH}")
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            d = json.load(fh)
        cs = [c["message"].strip() for c in d.get("comments") or []
              if isinstance(c, dict) and (c.get("message") or "").strip()
              and c["message"].strip() not in ("[deleted]", "[removed]")]
        # 4 replies of varied length (one under 100 characters, so padding is exercised)
        if len(cs) >= 4 and min(map(len, cs[:4])) < 100 and (d.get("selftext") or "").strip():
            out.append({"id": d["submission_id"], "title": d["title"], "body": d["selftext"],
                        "comments": cs[:4]})
        if len(out) == 2:
            return out
    pytest.skip("fewer than 2 AITAH threads with 4+ comments")


def _load(name):
    from simlib.lm.weights import ModelNotFound, load_causal_lm

    try:
        return load_causal_lm(name)
    except (ModelNotFound, OSError) as e:  # pragma: no cover - environment without the model
        pytest.skip(f"{name} unavailable: {e}")


@pytest.fixture(scope="module")
def gemma():
    return _load("gemma3-270m")


@pytest.fixture(scope="module")
def smol():
    return _load("smollm2-135m")


def _requests(threads, tok):
    reqs = []
    for t in threads:
        prompt = build_prompt(t["title"], t["body"], "AITAH", tok, max_post_chars=MAX_POST_CHARS)
        reqs += [ScoreRequest(t["id"], f"{t['id']}-{j}", prompt, c) for j, c in enumerate(t["comments"])]
    return reqs


def _max_token_diff(a, b):
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert (x["post_id"], x["response_id"]) == (y["post_id"], y["response_id"])
        assert x["n_tokens"] == y["n_tokens"] == len(x["token_logprobs"])
        worst = max(worst, abs(x["mean_logprob"] - y["mean_logprob"]),
                    *(abs(p - q) for p, q in zip(x["token_logprobs"], y["token_logprobs"])))
    return worst


# ------------------------------------------------------------------------------- prompts
def test_doctests():
    assert doctest.testmod(lp).failed == 0
    assert doctest.testmod(al).failed == 0


class _NoTemplate:
    chat_template = None


def test_build_prompt_base_frame_exact():
    p = build_prompt("AITA for X?", "Line one.\r\nLine two.  ", "r/AITAH", _NoTemplate())
    assert p == "r/AITAH\nTitle: AITA for X?\n\nLine one.\nLine two.\n\nTop comment:\n"
    assert build_prompt("T", "", "AITAH", _NoTemplate()) == "r/AITAH\nTitle: T\n\nTop comment:\n"
    long = build_prompt("T", "word " * 1000, "AITAH", _NoTemplate(), max_post_chars=100)
    body = long.split("\n\n")[1]
    assert body.endswith("word […]") and len(body) <= 100


def test_build_prompt_chat_template(smol):
    tok, _ = smol
    p = build_prompt("AITA for X?", "Body text.", "AITAH", tok)
    user = "Here is a post from r/AITAH.\n\nTitle: AITA for X?\n\nBody text.\n\nWrite a reply."
    assert p == tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                        add_generation_prompt=True)
    assert p.endswith("<|im_start|>assistant\n")


def test_tokenisation_bos(gemma, smol):
    gt, _ = gemma
    ids = encode_prompt(gt, "r/AITAH\nTitle: x\n\nTop comment:\n")
    assert ids[0] == gt.bos_token_id and ids[1] != gt.bos_token_id  # exactly one <bos>
    assert gt.bos_token_id not in encode_response(gt, "NTA, obviously.")
    assert encode_prompt(gt, "<bos>hello")[:2] == [gt.bos_token_id, encode_response(gt, "hello")[0]]
    st, _ = smol
    p = build_prompt("t", "b", "AITAH", st)
    assert encode_prompt(st, p) == st(p, add_special_tokens=False)["input_ids"]
    assert len(encode_response(st, "word " * 200, max_response_tokens=7)) == 7


# ------------------------------------------------------------------------ prefix sharing
@pytest.mark.slow
@pytest.mark.parametrize("which", ["gemma", "smol"])
def test_prefix_shared_equals_naive_on_real_replies(which, request, threads):
    tok, model = request.getfixturevalue(which)
    reqs = _requests(threads, tok)
    # interleave posts so grouping has to restore the original order
    reqs = [r for pair in zip(reqs[:4], reqs[4:]) for r in pair]
    fast = score(reqs, tok, model, batch_size=16, max_response_tokens=MAX_RESP, token_logprobs=True)
    ref = score_naive(reqs, tok, model, max_response_tokens=MAX_RESP, token_logprobs=True)
    assert [r["response_id"] for r in fast] == [r.response_id for r in reqs]
    assert _max_token_diff(fast, ref) < TOL
    assert all(r["n_tokens"] > 1 for r in fast)
    assert len({r["n_tokens"] for r in fast}) > 1  # lengths differ: padding is exercised
    assert all(-20 < r["mean_logprob"] < 0 for r in fast)


@pytest.mark.slow
def test_batch_size_and_bucketing_do_not_change_results(gemma, threads):
    tok, model = gemma
    reqs = _requests(threads[:1], tok)
    runs = {b: score(reqs, tok, model, batch_size=b, max_response_tokens=MAX_RESP,
                     token_logprobs=True) for b in (1, 3, 16)}
    assert _max_token_diff(runs[1], runs[3]) < TOL
    assert _max_token_diff(runs[1], runs[16]) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("which", ["gemma", "smol"])
def test_packing_is_used_and_packs_or_padding_do_not_change_results(which, request, threads, monkeypatch):
    """Both models are scored packed (several replies in one row, no padding); one reply per pack,
    several packs, and the padded-batch fallback all give the same numbers."""
    tok, model = request.getfixturevalue(which)
    reqs = _requests(threads[:1], tok)
    packed = score(reqs, tok, model, max_response_tokens=MAX_RESP, token_logprobs=True)
    assert fw.PACK_OK.get(model) is True
    one_each = score(reqs, tok, model, max_response_tokens=MAX_RESP, token_logprobs=True, pack_tokens=1)
    assert _max_token_diff(packed, one_each) < TOL
    monkeypatch.setattr(fw, "pack_ok", lambda run: False)  # the right-padded, repeated-cache path
    padded = score(reqs, tok, model, batch_size=3, max_response_tokens=MAX_RESP, token_logprobs=True)
    assert _max_token_diff(packed, padded) < TOL


@pytest.mark.slow
def test_bfloat16_scoring_stays_close_to_float32(threads):
    """The ci profile scores in bfloat16 (inference_dtype): its mean log-probs must stay within a
    few hundredths of a nat of float32 (the gaps the book reads are nats wide), and the scores
    must still differ from float32 (else the dtype was not applied)."""
    from simlib.lm.weights import load_causal_lm

    tok, m32 = load_causal_lm("smollm2-135m")
    _, m16 = load_causal_lm("smollm2-135m", dtype="bfloat16")
    assert next(m16.parameters()).dtype == torch.bfloat16
    reqs = _requests(threads, tok)
    a = score(reqs, tok, m32, max_response_tokens=MAX_RESP)
    b = score(reqs, tok, m16, max_response_tokens=MAX_RESP)
    diffs = [abs(x["mean_logprob"] - y["mean_logprob"]) for x, y in zip(a, b)]
    assert [x["n_tokens"] for x in a] == [y["n_tokens"] for y in b]
    assert max(diffs) < 0.05
    assert max(diffs) > 0


def test_packs_first_fit_decreasing():
    packs = fw.packs({"a": 5, "b": 3, "c": 9, "d": 2, "e": 4}, batch_size=3, pack_tokens=10)
    assert packs == [["c"], ["a", "e"], ["b", "d"]]
    assert fw.packs({"a": 30, "b": 20}, batch_size=16, pack_tokens=10) == [["a"], ["b"]]  # never split a reply
    assert all(len(p) <= 2 for p in fw.packs({i: 1 for i in range(7)}, batch_size=2, pack_tokens=100))


def test_tiled_head_equals_full_log_softmax():
    """The online log-sum-exp over vocabulary tiles, with a bias and Gemma-2-style soft-capping."""
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(16, 1000, bias=True)
            self.config = type("C", (), {"final_logit_softcapping": 5.0})()

        def get_output_embeddings(self):
            return self.head

    m = Tiny()
    h, t = torch.randn(37, 16) * 4, torch.randint(0, 1000, (37,))
    with torch.inference_mode():
        ref = fw.apply_head(m, h).float().log_softmax(-1).gather(-1, t[:, None]).squeeze(-1)
        for rows, tile in ((256, 1024), (8, 64), (5, 999)):
            got = fw.head_logprobs(m, h, t, rows=rows, tile=tile)
            assert torch.allclose(got, ref, atol=1e-5), (rows, tile)


@pytest.mark.slow
def test_edge_cases_empty_and_one_token(smol, threads):
    tok, model = smol
    prompt = _requests(threads, tok)[0].prompt
    one = next(w for w in ("Yes", "NTA", "No", "YTA") if len(encode_response(tok, w)) == 1)
    reqs = [ScoreRequest("p", "empty", prompt, ""), ScoreRequest("p", "one", prompt, one),
            ScoreRequest("p", "two", prompt, "NTA, obviously")]
    fast = score(reqs, tok, model, batch_size=2, token_logprobs=True)
    ref = score_naive(reqs, tok, model, token_logprobs=True)
    assert fast[0]["n_tokens"] == 0 and math.isnan(fast[0]["mean_logprob"])
    assert fast[1]["n_tokens"] == 1
    assert _max_token_diff(fast[1:], ref[1:]) < TOL


@pytest.mark.slow
def test_sliding_window_cache_gemma(gemma, threads):
    """Gemma 3's sliding layers keep only the last window-1 positions in the cache; shrink the
    window to 32 so ~100-token prompts cross it, and check prefix sharing still equals naive."""
    tok, model = gemma
    reqs = _requests(threads[:1], tok)[:2]
    assert len(encode_prompt(tok, reqs[0].prompt)) > 48
    full = score(reqs, tok, model, max_response_tokens=MAX_RESP)
    attn = [m for m in model.modules() if getattr(m, "sliding_window", None) is not None]
    old = model.config.sliding_window
    try:
        model.config.sliding_window = 32
        for m in attn:
            m.sliding_window = 32
        fast = score(reqs, tok, model, batch_size=2, max_response_tokens=MAX_RESP, token_logprobs=True)
        ref = score_naive(reqs, tok, model, max_response_tokens=MAX_RESP, token_logprobs=True)
    finally:
        model.config.sliding_window = old
        for m in attn:
            m.sliding_window = old
    assert _max_token_diff(fast, ref) < TOL
    # the shrunken window really changed the model (otherwise this test would prove nothing)
    assert max(abs(a["mean_logprob"] - b["mean_logprob"]) for a, b in zip(full, fast)) > 1e-2


@pytest.mark.slow
def test_copied_text_beats_shuffled(gemma, threads):
    tok, model = gemma
    t = threads[0]
    prompt = build_prompt(t["title"], t["body"], "AITAH", tok, max_post_chars=MAX_POST_CHARS)
    words = " ".join(t["body"].split()[:20]).split()
    shuffled = words[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != words
    copy_r, shuf_r = score([ScoreRequest(t["id"], "copy", prompt, " ".join(words)),
                            ScoreRequest(t["id"], "shuf", prompt, " ".join(shuffled))], tok, model)
    assert copy_r["mean_logprob"] > shuf_r["mean_logprob"] + 1.0


# --------------------------------------------------------------------------------- cache
@pytest.mark.slow
def test_score_cached_scores_only_new(tmp_path, monkeypatch, smol, threads):
    tok, model = smol
    reqs = _requests(threads, tok)[:3]
    seen = []
    real = lp.score

    def counting(rs, *a, **k):
        seen.extend(rs)
        return real(rs, *a, **k)

    monkeypatch.setattr(lp, "score", counting)
    store = tmp_path / "scores.jsonl"
    first = score_cached(reqs, store, "smollm2-135m", tok, model, max_response_tokens=MAX_RESP)
    assert len(seen) == 3
    seen.clear()
    again = score_cached(reqs, store, "smollm2-135m", tok, model, max_response_tokens=MAX_RESP)
    assert seen == []
    assert [r["mean_logprob"] for r in again] == [r["mean_logprob"] for r in first]
    # same texts under new ids are not rescored; a new response or a new cap is
    renamed = [ScoreRequest("other", "x", reqs[0].prompt, reqs[0].response)]
    score_cached(renamed, store, "smollm2-135m", tok, model, max_response_tokens=MAX_RESP)
    assert seen == []
    score_cached(reqs[:1], store, "smollm2-135m", tok, model, max_response_tokens=MAX_RESP - 1)
    assert len(seen) == 1
    r0 = reqs[0]
    assert lp.request_key("m", r0, 32) == lp.request_key("m", ScoreRequest("x", "y", r0.prompt, r0.response), 32)
    assert len({lp.request_key("m", r0, 32), lp.request_key("n", r0, 32), lp.request_key("m", r0, 31),
                lp.request_key("m", r0, 32, bf16=True), lp.request_key("m", r0, 32, dtype="bfloat16")}) == 5
    direct = score(reqs, tok, model, max_response_tokens=MAX_RESP)
    assert all(abs(a["mean_logprob"] - b["mean_logprob"]) < TOL for a, b in zip(first, direct))


def test_score_cached_keeps_token_logprobs(tmp_path, monkeypatch):
    """keep_tokens stores each reply's per-token log-probs (for equal-length means); a record
    stored without them is scored again, and plain calls read either kind."""
    calls = []

    def fake(rs, tok, model, batch_size=16, max_response_tokens=128, token_logprobs=False, **kw):
        calls.append((len(rs), token_logprobs))
        out = []
        for r in rs:
            lps = [-float(len(r.response))] * 3
            out.append({"post_id": r.post_id, "response_id": r.response_id, "mean_logprob": lps[0],
                        "sum_logprob": sum(lps), "n_tokens": 3, **({"token_logprobs": lps} if token_logprobs else {})})
        return out

    monkeypatch.setattr(lp, "score", fake)
    reqs = [ScoreRequest("p", str(i), "prompt", "x" * (i + 1)) for i in range(3)]
    store = tmp_path / "s.jsonl"
    plain = score_cached(reqs, store, "m", object(), object())
    assert "token_logprobs" not in plain[0] and calls == [(3, False)]
    kept = score_cached(reqs, store, "m", object(), object(), keep_tokens=True)
    assert calls[-1] == (3, True)  # records without tokens count as missing
    assert kept[1]["token_logprobs"] == [-2.0] * 3
    score_cached(reqs, store, "m", object(), object(), keep_tokens=True)
    again = score_cached(reqs, store, "m", object(), object())
    assert len(calls) == 2 and again[0]["mean_logprob"] == -1.0
    fresh = tmp_path / "t.jsonl"  # a store written with tokens serves plain calls as well
    score_cached(reqs, fresh, "m", object(), object(), keep_tokens=True)
    assert score_cached(reqs, fresh, "m", object(), object())[2]["mean_logprob"] == -3.0 and len(calls) == 3


# ------------------------------------------------------------------------------ sampling
@pytest.mark.slow
def test_sample_own_is_seeded(smol):
    tok, model = smol
    prompts = [build_prompt("AITA for skipping a wedding?", "Long story.", "AITAH", tok),
               build_prompt("AITA for eating the last slice?", "It was mine.", "AITAH", tok)]
    a = sample_own(prompts, tok, model, n=2, max_new_tokens=5, temperature=1.0, seed=1)
    state = torch.random.get_rng_state()
    b = sample_own(prompts[::-1], tok, model, n=2, max_new_tokens=5, temperature=1.0, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert a == b[::-1]  # each prompt's samples depend on (seed, prompt) only
    assert len(a) == 2 and all(len(x) == 2 and all(isinstance(s, str) for s in x) for x in a)
    c = sample_own(prompts[:1], tok, model, n=2, max_new_tokens=5, temperature=1.0, seed=2)
    assert c[0] != a[0]


# ----------------------------------------------------------------------------- alignment
def test_mutual_knn_known_answers():
    rng = np.random.default_rng(0)
    n, d, k = 300, 32, 10
    a = rng.normal(size=(n, d))
    assert al.mutual_knn(a, a, k) == 1.0
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert al.mutual_knn(a, a @ q, k) == pytest.approx(1.0)
    chance = k / (n - 1)
    vals = [al.mutual_knn(a, rng.normal(size=(n, d)), k) for _ in range(3)]
    assert abs(np.mean(vals) - chance) < 0.01
    # partial corruption lands in between
    mixed = al.mutual_knn(a, a + 0.5 * rng.normal(size=(n, d)), k)
    assert chance + 0.1 < mixed < 0.95
    with pytest.raises(ValueError):
        al.mutual_knn(a, a[:-1], k)
    with pytest.raises(ValueError):
        al.mutual_knn(a[:5], a[:5], k)


def test_knn_excludes_self():
    x = np.eye(6) + 0.01
    nn = al.knn_indices(x, 3)
    assert not any(i in nn[i] for i in range(6))


@pytest.mark.slow
def test_mean_pooled_hidden_is_padding_invariant(smol):
    tok, model = smol
    texts = ["NTA.", "You are absolutely not the one at fault here, your sister is.",
             "YTA, and you know it", "ESH honestly"]
    batched = al.mean_pooled_hidden(texts, tok, model, batch_size=4)
    single = np.stack([al.mean_pooled_hidden([t], tok, model)[0] for t in texts])
    assert batched.shape == (4, model.config.hidden_size) and batched.dtype == np.float32
    assert np.abs(batched - single).max() < 1e-4
    mid = al.mean_pooled_hidden(texts, tok, model, layer=5)
    assert np.abs(mid - batched).max() > 1e-2
