"""A policy, trained or not, loaded to sample from: the base model or a run's ``final/``."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from simlib.lm import weights  # also sets the offline environment variables

__all__ = ["load_policy", "generate_responses"]


def load_policy(model_dir_or_name: str, dtype: str = "float32"):
    """``(tokenizer, model)`` of a simlib name, a folder or a :func:`train` result (a LoRA adapter is
    merged), in eval mode, ready to sample."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simlib.lm.hardware import pick_device, pick_dtype

    device = pick_device()  # the one device rule (simlib.lm.hardware), as for every model load
    dtype = pick_dtype(dtype, device)
    path = Path(model_dir_or_name)
    if path.is_dir() and (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
        model = model.merge_and_unload()
        tok_src = path if (path / "tokenizer_config.json").exists() else model.config._name_or_path
    else:
        src = str(path) if path.is_dir() else weights.resolve(model_dir_or_name)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype))
        tok_src = src
    tok = AutoTokenizer.from_pretrained(str(tok_src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model = model.to(device)
    model.eval()
    return tok, model


def generate_responses(model_dir_or_name: str, prompts: Sequence[Any], n: int = 4,
                       max_new_tokens: int = 48, seed: int = 0, *, temperature: float = 1.0,
                       top_p: float = 1.0, dtype: str = "float32", model: Any = None,
                       tokenizer: Any = None, max_rows: int = 96) -> list[list[str]]:
    """``n`` sampled replies to each prompt (chat messages, or a string = one user message).

    ``model_dir_or_name``: a simlib name, a model folder, a :func:`train` result (full model or LoRA
    adapter, merged for generation) or a hub id. Prompts are decoded together, up to ``max_rows``
    sequences at a time (:func:`simlib.lm.sampling.sample`); prompt ``i`` draws from a generator
    seeded ``seed + i``, so its replies do not depend on the other prompts. Replies are decoded
    without special tokens. A loaded ``model``/``tokenizer`` pair may be passed to skip loading.
    """
    from simlib.lm.chat import render
    from simlib.lm.sampling import batches, eos_ids, sample

    if model is None or tokenizer is None:
        tokenizer, model = load_policy(model_dir_or_name, dtype)
    ids = []
    for prompt in prompts:
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        enc = render(tokenizer, msgs, tokenize=True, return_dict=True)  # thinking off (simlib.lm.chat)
        ids.append(list(enc["input_ids"]))
    results: list[list[str]] = [[] for _ in ids]
    for group in batches([len(i) for i in ids], n, max_rows):
        toks = sample(model, [ids[i] for i in group], [seed + i for i in group], n=n,
                      max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      eos_token_ids=eos_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id)
        for i, rows in zip(group, toks):
            results[i] = [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]
    return results

