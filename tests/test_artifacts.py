"""The steps' one caching sequence (simlib.steps.artifacts.cached_artifact): compute once, then load."""
from __future__ import annotations

import json

import numpy as np
import pytest

from simlib.cache import atomic_write_json
from simlib.steps.artifacts import cached_artifact, save_npy


def test_computes_once_then_loads(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    path = tmp_path / "a.json"
    def load(p):
        return json.loads(p.read_text())

    first = cached_artifact(path, compute, load, atomic_write_json)
    again = cached_artifact(path, compute, load, atomic_write_json)
    assert first == again == {"value": 1} and len(calls) == 1


def test_a_failed_compute_leaves_nothing_that_looks_complete(tmp_path):
    path = tmp_path / "x.npy"

    def boom():
        raise RuntimeError("killed mid-step")

    with pytest.raises(RuntimeError):
        cached_artifact(path, boom, np.load, save_npy)
    assert not path.exists() and not list(tmp_path.iterdir())
    arr = cached_artifact(path, lambda: np.arange(3.0), np.load, save_npy)
    assert np.array_equal(np.load(path), arr) and not (tmp_path / "x.tmp.npy").exists()


def test_the_device_enters_keys_only_off_the_cpu(monkeypatch):
    from simlib import config
    from simlib.lm import hardware
    from simlib.steps.artifacts import dtype_key

    cfg = config.load("smoke", {"inference_dtype": "float32"})
    monkeypatch.setattr(hardware, "pick_device", lambda device=None: "cpu")
    cpu = dtype_key(cfg)
    monkeypatch.setattr(hardware, "pick_device", lambda device=None: "cuda")
    gpu = dtype_key(cfg)
    assert "device" not in cpu and gpu["device"] == "cuda" and gpu != cpu
