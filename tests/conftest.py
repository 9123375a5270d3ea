"""Test-wide settings: offline, and the real data sample beside the repository (../shared/data)."""
import os
from pathlib import Path

_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "SIMLIB_DATA_DIR" not in os.environ and (_shared / "reddit").exists():
    os.environ["SIMLIB_DATA_DIR"] = str(_shared)
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_UPDATE_CHECK"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import shutil  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> str:
    """A randomly initialised 2-layer model with SmolLM2's tokenizer and chat template (fast steps)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from simlib.lm import weights

    src = Path(weights.resolve("smollm2-135m"))
    dst = tmp_path_factory.mktemp("tiny-smollm2")
    cfg = AutoConfig.from_pretrained(src)
    cfg.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    shutil.copy(src / "generation_config.json", dst / "generation_config.json")
    return str(dst)
