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
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import simlib.models  # noqa: F401  (sets the offline environment variables on import)
from simlib.cache import JsonlStore, content_hash
from simlib.text import truncate_post

__all__ = [
    "ScoreRequest",
    "build_prompt",
    "truncate_words",
    "encode_prompt",
    "encode_response",
    "score",
    "score_naive",
    "score_cached",
    "request_key",
    "sample_own",
]

TRUNCATION_MARK = " […]"


@dataclass(frozen=True)
class ScoreRequest:
    """One reply to score: ``response`` given ``prompt`` (the output of :func:`build_prompt`)."""

    post_id: str
    response_id: str
    prompt: str
    response: str


# ---------------------------------------------------------------------------------- prompts
def truncate_words(text: str, max_chars: int, mark: str = TRUNCATION_MARK) -> str:
    """The shared long-post policy (:func:`simlib.text.truncate_post`).

    >>> truncate_words("one two three four", 12)
    'one two […]'
    """
    return truncate_post(text, max_chars, mark)


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
    (:func:`simlib.chat.render`: Qwen3 closes an empty think block), so the reply is scored as the assistant's turn
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
    body = truncate_words(_clean(body), max_post_chars)
    if getattr(tokenizer, "chat_template", None):
        parts = [f"Here is a post from r/{sub}.", f"Title: {title}"]
        if body:
            parts.append(body)
        parts.append("Write a reply.")
        msg = [{"role": "user", "content": "\n\n".join(parts)}]
        from simlib.chat import render  # thinking off where the template has the switch (Qwen3)

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


# --------------------------------------------------------------------------- model plumbing
_SPLIT_OK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward_params(module):
    """The arguments of the model class's own ``forward`` (a PEFT wrapper or TRL's patched
    forward take ``**kwargs`` and pass them on)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    return inspect.signature(type(base).forward).parameters


def _cache_kw(module) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name is deprecated)."""
    return "cache" if "cache" in _forward_params(module) else "past_key_values"


