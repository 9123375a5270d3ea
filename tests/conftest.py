"""Test-wide settings: offline, and the real data sample beside the repository (../shared/data)."""
import os
from pathlib import Path

_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "SIMLIB_DATA_DIR" not in os.environ and (_shared / "reddit").exists():
    os.environ["SIMLIB_DATA_DIR"] = str(_shared)
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_UPDATE_CHECK"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
