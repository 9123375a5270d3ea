"""The config: profiles load, unknown names and bad values fail before any work."""
import subprocess
import sys
import time

import pytest

from simlib import config
from simlib.config import Config, ConfigError


@pytest.mark.parametrize("profile", ["smoke", "ci", "paper"])
def test_profiles_load_and_validate(profile):
    cfg = config.load(profile)
    assert cfg.profile == profile
    assert cfg.scorer != cfg.generator


def test_overrides_are_coerced_to_field_types():
    cfg = config.load("ci", {"n_posts": "12", "temperature": "0.7", "use_lora": "true",
                             "grpo_seeds": "[1, 2]", "styles": "plain,humanlike"})
    assert cfg.n_posts == 12 and isinstance(cfg.n_posts, int)
    assert cfg.temperature == 0.7 and cfg.use_lora is True
    assert cfg.grpo_seeds == [1, 2] and cfg.styles == ["plain", "humanlike"]


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(ConfigError) as exc:
        config.load("ci", {"n_post": 3})
    msg = str(exc.value)
    assert "'n_post'" in msg and "did you mean 'n_posts'" in msg
    assert "valid names:" in msg and "temperature" in msg


@pytest.mark.parametrize("name,value,fragment", [
    ("n_posts", -1, "n_posts must be >= 0, got -1"),
    ("temperature", 3.5, "temperature must be in [0, 2], got 3.5"),
    ("train_frac", 0.95, "train_frac + val_frac must be < 1"),
    ("num_generations", 1, "num_generations must be >= 2"),
    ("subreddits", ["aitah", "pics"], "subreddits must be a non-empty subset"),
    ("loss_type", "ppo", "loss_type must be one of"),
    ("n_posts", "ten", "parameter n_posts"),
    ("n_posts", 2.5, "expected an integer"),
    ("use_lora", "maybe", "expected true/false"),
    ("inference_dtype", "float16", "inference_dtype must be float32, bfloat16 or auto"),
    ("bf16", "sometimes", "parameter bf16: expected true/false"),
    ("local_server", "vllm", "local_server must be one of llama_server"),
])
def test_bad_values_fail_quoting_the_value(name, value, fragment):
    with pytest.raises(ConfigError, match=None) as exc:
        config.load("ci", {name: value})
    assert fragment in str(exc.value)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_hardware(monkeypatch, native):
    """``auto`` means bfloat16 only where the device computes it natively; explicit values win."""
    from simlib.lm import hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": native)
    cfg = config.load("ci", {"bf16": "auto", "inference_dtype": "auto"})
    assert cfg.bf16 == "auto" and cfg.inference_dtype == "auto"
    assert cfg.resolved_bf16() is native
    assert cfg.resolved_inference_dtype() == ("bfloat16" if native else "float32")
    fixed = config.load("ci", {"bf16": "false", "inference_dtype": "bfloat16"})
    assert fixed.resolved_bf16() is False and fixed.resolved_inference_dtype() == "bfloat16"


def test_cpu_flags_read_x86_and_arm_lines(tmp_path):
    from simlib.lm.hardware import BF16_FLAGS, cpu_flags

    x86 = tmp_path / "x86"
    x86.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                   "flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("flags\t\t: fpu sse avx2 fma\n")
    assert "avx512_bf16" in cpu_flags(str(x86)) and "bf16" in cpu_flags(str(arm))
    assert not cpu_flags(str(avx2)) & BF16_FLAGS
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_scorer_must_not_be_generator():
    with pytest.raises(ConfigError, match="scorer must not be the generator"):
        Config(scorer="smollm2-135m", generator="smollm2-135m")


def test_unknown_profile_lists_profiles():
    with pytest.raises(ConfigError, match="valid profiles: book, ci, gpu-smoke, paper, smoke"):  # sorted
        config.load("nope")


def test_parse_sets():
    assert config.parse_sets(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError):
        config.parse_sets(["novalue"])


def test_cli_rejects_bogus_parameter_fast():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "simlib.publish.cli", "run", "--profile", "ci", "--set", "bogus=1"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2
    assert "unknown parameters: 'bogus'" in proc.stderr and "n_posts" in proc.stderr
    assert elapsed < 5, f"validation took {elapsed:.1f} s"
