"""What this machine computes natively: the one question behind ``auto`` precision settings.

bfloat16 pays off only where the hardware multiplies it. On a CPU with AVX-512-BF16 or AMX it
halves the memory traffic that bounds a small model; on one without (AVX2 only), PyTorch emulates
it, several times slower than float32 for both reading prompts and training (the Performance
chapter has the measured ratios). ``inference_dtype: auto`` and
``bf16: auto`` therefore ask :func:`native_bf16`.

The device rule (every model load: sampling, scoring, hidden features, embeddings, BERTScore,
evaluation, training) is :func:`pick_device` and :func:`pick_dtype`: CUDA when PyTorch sees a GPU,
else the CPU; bfloat16 weights where that device computes bfloat16 natively, else float32. The
``device`` parameter (auto, cpu, cuda) overrides the first; ``SIMLIB_DEVICE`` does the same for a
whole process (``simlib run`` sets it from the parameter, so the notebooks' kernels inherit it).
"""
from __future__ import annotations

import os
from functools import lru_cache

# x86 flags (/proc/cpuinfo "flags") and the aarch64 feature (its "Features" line) of bf16 arithmetic.
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no /proc/cpuinfo)."""
    flags: set[str] = set()
    try:
        with open(path) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return flags


@lru_cache(maxsize=None)
def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` ("cpu" or "cuda") computes in bfloat16 natively."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(cpu_flags() & BF16_FLAGS)


DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_count() -> int:
    """CUDA devices PyTorch sees (0 without torch or CUDA)."""
    return int(__import__("torch").cuda.device_count()) if cuda_available() else 0


def pick_device(device: str | None = None) -> str:
    """The device every model loads on: ``device`` (auto, cpu, cuda), else ``$SIMLIB_DEVICE``,
    else auto; auto = CUDA when PyTorch sees a GPU, else the CPU. Asking for CUDA without a GPU
    fails here rather than at the first tensor."""
    choice = (device or os.environ.get("SIMLIB_DEVICE") or "auto").lower()
    if choice not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {choice!r}")
    if choice == "auto":
        return "cuda" if cuda_available() else "cpu"
    if choice == "cuda" and not cuda_available():
        raise RuntimeError("device 'cuda' was asked for, but PyTorch sees no CUDA device "
                           "(a CPU build of torch, or no GPU visible)")
    return choice


def pick_dtype(dtype: str = "auto", device: str | None = None) -> str:
    """Weight dtype of a model on ``device``: ``dtype`` as given, or for ``auto`` bfloat16 where
    the device computes it natively and float32 elsewhere."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16(pick_device(device)) else "float32"


def training_device(device: str | None = None) -> str:
    """Where GRPO trains: the rule of :func:`pick_device`."""
    return pick_device(device)
