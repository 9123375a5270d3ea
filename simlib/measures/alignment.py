"""Representation alignment by mutual k-nearest neighbours (Huh et al. 2024, k=10).

"The Platonic Representation Hypothesis" (Huh, Cheung, Wang & Isola, ICML 2024) measures how
similarly two models arrange the same items: embed the items in both models, find each item's
k nearest neighbours (cosine, the item itself excluded) in each space, and average the fraction
of neighbours the two lists share. Identical or rotated spaces score 1; unrelated spaces score
about k/(n-1), the chance overlap of two random k-subsets of the other n-1 items.

Because chance depends on n, two sets of texts are compared at the same n:
:func:`equal_n_alignment` draws, again and again, the same number of texts from every source
(half the posts, the same number of replies per post) and scores each draw.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import simlib.lm.weights  # noqa: F401  (offline environment variables)

__all__ = ["mean_pooled_hidden", "knn_indices", "mutual_knn", "equal_n_alignment"]


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


def equal_n_alignment(feats: dict, posts: dict, models: Sequence[str], k: int = 10, repeats: int = 200,
                      post_frac: float = 0.5, seed: int = 0):
    """Mutual k-NN of every pair of ``models`` on each source's texts, at equal n, repeated.

    ``feats[source][model]`` is an [n_source, d] array whose rows are the texts of ``source``,
    ``posts[source]`` the post id of each row. Each repeat draws ``post_frac`` of the posts every
    source has texts for (without replacement, so no text meets a copy of itself) and, on each drawn
    post, the same number of texts from every source (the smallest count any source has there), so
    every source is scored on the same n, with the same chance level k/(n-1). Returns a long table
    (repeat, source, pair, value, n, k); the spread over repeats is that of half-size samples, wider
    than the full sample's, so intervals from it err on the wide side.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    sources = list(feats)
    rows_of = {s: pd.Series(np.arange(len(posts[s]))).groupby(np.asarray(posts[s])).apply(list).to_dict()
               for s in sources}
    common = sorted(set.intersection(*(set(r) for r in rows_of.values())))
    if len(common) < 2:
        raise ValueError(f"need at least 2 posts shared by every source, got {len(common)}")
    per_post = {p: min(len(rows_of[s][p]) for s in sources) for p in common}
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    m = max(2, int(round(post_frac * len(common))))
    out = []
    for rep in range(repeats):
        chosen = rng.choice(len(common), size=m, replace=False)
        for s in sources:
            idx = np.concatenate([rng.choice(rows_of[s][common[c]], size=per_post[common[c]], replace=False)
                                  for c in chosen])
            kk = min(k, len(idx) - 1)
            for a, b in pairs:
                out.append({"repeat": rep, "source": s, "pair": f"{a} ↔ {b}", "n": len(idx), "k": kk,
                            "value": mutual_knn(feats[s][a][idx], feats[s][b][idx], k=kk)})
    return pd.DataFrame(out)
