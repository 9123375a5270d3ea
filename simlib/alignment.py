"""Representation alignment by mutual k-nearest neighbours (Huh et al. 2024, k=10).

"The Platonic Representation Hypothesis" (Huh, Cheung, Wang & Isola, ICML 2024) measures how
similarly two models arrange the same items: embed the items in both models, find each item's
k nearest neighbours (cosine, the item itself excluded) in each space, and average the fraction
of neighbours the two lists share. Identical or rotated spaces score 1; unrelated spaces score
about k/(n-1), the chance overlap of two random k-subsets of the other n-1 items.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import simlib.models  # noqa: F401  (offline environment variables)

__all__ = ["mean_pooled_hidden", "knn_indices", "mutual_knn"]


def mean_pooled_hidden(texts: Sequence[str], tokenizer, model, layer: int = -1,
                       batch_size: int = 16, max_length: int = 256,
                       drop_special_tokens: bool = False, device=None) -> np.ndarray:
    """Mean of one layer's hidden states over each text's tokens → float32 array [n, d].

    Texts are tokenised one by one (the tokenizer's special tokens included, e.g. Gemma's
    ``<bos>``; truncated to ``max_length`` tokens), batched by length, right-padded by hand (no
    pad token needed) and run through ``model.base_model`` (so a causal LM never projects onto its
    vocabulary) with ``output_hidden_states=True``. ``layer`` indexes ``hidden_states``: 0 is the
    embedding output, -1 the last layer (in transformers 5 this equals ``last_hidden_state``, i.e.
    after the final norm). The mean is mask-aware: padding never enters it, so a text's vector does
    not depend on what it was batched with. ``drop_special_tokens=True`` leaves BOS/EOS and other
    special tokens out of the mean (Huh et al. average over all tokens, the default here).
    """
    import torch

    base = getattr(model, "base_model", model)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    enc = [tokenizer(t, add_special_tokens=True, truncation=True, max_length=max_length,
                     return_special_tokens_mask=True) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(enc[i]["input_ids"]))
    out: list[np.ndarray | None] = [None] * len(texts)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            T = max(len(enc[i]["input_ids"]) for i in idx)
            ids = torch.zeros((len(idx), T), dtype=torch.long)
            attn = torch.zeros((len(idx), T), dtype=torch.long)
            keep = torch.zeros((len(idx), T), dtype=torch.bool)
            for j, i in enumerate(idx):
                x = enc[i]["input_ids"]
                ids[j, :len(x)] = torch.tensor(x)
                attn[j, :len(x)] = 1
                k = torch.ones(len(x), dtype=torch.bool)
                if drop_special_tokens:
                    k = torch.tensor(enc[i]["special_tokens_mask"]) == 0
                    if not k.any():  # a text of special tokens only: fall back to all tokens
                        k[:] = True
                keep[j, :len(x)] = k
            o = base(input_ids=ids.to(dev), attention_mask=attn.to(dev), output_hidden_states=True)
            h = o.hidden_states[layer].float()
            w = keep.to(h.device, h.dtype)[..., None]
            pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
            for j, i in enumerate(idx):
                out[i] = pooled[j].cpu().numpy()
    if not out:
        return np.zeros((0, base.config.hidden_size), dtype=np.float32)
    return np.stack(out).astype(np.float32)


def knn_indices(feats: np.ndarray, k: int) -> np.ndarray:
    """Indices [n, k] of each row's k most cosine-similar other rows (itself excluded)."""
    x = np.asarray(feats, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.argpartition(-sim, kth=k - 1, axis=1)[:, :k]


def mutual_knn(feats_a: np.ndarray, feats_b: np.ndarray, k: int = 10) -> float:
    """Mutual k-NN alignment of two representations of the same n items (rows aligned).

    For each item i, ``|knn_A(i) ∩ knn_B(i)| / k`` with neighbours by cosine similarity excluding
    i itself; the mean over items. 1.0 for identical spaces or any rotation/scaling of one; about
    ``k/(n-1)`` for unrelated spaces.

    >>> x = np.random.default_rng(0).normal(size=(50, 8))
    >>> mutual_knn(x, 3 * x, k=5)
    1.0
    """
    a, b = np.asarray(feats_a), np.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need two 2-D arrays with the same number of rows, got {a.shape}, {b.shape}")
    n = a.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in 1..n-1 (n={n}), got {k}")
    na, nb = knn_indices(a, k), knn_indices(b, k)
    ma = np.zeros((n, n), dtype=bool)
    mb = np.zeros((n, n), dtype=bool)
    rows = np.arange(n)[:, None]
    ma[rows, na] = True
    mb[rows, nb] = True
    return float(((ma & mb).sum(1) / k).mean())
