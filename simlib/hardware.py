"""What this machine computes natively: the one question behind ``auto`` precision settings.

bfloat16 pays off only where the hardware multiplies it. On a CPU with AVX-512-BF16 or AMX it
halves the memory traffic that bounds a small model; on one without (AVX2 only), PyTorch emulates
it and, measured on such a 2-core AMD EPYC, a SmolLM2-135M prompt is read 5x slower in bfloat16
than in float32 and a bf16-autocast training pass is 23x slower. ``inference_dtype: auto`` and
``bf16: auto`` therefore ask :func:`native_bf16`.
"""
from __future__ import annotations

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


def training_device() -> str:
    """Where GRPO trains (simlib.train's rule): CUDA when PyTorch sees a GPU, else the CPU. The
    models that only infer (sampling, scoring, hidden features) always run on the CPU."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
