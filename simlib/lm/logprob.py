"""Per-token log-probabilities of replies under a scorer model, with prompt (prefix) sharing.

The study's predictability finding rests on one number per reply: the mean log-probability of
the reply's tokens under a *third* model that wrote none of the texts, given the post it replies
to. This module computes it.

Conditioning
    :func:`build_prompt` turns a post into the scorer's prompt (chat turn for chat models, a plain
    text frame for base models; see its docstring for the exact text).

Tokenisation
    The prompt and the response are tokenised **separately** and their ids concatenated:
    ``ids = encode_prompt(prompt) + encode_response(response)``. Tokenising the joined string
    instead would let BPE merge characters across the boundary (e.g. a trailing newline with the
    reply's first characters), so the prompt's tokens, and which tokens count as "response",
    would change from reply to reply. The prompt gets the tokenizer's special tokens
    (``add_special_tokens=True``: Gemma's ``<bos>``; a duplicated BOS or an appended EOS is
    removed), the response gets none. The response is truncated to ``max_response_tokens``
    tokens and no EOS is appended: only the reply's own text is scored.

What is scored
    For response tokens ``r_1..r_m``: ``log p(r_t | prompt, r_<t)`` for every ``t``; the first
    token's log-prob comes from the prompt's last position. ``sum_logprob`` adds them,
    ``mean_logprob = sum_logprob / m``; an empty response has ``n_tokens=0`` and NaN mean.

Prefix sharing (:func:`score`)
    Many replies share a post. Requests are grouped by prompt; each distinct prompt runs once
    (``use_cache=True``) to build its KV cache. That prompt's responses are then packed into one
    row (no padding) and run against a copy of the cache, with position ids continuing after the
    prompt and an attention mask that lets each response token see the prompt and its own
    response's earlier tokens only. The vocabulary projection runs only at response positions,
    tile by tile with an online log-sum-exp (Gemma 3's 262k-token head is over half the work).
    Models the packed mask cannot drive fall back to right-padded batches against a cache
    repeated along the batch dimension. :func:`score_naive` (one full forward pass over
    prompt+response per reply) is the reference the tests compare against (|diff| < 1e-4).
"""
from __future__ import annotations

import copy
import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

from simlib.lm.forward import Runner, apply_head, autocast, packs
import simlib.lm.weights  # noqa: F401  (sets the offline environment variables on import)
from simlib import progress
from simlib.cache import JsonlStore, content_hash
from simlib.text import truncate_post

__all__ = [
    "ScoreRequest",
    "build_prompt",
    "encode_prompt",
    "encode_response",
    "score",
    "score_naive",
    "score_cached",
    "request_key",
    "sample_own",
]

@dataclass(frozen=True)
class ScoreRequest:
    """One reply to score: ``response`` given ``prompt`` (the output of :func:`build_prompt`)."""

    post_id: str
    response_id: str
    prompt: str
    response: str


# ---------------------------------------------------------------------------------- prompts
def _clean(text: str | None) -> str:
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()


