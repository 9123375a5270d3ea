"""Sampled replies from a causal LM, many prompts decoded together, each prompt on its own random stream.

Why it exists: on a CPU one decoding step of a small model costs about the time it takes to read its
weights, whatever the number of rows in the step. Gemma 3 270M's output layer alone holds 168M
parameters (a 262k-token vocabulary), so reading it dominates a decoding step (the Performance
chapter and ``benchmarks/bench_logprob.py`` measure it). Sampling prompts one after another pays that
per prompt; :func:`sample` pays it once per step for a whole batch.

How (lm-evaluation-harness's habit of batching requests, HF ``generate``'s left padding):

1. the prompts are left-padded to one length and read in one forward pass (positions count real
   tokens only, so a padded prompt sees the positions it would see alone);
2. each prompt's cache is repeated ``n`` times (the prompt is read once, not once per sample);
3. every step feeds one token per row; rows that ended (EOS) are fed padding and no longer recorded;
   the loop stops when every row has ended or after ``max_new_tokens``.

Each prompt draws from its own ``torch.Generator`` seeded by the caller, so which token a prompt's
samples draw does not depend on the other prompts of the batch, on their order or on the global RNG
(left untouched). What a batch can change is the last bits of the logits (matrix products of another
shape sum in another order), which very rarely flips a sampled token: store samples, do not
re-sample them to replay a result. Greedy decoding (``temperature=0``) of a batch equals one prompt at
a time (``tests/test_sampling.py``).
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["sample", "batches", "eos_ids", "joined_cache"]


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end a reply: the tokenizer's EOS and the model's generation config's (as
    ``generate`` stops on)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen if isinstance(gen, (list, tuple)) else [] if gen is None else [gen])
    return sorted(int(i) for i in ids)


def batches(lengths: Sequence[int], n: int, max_rows: int) -> list[list[int]]:
    """Indices of prompts grouped for :func:`sample`: longest first (padding then stays small and
    memory errors show early), at most ``max(1, max_rows // n)`` prompts per batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    per = max(1, max_rows // max(n, 1))
    return [order[i:i + per] for i in range(0, len(order), per)]


def _draw(logits, temperature: float, top_p: float, generators: list, n: int):
    """One token per row: rows ``g*n .. g*n+n-1`` belong to prompt ``g`` and use ``generators[g]``."""
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_p < 1.0:  # nucleus: drop the least likely tokens whose total mass is below 1 - top_p
        sorted_logits, idx = torch.sort(logits, descending=False, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum <= (1 - top_p)
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
    # Inverse-CDF draws, one uniform per row: a categorical sample many times cheaper than
    # torch.multinomial over a 262k vocabulary. In float32 a token's
    # interval is off by at most one rounding of the running sum (~6e-8 of the total), so only
    # tokens rarer than that are misrepresented. right=True: a token of probability 0 owns an empty
    # interval and is never drawn.
    cdf = logits.softmax(-1).cumsum(-1)
    u = torch.cat([torch.rand(n, generator=gen, device=logits.device) for gen in generators])
    tok = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True)[:, 0]
    return tok.clamp_(max=logits.shape[-1] - 1)


def joined_cache(caches: Sequence[Any]):
    """One new ``DynamicCache`` holding ``caches`` (of equal length) one after another in the batch,
    detached: decoding appends to it without touching the originals or their autograd graph."""
    import torch
    from transformers import DynamicCache

    if any(type(layer).__name__ != "DynamicLayer" for c in caches for layer in c.layers):
        raise ValueError("only plain DynamicCache layers can be joined (no sliding windows)")
    out = DynamicCache()
    for i in range(len(caches[0].layers)):
        out.update(torch.cat([c.layers[i].keys for c in caches]).detach(),
                   torch.cat([c.layers[i].values for c in caches]).detach(), i)
    return out


def sample(model: Any, prompts: Sequence[Sequence[int]], seeds: Sequence[int], *, n: int = 1,
           max_new_tokens: int = 48, temperature: float = 1.0, top_p: float = 1.0,
           eos_token_ids: Sequence[int] = (), pad_token_id: int = 0, keep_eos: bool = False,
           prefix: Sequence[Any] | None = None) -> list[list[list[int]]]:
    """``n`` sampled continuations (token ids) of each prompt (token ids), all decoded together.

    Plain ancestral sampling at ``temperature`` (no top-k; nucleus only if ``top_p < 1``; greedy at
    ``temperature=0``). Prompt ``i`` draws from a generator seeded ``seeds[i]``. Returns one list per
    prompt of ``n`` token lists, in the order of ``prompts``. Split large inputs with :func:`batches`.

    ``prefix``: per prompt, the KV cache (a plain ``DynamicCache``) of all its tokens but the last,
    computed by the caller at positions 0.. (GRPO computes it with autograd for its training pass and
    reads the prompt once for both, :mod:`simlib.train.trainer`); only the last tokens are then read
    here, and the caches are left as they were. The prompts must then have one length (no padding).
    """
    import torch

    from simlib.lm.forward import cache_kw, forward_params, out_cache

    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("an empty prompt has nothing to condition on")
    dev = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=dev)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long, device=dev)
        mask[i, width - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gens = [torch.Generator(device=dev).manual_seed(int(s) % (2**63 - 1)) for s in seeds]
    eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=dev)
    rows = len(prompts) * n
    out_ids: list[list[int]] = [[] for _ in range(rows)]
    with torch.inference_mode():
        keep = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
        if prefix is None:
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep)
        else:
            if len(prefix) != len(prompts) or any(len(p) != width for p in prompts):
                raise ValueError("a prefix needs one cache per prompt and prompts of one length")
            out = model(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:], use_cache=True,
                        **keep, **{cache_kw(model): joined_cache(prefix)})
        cache = out_cache(out)
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, 0)
        mask = mask.repeat_interleave(n, 0)
        last = pos[:, -1].repeat_interleave(n)
        done = torch.zeros(rows, dtype=torch.bool, device=dev)
        kw = cache_kw(model)
        for step in range(max_new_tokens):
            tok = _draw(logits, temperature, top_p, gens, n)
            ended = torch.isin(tok, eos) if eos.numel() else torch.zeros_like(done)
            for r in (~done & (~ended | keep_eos)).nonzero()[:, 0].tolist():
                out_ids[r].append(int(tok[r]))
            done |= ended
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            feed = torch.where(done, torch.full_like(tok, pad_token_id), tok)[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            out = model(input_ids=feed, attention_mask=mask, position_ids=last[:, None], use_cache=True,
                        **{kw: cache})
            cache = out_cache(out)
            logits = out.logits[:, -1].float()
    return [out_ids[i * n:(i + 1) * n] for i in range(len(prompts))]
