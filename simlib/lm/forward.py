"""Forward passes for scoring: the decoder body and the output head run apart, so the vocabulary
projection covers response positions only, tile by tile; several responses of one prompt are packed
into one row against the prompt's KV cache. Each shortcut is checked once per model against the
plain forward pass and falls back to it where the structure differs.

Also the transformers-version plumbing the samplers share (:func:`cache_kw`, :func:`out_cache`).
"""
from __future__ import annotations

import copy
import inspect
import weakref

__all__ = ["forward_params", "cache_kw", "out_cache", "apply_head", "split_ok", "head_logprobs", "chunked_logprobs",
           "Runner", "pack_ok", "packs", "autocast"]

SPLIT_OK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def forward_params(module):
    """The arguments of the model class's own ``forward`` (a PEFT wrapper or TRL's patched
    forward take ``**kwargs`` and pass them on)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    return inspect.signature(type(base).forward).parameters


def cache_kw(module) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name is deprecated)."""
    return "cache" if "cache" in forward_params(module) else "past_key_values"


def out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def apply_head(model, hidden):
    """Logits from final hidden states: lm_head plus Gemma-2-style final soft-capping."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = (logits / cap).tanh() * cap
    return logits


def split_ok(model) -> bool:
    """Whether ``model.model`` + :func:`apply_head` reproduces ``model(...).logits``.

    Scoring through the decoder's hidden states lets the vocabulary projection run in chunks over
    the response positions only (Gemma 3's 262k vocabulary makes a 16x128 batch's logits 2 GB in
    float32). Checked once per model on a short input; models with other output heads fall back to
    the full forward pass.
    """
    if model in SPLIT_OK:
        return SPLIT_OK[model]
    import torch

    ok = False
    dec, head = getattr(model, "model", None), model.get_output_embeddings()
    if dec is not None and head is not None:
        dev = next(model.parameters()).device
        ids = torch.arange(10, 17, device=dev)[None]
        with torch.inference_mode():
            full = model(input_ids=ids).logits.float()
            try:
                split = apply_head(model, dec(input_ids=ids).last_hidden_state).float()
                ok = split.shape == full.shape and torch.allclose(split, full, atol=1e-3, rtol=1e-3)
            except Exception:  # noqa: BLE001 - any mismatch in structure means "do not split"
                ok = False
    SPLIT_OK[model] = ok
    return ok


PACK_OK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
PACK_TYPES = ("full_attention", "sliding_attention")


def head_logprobs(model, hidden, targets, rows: int = 256, tile: int | None = None):
    """Log-probabilities of ``targets`` [N] from final hidden states ``hidden`` [N, D].

    Same numbers as ``log_softmax(apply_head(model, hidden))[targets]`` (to float32 rounding),
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
        return chunked_logprobs(lambda f: apply_head(model, f), hidden, targets)
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


def chunked_logprobs(to_logits, feats, targets, chunk: int = 256):
    """``feats`` [N, ...] → logits by ``to_logits`` in row chunks → log-probs of ``targets`` [N]."""
    import torch

    res = []
    for i in range(0, feats.shape[0], chunk):
        logits = to_logits(feats[i:i + chunk]).float()
        tgt = targets[i:i + chunk].to(logits.device)
        res.append(logits.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(logits, -1))
    return torch.cat(res) if res else feats.new_zeros(0, dtype=torch.float32)


class Runner:
    """Forward passes returning either final hidden states (split) or logits (fallback)."""

    def __init__(self, model, device=None):
        import torch

        self.model = model
        self.split = split_ok(model)
        self.body = model.model if self.split else model
        self.kw = cache_kw(self.body)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.pack = pack_ok(self)

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
        return feats, out_cache(out)

    def token_logprobs(self, feats, targets):
        """``feats`` [N, D|V] (one row per predicting position), ``targets`` [N] → log-probs [N]."""
        if self.split:
            return head_logprobs(self.model, feats, targets)
        return chunked_logprobs(lambda f: f, feats, targets)

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
        if len(types) != len(layers) or not set(types) <= set(PACK_TYPES):
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


def pack_ok(run: "Runner") -> bool:
    """Whether packed scoring matches one-response-at-a-time scoring on this model (checked once
    on a tiny input; unknown attention kinds, caches or mask conventions fall back to padding)."""
    model = run.model
    if model in PACK_OK:
        return PACK_OK[model]
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
                    # bfloat16 rounding fails this and is scored padded, which costs it no time there
                    ok = all(len(a) == len(b) and all(abs(x - y) < 1e-4 for x, y in zip(a, b))
                             for a, b in zip(packed, ref))
        except Exception:  # noqa: BLE001 - a model that rejects custom masks is scored padded
            ok = False
    PACK_OK[model] = ok
    return ok


def packs(lengths: dict, batch_size: int, pack_tokens: int) -> list[list]:
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


def autocast(device, enabled: bool):
    import contextlib

    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