def build_prompt(title: str, body: str, subreddit: str, tokenizer,
                 max_post_chars: int = 2000) -> str:
    """The scorer's conditioning text for one post.

    ``subreddit`` loses any leading ``r/`` or ``/r/``; ``title`` and ``body`` have ``\\r\\n``/``\\r``
    turned into ``\\n`` and surrounding whitespace stripped; a body longer than ``max_post_chars``
    characters is cut on a word boundary and ends in ``" […]"`` (at most ``max_post_chars``
    characters in all). An empty body drops its paragraph.

    **Chat models** (the tokenizer has a chat template, e.g. SmolLM2-Instruct): one user turn ::

        Here is a post from r/{subreddit}.

        Title: {title}

        {body}

        Write a reply.

    rendered with ``tokenizer.apply_chat_template([{"role": "user", "content": ...}],
    tokenize=False, add_generation_prompt=True)`` and thinking off where the template has a switch
    (:func:`simlib.lm.chat.render`: Qwen3 closes an empty think block), so the reply is scored as the assistant's turn
    (for SmolLM2 the template also inserts its default system turn "You are a helpful AI
    assistant named SmolLM, trained by Hugging Face" and ends in ``<|im_start|>assistant\\n``).

    **Base models** (no chat template, e.g. Gemma 3 270M): a plain text frame that ends in a
    newline, so the reply starts a fresh line ::

        r/{subreddit}
        Title: {title}

        {body}

        Top comment:
        ⏎

    i.e. ``f"r/{subreddit}\\nTitle: {title}\\n\\n{body}\\n\\nTop comment:\\n"``. The tokenizer adds
    BOS when the prompt is encoded (:func:`encode_prompt`), not here.
    """
    sub = subreddit.strip()
    for pre in ("/r/", "r/"):
        if sub.lower().startswith(pre):
            sub = sub[len(pre):]
    title = _clean(title)
    body = truncate_post(_clean(body), max_post_chars)
    if getattr(tokenizer, "chat_template", None):
        parts = [f"Here is a post from r/{sub}.", f"Title: {title}"]
        if body:
            parts.append(body)
        parts.append("Write a reply.")
        msg = [{"role": "user", "content": "\n\n".join(parts)}]
        from simlib.lm.chat import render  # thinking off where the template has the switch (Qwen3)

        return render(tokenizer, msg)
    text = f"r/{sub}\nTitle: {title}\n\n"
    if body:
        text += f"{body}\n\n"
    return text + "Top comment:\n"


# ------------------------------------------------------------------------------ tokenising
def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids with the tokenizer's special tokens (BOS for Gemma), never two BOS, no EOS."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    while bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]  # the rendered text already began with the BOS string
    if eos is not None and ids and ids[-1] == eos:
        plain = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not plain or plain[-1] != eos:
            ids = ids[:-1]  # the tokenizer appended an EOS the text does not contain
    if not ids:
        raise ValueError("empty prompt: the first response token would have nothing to condition on")
    return ids