def _out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def _apply_head(model, hidden):
    """Logits from final hidden states: lm_head plus Gemma-2-style final soft-capping."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = (logits / cap).tanh() * cap
    return logits


def _split_ok(model) -> bool:
    """Whether ``model.model`` + :func:`_apply_head` reproduces ``model(...).logits``.

    Scoring through the decoder's hidden states lets the vocabulary projection run in chunks over
    the response positions only (Gemma 3's 262k vocabulary makes a 16x128 batch's logits 2 GB in
    float32). Checked once per model on a short input; models with other output heads fall back to
    the full forward pass.
    """
    if model in _SPLIT_OK:
        return _SPLIT_OK[model]
    import torch

    ok = False
    dec, head = getattr(model, "model", None), model.get_output_embeddings()
    if dec is not None and head is not None:
        dev = next(model.parameters()).device
        ids = torch.arange(10, 17, device=dev)[None]
        with torch.inference_mode():
            full = model(input_ids=ids).logits.float()
            try:
                split = _apply_head(model, dec(input_ids=ids).last_hidden_state).float()
                ok = split.shape == full.shape and torch.allclose(split, full, atol=1e-3, rtol=1e-3)
            except Exception:  # noqa: BLE001 - any mismatch in structure means "do not split"
                ok = False
    _SPLIT_OK[model] = ok
    return ok


_PACK_OK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PACK_TYPES = ("full_attention", "sliding_attention")


def _head_logprobs(model, hidden, targets, rows: int = 256, tile: int | None = None):
    """Log-probabilities of ``targets`` [N] from final hidden states ``hidden`` [N, D].

    Same numbers as ``log_softmax(_apply_head(model, hidden))[targets]`` (to float32 rounding),
    computed tile by tile over the vocabulary with a running max and sum (online log-sum-exp):
    a tile of logits (``rows`` x ``tile``) stays in the CPU cache instead of a 256 x 262k block
    of Gemma 3 logits (268 MB) being written to memory and read back four times. The target's
    logit is read from the tile that computes it, so it is rounded exactly like the normaliser.
    Needs a plain ``nn.Linear`` output head; otherwise the chunked full-vocabulary path is used.
    """
    import torch
    import torch.nn.functional as F

    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return _chunked_logprobs(lambda f: _apply_head(model, f), hidden, targets)
    W, bias = head.weight, head.bias
    V = W.shape[0]
    if tile is None:
        tile = 1024 if hidden.device.type == "cpu" else 32768
    cap = getattr(model.config, "final_logit_softcapping", None)
    targets = targets.to(hidden.device)
    res = []
    for i in range(0, hidden.shape[0], rows):
        x, t = hidden[i:i + rows], targets[i:i + rows]
        m = s = None
        tl = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for v0 in range(0, V, tile):
            v1 = min(v0 + tile, V)
            lg = F.linear(x, W[v0:v1], None if bias is None else bias[v0:v1])
            if cap is not None:
                lg = (lg / cap).tanh() * cap
            lg = lg.float()
            hit = (t >= v0) & (t < v1)
            if bool(hit.any()):
                tl[hit] = lg[hit, t[hit] - v0]
            mt = lg.amax(-1)
            if m is None:
                m, s = mt, lg.sub_(mt[:, None]).exp_().sum(-1)
                continue
            mn = torch.maximum(m, mt)
            s = s * (m - mn).exp() + lg.sub_(mn[:, None]).exp_().sum(-1)
            m = mn
        res.append(tl - (m + s.log()))
    return torch.cat(res) if res else hidden.new_zeros(0, dtype=torch.float32)


def _chunked_logprobs(to_logits, feats, targets, chunk: int = 256):
    """``feats`` [N, ...] → logits by ``to_logits`` in row chunks → log-probs of ``targets`` [N]."""
    import torch

    res = []
    for i in range(0, feats.shape[0], chunk):
        logits = to_logits(feats[i:i + chunk]).float()
        tgt = targets[i:i + chunk].to(logits.device)
        res.append(logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, -1))
    return torch.cat(res) if res else feats.new_zeros(0, dtype=torch.float32)


class _Runner:
    """Forward passes returning either final hidden states (split) or logits (fallback)."""

    def __init__(self, model, device=None):
        import torch

        self.model = model
        self.split = _split_ok(model)
        self.body = model.model if self.split else model
        self.kw = _cache_kw(self.body)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.pack = _pack_ok(self)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, cache=None,
                 use_cache=False):
        kwargs = {"input_ids": input_ids, "use_cache": use_cache}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs[self.kw] = cache
        out = self.body(**kwargs)
        feats = out.last_hidden_state if self.split else out.logits
        return feats, _out_cache(out)

    def token_logprobs(self, feats, targets):
        """``feats`` [N, D|V] (one row per predicting position), ``targets`` [N] → log-probs [N]."""
        if self.split:
            return _head_logprobs(self.model, feats, targets)
        return _chunked_logprobs(lambda f: f, feats, targets)

    # ---- packing: several responses of one prompt in one row, against the prompt's cache
    def layout(self, cache, prompt_len: int):
        """{layer type: (cached prompt positions, sliding window or None)}, or None if the
        cache is not laid out as packing assumes (then responses are padded into a batch)."""
        cfg = self.body.config
        types = getattr(cfg, "layer_types", None)
        window = getattr(cfg, "sliding_window", None)
        layers = getattr(cache, "layers", None)
        if layers is None:
            return None
        if not types:
            if window is not None:
                return None
            types = ["full_attention"] * len(layers)
        if len(types) != len(layers) or not set(types) <= set(_PACK_TYPES):
            return None
        out = {}
        for t, layer in zip(types, layers):
            keys = getattr(layer, "keys", None)
            if keys is None or keys.dim() != 4:
                return None
            w = window if t == "sliding_attention" else None
            expect = prompt_len if w is None else min(prompt_len, w - 1)
            if keys.shape[-2] != expect or out.get(t, (expect, w)) != (expect, w):
                return None
            out[t] = (expect, w)
        return out

    def packed_mask(self, layout: dict, prompt_len: int, seg, rel):
        """The attention mask(s) of one packed row: every response token sees the prompt (within
        its layer's sliding window) and the earlier tokens of its own response, nothing else.

        ``seg`` [Q]: which response each packed token belongs to; ``rel`` [Q]: its index in that
        response (position ``prompt_len + rel``). Boolean for SDPA, additive float for eager.
        """
        import torch

        dev = seg.device
        q = torch.arange(seg.shape[0], device=dev)
        own = (seg[:, None] == seg[None, :]) & (q[:, None] >= q[None, :])
        pos = prompt_len + rel
        masks = {}
        for t, (n_cached, w) in layout.items():
            pre_pos = torch.arange(prompt_len - n_cached, prompt_len, device=dev)
            pre = torch.ones((seg.shape[0], n_cached), dtype=torch.bool, device=dev)
            new = own
            if w is not None:
                pre = pre & (pos[:, None] - pre_pos[None, :] < w)
                new = own & (rel[:, None] - rel[None, :] < w)
            m = torch.cat([pre, new], dim=1)[None, None]
            if self.body.config._attn_implementation == "eager":
                dtype = next(self.model.parameters()).dtype
                m = torch.zeros(m.shape, dtype=dtype, device=dev).masked_fill_(~m, torch.finfo(dtype).min)
            masks[t] = m
        if getattr(self.body.config, "layer_types", None):
            return masks
        return masks["full_attention"]

    def packed_logprobs(self, prefix_cache, layout, prompt_len: int, resps: list[list[int]]):
        """Log-probs of tokens 2..m of each response in ``resps`` (one forward pass)."""
        import torch

        dev = self.device
        ids = [tok for r in resps for tok in r[:-1]]
        tgt = [tok for r in resps for tok in r[1:]]
        seg = torch.tensor([k for k, r in enumerate(resps) for _ in r[:-1]], device=dev)
        rel = torch.tensor([j for r in resps for j in range(len(r) - 1)], device=dev)
        mask = self.packed_mask(layout, prompt_len, seg, rel)
        cache = copy.deepcopy(prefix_cache)  # the pass appends to it; the prefix is reused
        h, _ = self(torch.tensor([ids], device=dev), attention_mask=mask,
                    position_ids=(prompt_len + rel)[None], cache=cache, use_cache=True)
        lps = self.token_logprobs(h[0], torch.tensor(tgt, device=dev)).tolist()
        out, k = [], 0
        for r in resps:
            out.append(lps[k:k + len(r) - 1])
            k += len(r) - 1
        return out


def _pack_ok(run: "_Runner") -> bool:
    """Whether packed scoring matches one-response-at-a-time scoring on this model (checked once
    on a tiny input; unknown attention kinds, caches or mask conventions fall back to padding)."""
    model = run.model
    if model in _PACK_OK:
        return _PACK_OK[model]
    import torch

    ok = False
    if run.split and run.body.config._attn_implementation in ("sdpa", "eager"):
        dev = run.device
        prompt = list(range(10, 20))
        resps = [list(range(20, 26)), list(range(30, 34)), [40, 41]]
        try:
            with torch.inference_mode():
                _, cache = run(torch.tensor([prompt], device=dev), use_cache=True)
                layout = run.layout(cache, len(prompt))
                if layout is not None:
                    packed = run.packed_logprobs(cache, layout, len(prompt), resps)
                    ref = []
                    for r in resps:
                        h = run.body(input_ids=torch.tensor([prompt + r], device=dev)).last_hidden_state
                        ref.append(run.token_logprobs(h[0, len(prompt):-1],
                                                      torch.tensor(r[1:], device=dev)).tolist())
                    # bfloat16 rounding fails this and is scored padded: measured as fast as packed
                    # there (Gemma 3 270M, 24 real replies: 4.9 s padded, 5.1 s packed).
                    ok = all(len(a) == len(b) and all(abs(x - y) < 1e-4 for x, y in zip(a, b))
                             for a, b in zip(packed, ref))
        except Exception:  # noqa: BLE001 - a model that rejects custom masks is scored padded
            ok = False
    _PACK_OK[model] = ok
    return ok


def _packs(lengths: dict, batch_size: int, pack_tokens: int) -> list[list]:
    """First-fit decreasing: ids (longest first) into packs of at most ``batch_size`` responses and
    ``max(pack_tokens, longest)`` tokens, so no forward pass carries padding."""
    cap = max([pack_tokens, *lengths.values()])
    packs: list[list] = []
    room: list[int] = []
    for i in sorted(lengths, key=lambda i: -lengths[i]):
        for p, pack in enumerate(packs):
            if len(pack) < batch_size and room[p] >= lengths[i]:
                pack.append(i)
                room[p] -= lengths[i]
                break
        else:
            packs.append([i])
            room.append(cap - lengths[i])
    return packs


def _autocast(device, enabled: bool):
    import contextlib

    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


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
    (:func:`_head_logprobs`).

    Models whose attention or cache packing cannot drive (checked once per model against
    one-at-a-time scoring; see :func:`_pack_ok`) are scored the earlier way: ``batch_size``
    responses right-padded into a batch against a deep copy of the prompt's ``DynamicCache``
    repeated along the batch dimension (``cache.batch_repeat_interleave(n)``), attention mask
    ones over the prompt followed by the response mask, position ids ``len(prompt) ..``.

    ``device`` is where inputs go (default: the model's device; the model is not moved).
    ``bf16=True`` runs under ``torch.autocast(dtype=bfloat16)``; log-softmax is always float32.
    ``token_logprobs=True`` adds each response token's log-prob as ``token_logprobs``.
    """
    import torch

    run = _Runner(model, device)
    dev = run.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[dict | None] = [None] * len(requests)
    groups: "OrderedDict[str, list[int]]" = OrderedDict()
    for i, r in enumerate(requests):
        groups.setdefault(r.prompt, []).append(i)

    with torch.inference_mode(), _autocast(dev, bf16):
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
            lp0 = ((_apply_head(model, last) if run.split else last).float().log_softmax(-1))[0]
            first = {i: float(lp0[resp[i][0]]) for i in todo}  # r_1 | prompt, from its last position
            for i in todo:
                if len(resp[i]) == 1:
                    out[i] = _result(requests[i], [first[i]], token_logprobs)
            todo = [i for i in todo if len(resp[i]) > 1]
            layout = run.layout(prefix_cache, L) if run.pack and todo else None
            if layout is not None:
                for pack in _packs({i: len(resp[i]) - 1 for i in todo}, batch_size, pack_tokens):
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
    with :func:`simlib.models.load_causal_lm` only if something is missing and ``model`` is None.
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
            from simlib.models import load_causal_lm

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
    sequences at a time, each prompt read once (:func:`simlib.sampling.sample`); each prompt's
    samples are drawn from a generator seeded by ``hash(seed, prompt)``, so they do not depend on
    the other prompts in the list, on call order or on the global RNG. Texts are decoded
    with ``skip_special_tokens=True`` and cut before the first of ``stop_strings`` if given (a base
    model such as Gemma 3 270M may write past one comment; e.g. ``stop_strings=["\\n\\n"]``).
    """
    from .sampling import batches, eos_ids, sample

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