def encode_response(tokenizer, response: str, max_response_tokens: int = 128) -> list[int]:
    """Response ids without special tokens, truncated to ``max_response_tokens``."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"])[:max_response_tokens]



def _result(req: ScoreRequest, lps: Sequence[float], with_tokens: bool = False) -> dict:
    n = len(lps)
    s = float(math.fsum(lps))
    res = {"post_id": req.post_id, "response_id": req.response_id,
           "mean_logprob": s / n if n else float("nan"), "sum_logprob": s, "n_tokens": n}
    if with_tokens:
        res["token_logprobs"] = [float(x) for x in lps]
    return res


# --------------------------------------------------------------------------------- scoring
def score(requests: Sequence[ScoreRequest], tokenizer, model, batch_size: int = 16,
          max_response_tokens: int = 128, device=None, bf16: bool = False,
          token_logprobs: bool = False, pack_tokens: int = 512) -> list[dict]:
    """Score every request's response tokens given its prompt, sharing each prompt's KV cache.

    Returns, in the order of ``requests``, one dict per request:
    ``{post_id, response_id, mean_logprob, sum_logprob, n_tokens}``.

    Requests are grouped by prompt text. Each distinct prompt runs once with ``use_cache=True``;
    its last position gives the first response token's log-prob. The prompt's responses (minus
    their last token) are then **packed**: concatenated into one row of at most ``batch_size``
    responses and ``max(pack_tokens, longest)`` tokens (first-fit, longest first), run against a
    copy of the prompt's cache with position ids ``len(prompt) + j`` for a response's ``j``-th
    token and an attention mask that lets each token see the prompt and the earlier tokens of its
    own response only (for Gemma 3's sliding-window layers, which cache only the prompt's last
    ``sliding_window - 1`` positions, the window is applied to the prompt part too). Packing
    wastes no compute on padding and needs no batch copies of the cache. The vocabulary
    projection and log-softmax run only at response positions, tile by tile over the vocabulary
    (:func:`head_logprobs`).

    Models whose attention or cache packing cannot drive (checked once per model against
    one-at-a-time scoring; see :func:`pack_ok`) are scored the earlier way: ``batch_size``
    responses right-padded into a batch against a deep copy of the prompt's ``DynamicCache``
    repeated along the batch dimension (``cache.batch_repeat_interleave(n)``), attention mask
    ones over the prompt followed by the response mask, position ids ``len(prompt) ..``.

    ``device`` is where inputs go (default: the model's device; the model is not moved).
    ``bf16=True`` runs under ``torch.autocast(dtype=bfloat16)``; log-softmax is always float32.
    ``token_logprobs=True`` adds each response token's log-prob as ``token_logprobs``.
    """
    import torch

    run = Runner(model, device)
    dev = run.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[dict | None] = [None] * len(requests)
    groups: "OrderedDict[str, list[int]]" = OrderedDict()
    for i, r in enumerate(requests):
        groups.setdefault(r.prompt, []).append(i)

    with torch.inference_mode(), autocast(dev, bf16):
        for prompt, idxs in groups.items():
            p_ids = encode_prompt(tokenizer, prompt)
            L = len(p_ids)
            resp = {i: encode_response(tokenizer, requests[i].response, max_response_tokens)
                    for i in idxs}
            for i in idxs:
                if not resp[i]:
                    out[i] = _result(requests[i], [], token_logprobs)
            todo = sorted((i for i in idxs if resp[i]), key=lambda i: -len(resp[i]))  # stable
            if not todo:
                continue
            feats, prefix_cache = run(torch.tensor([p_ids], device=dev), use_cache=True)
            last = feats[0, -1:]
            lp0 = ((apply_head(model, last) if run.split else last).float().log_softmax(-1))[0]
            first = {i: float(lp0[resp[i][0]]) for i in todo}  # r_1 | prompt, from its last position
            for i in todo:
                if len(resp[i]) == 1:
                    out[i] = _result(requests[i], [first[i]], token_logprobs)
            todo = [i for i in todo if len(resp[i]) > 1]
            layout = run.layout(prefix_cache, L) if run.pack and todo else None
            if layout is not None:
                for pack in packs({i: len(resp[i]) - 1 for i in todo}, batch_size, pack_tokens):
                    rest = run.packed_logprobs(prefix_cache, layout, L, [resp[i] for i in pack])
                    for i, lps in zip(pack, rest):
                        out[i] = _result(requests[i], [first[i]] + lps, token_logprobs)
                del prefix_cache, feats
                continue
            for b in range(0, len(todo), batch_size):
                batch = todo[b:b + batch_size]
                n, T = len(batch), len(resp[batch[0]]) - 1  # inputs: response minus last token
                inp = torch.full((n, T), pad, dtype=torch.long, device=dev)
                tgt = torch.zeros((n, T), dtype=torch.long, device=dev)
                mask = torch.zeros((n, T), dtype=torch.long, device=dev)
                for j, i in enumerate(batch):
                    r = resp[i]
                    m = len(r) - 1
                    inp[j, :m] = torch.tensor(r[:-1], device=dev)
                    tgt[j, :m] = torch.tensor(r[1:], device=dev)
                    mask[j, :m] = 1
                cache = copy.deepcopy(prefix_cache)
                if n > 1:
                    cache.batch_repeat_interleave(n)
                attn = torch.cat([torch.ones((n, L), dtype=torch.long, device=dev), mask], dim=1)
                pos = (L + torch.arange(T, device=dev))[None].expand(n, -1)
                h, _ = run(inp, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True)
                sel = mask.bool()
                lps = run.token_logprobs(h[sel], tgt[sel]).tolist()
                k = 0
                for j, i in enumerate(batch):
                    m = int(mask[j].sum())
                    out[i] = _result(requests[i], [first[i]] + lps[k:k + m], token_logprobs)
                    k += m
                del cache, h
            del prefix_cache, feats
    return out  # type: ignore[return-value]


def score_naive(requests: Sequence[ScoreRequest], tokenizer, model,
                max_response_tokens: int = 128, device=None,
                token_logprobs: bool = False) -> list[dict]:
    """Reference scorer: one full forward pass over ``prompt + response`` ids per request.

    Same tokenisation as :func:`score`, no cache, no batching, no padding; logits are taken from
    ``model(...).logits`` (with ``logits_to_keep`` so only the positions that predict response
    tokens are projected onto the vocabulary).
    """
    import torch

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    keep_ok = "logits_to_keep" in inspect.signature(model.forward).parameters
    res = []
    with torch.inference_mode():
        for req in requests:
            p = encode_prompt(tokenizer, req.prompt)
            r = encode_response(tokenizer, req.response, max_response_tokens)
            if not r:
                res.append(_result(req, [], token_logprobs))
                continue
            ids = torch.tensor([p + r], device=dev)
            kw = {"logits_to_keep": len(r) + 1} if keep_ok else {}
            logits = model(input_ids=ids, **kw).logits[0].float()
            logits = logits[-(len(r) + 1):-1]  # positions L-1 .. L+m-2 predict r_1 .. r_m
            tgt = torch.tensor(r, device=logits.device)
            lp = logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
            res.append(_result(req, lp.tolist(), token_logprobs))
    return res


def precision_key(dtype: str = "float32", bf16: bool = False) -> dict:
    """The precision entries of a cache key: only non-default settings (``dtype`` other than
    float32, ``bf16=True``), so full-precision caches keep their keys."""
    return {**({"dtype": dtype} if dtype != "float32" else {}), **({"bf16": True} if bf16 else {})}


def request_key(model_name: str, req: ScoreRequest, max_response_tokens: int,
                **precision) -> str:
    """Cache key: content hash of (model name, prompt, response, max_response_tokens).

    Non-default precision settings (``dtype`` other than float32, ``bf16=True``) join the hash,
    so a reduced-precision run never reads full-precision scores or the reverse.
    """
    obj = {"model": model_name, "prompt": req.prompt, "response": req.response,
           "max_response_tokens": max_response_tokens,
           **precision_key(precision.get("dtype", "float32"), bool(precision.get("bf16")))}
    return content_hash(obj, n=24)


def score_cached(requests: Sequence[ScoreRequest], store_path, model_name: str,
                 tokenizer=None, model=None, max_response_tokens: int = 128,
                 batch_size: int = 16, flush_every: int = 64, dtype: str = "float32",
                 keep_tokens: bool = False, **score_kwargs) -> list[dict]:
    """:func:`score` with a JSONL store, so a re-run scores only requests it has not seen.

    The key is :func:`request_key` (model name, prompt, response, ``max_response_tokens``;
    plus ``dtype``/``bf16`` when not the float32 default), so
    post/response ids do not enter it and identical texts are scored once. The model is loaded
    with :func:`simlib.lm.weights.load_causal_lm` only if something is missing and ``model`` is None.
    Results are appended to the store every ``flush_every`` requests (whole prompts at a time),
    so an interrupted run keeps what it finished. Returns dicts in request order, with ids from
    ``requests`` and a ``key`` field.

    ``keep_tokens=True`` also stores and returns each reply's per-token log-probs
    (``token_logprobs``), so any prefix of a reply (e.g. its first L tokens, for comparisons at
    equal length) can be averaged later without scoring again; a stored record without them
    counts as missing. Such records are keyed apart (their ``base`` field holds the plain key),
    and a plain call reads them too.
    """
    score_kwargs.pop("token_logprobs", None)  # stored only with keep_tokens
    store = JsonlStore(store_path)
    keys = plain_keys = [request_key(model_name, r, max_response_tokens, dtype=dtype,
                                     bf16=score_kwargs.get("bf16", False)) for r in requests]
    recs_in = list(store)
    if keep_tokens:
        # records with tokens have keys of their own (the store keeps the first record of a key,
        # so one with tokens could not replace one without); "base" links them to the plain key
        keys = [content_hash({"base": k, "token_logprobs": True}, n=24) for k in keys]
        have = {rec["key"]: rec for rec in recs_in if "token_logprobs" in rec}
    else:
        have = {rec["key"]: rec for rec in recs_in}
        for rec in recs_in:
            have.setdefault(rec.get("base"), rec)
    base = dict(zip(keys, plain_keys))
    missing: "OrderedDict[str, ScoreRequest]" = OrderedDict()
    for k, r in zip(keys, requests):
        if k not in have and k not in missing:
            missing[k] = r
    if missing:
        if model is None or tokenizer is None:
            from simlib.lm.weights import load_causal_lm

            tokenizer, model = load_causal_lm(model_name, dtype=dtype)
        by_prompt: "OrderedDict[str, list[tuple[str, ScoreRequest]]]" = OrderedDict()
        for k, r in missing.items():
            by_prompt.setdefault(r.prompt, []).append((k, r))
        chunk: list[tuple[str, ScoreRequest]] = []
        items = list(by_prompt.values())
        for gi, group in enumerate(items):
            chunk.extend(group)
            if len(chunk) >= flush_every or gi == len(items) - 1:
                scored = score([r for _, r in chunk], tokenizer, model, batch_size=batch_size,
                               max_response_tokens=max_response_tokens,
                               token_logprobs=keep_tokens, **score_kwargs)
                recs = [{"key": k, "model": model_name, "max_response_tokens": max_response_tokens,
                         "post_id": r.post_id, "response_id": r.response_id,
                         "mean_logprob": s["mean_logprob"], "sum_logprob": s["sum_logprob"],
                         "n_tokens": s["n_tokens"],
                         **({"base": base[k], "token_logprobs": s["token_logprobs"]} if keep_tokens else {})}
                        for (k, r), s in zip(chunk, scored)]
                store.append(recs)
                have.update({rec["key"]: rec for rec in recs})
                chunk = []
                progress.report("scoring", sum(map(len, items[:gi + 1])), len(missing), model=model_name)
    res = []
    for k, r in zip(keys, requests):
        rec = have[k]
        res.append({"post_id": r.post_id, "response_id": r.response_id, "key": k,
                    "mean_logprob": rec["mean_logprob"], "sum_logprob": rec["sum_logprob"],
                    "n_tokens": rec["n_tokens"],
                    **({"token_logprobs": rec["token_logprobs"]} if keep_tokens else {})})
    return res


# ------------------------------------------------------------------------------- sampling
def sample_own(prompts: Iterable[str], tokenizer, model, n: int = 4, max_new_tokens: int = 128,
               temperature: float = 1.0, seed: int = 0, top_p: float = 1.0,
               stop_strings: Sequence[str] | None = None, max_rows: int = 96) -> list[list[str]]:
    """``n`` replies sampled from the scorer itself for each prompt (the "own outputs" reference).

    Plain ancestral sampling at ``temperature`` (``top_k`` off, ``top_p=1`` unless given), from
    the same token ids :func:`score` conditions on (:func:`encode_prompt`), stopping at the
    model's EOS or after ``max_new_tokens``. Prompts are decoded together, up to ``max_rows``
    sequences at a time, each prompt read once (:func:`simlib.lm.sampling.sample`); each prompt's
    samples are drawn from a generator seeded by ``hash(seed, prompt)``, so they do not depend on
    the other prompts in the list, on call order or on the global RNG. Texts are decoded
    with ``skip_special_tokens=True`` and cut before the first of ``stop_strings`` if given (a base
    model such as Gemma 3 270M may write past one comment; e.g. ``stop_strings=["\\n\\n"]``).
    """
    from simlib.lm.sampling import batches, eos_ids, sample

    prompts = list(prompts)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    seeds = [int(content_hash([seed, p]), 16) % (2**63 - 1) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[list[str]] = [[] for _ in prompts]
    for group in batches([len(i) for i in ids], n, max_rows):
        toks = sample(model, [ids[i] for i in group], [seeds[i] for i in group], n=n,
                      max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      eos_token_ids=eos_ids(model, tokenizer), pad_token_id=pad)
        for i, rows in zip(group, toks):
            texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
            out[i] = [_cut(t, stop_strings) for t in texts]
    return out


def _cut(text: str, stop_strings: Sequence[str] | None) -> str:
    pos = [text.find(x) for x in stop_strings or () if x and text.find(x) >= 0]
    return text[: min(pos)] if pos else text
