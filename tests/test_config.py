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


# --- values that name something outside the run (simlib.inputs) ---------------------------------
@pytest.mark.parametrize("name,value,fragment", [
    ("api_base_url", "ftp://x", "api_base_url must be an http(s) URL like https://api.openai.com/v1, got 'ftp://x'"),
    ("api_base_url", "localhost:8000/v1", "got 'localhost:8000/v1'"),
    ("policy", "../../etc", "policy must not climb out of its folder with '..', got '../../etc'"),
    ("policy", "/etc", "policy names the folder '/etc', which holds no model"),
    ("scorer", "gemma-typo", "scorer must be a shipped model (smollm2-135m, gemma3-270m, minilm-l6)"),
    ("encoder", "/no/such/model", "got '/no/such/model'"),
    ("work_dir", "/etc", "work_dir must not be a system folder or the repository itself, got '/etc'"),
    ("work_dir", "/usr/local/share/x", "got '/usr/local/share/x'"),
    ("work_dir", "/", "got '/'"),
    ("work_dir", ".", "work_dir must not be a system folder or the repository itself, got '.'"),
    ("n_boot", 5, "n_boot must be >= 1000"),
    ("n_boot", 999, "got 999"),
    ("dumps", [["/nonexistent.zst", "/x.zst"]], "dumps names '/nonexistent.zst', which is not an existing file"),
])
def test_outward_values_are_refused_quoting_them(name, value, fragment):
    with pytest.raises(ConfigError) as exc:
        config.load("ci", {name: value})
    assert fragment in str(exc.value)


def test_good_outward_values_pass(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    dump = tmp_path / "RS.zst"
    dump.write_bytes(b"x")
    cfg = config.load("ci", {"api_base_url": "https://api.openai.com/v1", "generator": "gpt-4o-mini",
                             "policy": str(model), "scorer": "Qwen/Qwen3-8B", "n_boot": 1000,
                             "work_dir": str(tmp_path / "new"), "dumps": [[str(dump), str(dump)]],
                             "subreddits": ["AskReddit"]})
    assert cfg.policy == str(model) and cfg.n_boot == 1000


def test_unreadable_dump_is_refused(tmp_path, monkeypatch):
    dump = tmp_path / "RC.zst"
    dump.write_bytes(b"x")
    real_open = open

    def deny(path, *a, **k):
        if str(path) == str(dump):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(ConfigError, match="cannot be read"):
        config.load("ci", {"dumps": [[str(dump), str(dump)]], "subreddits": ["aitah"]})


def test_work_dir_must_hold_a_simlib_run_or_nothing(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"holds things a simlib run does not write \(holiday.jpg\)"):
        config.load("ci", {"work_dir": str(other)})
    previous = tmp_path / "old-run"  # a run from before the marker: only simlib's own entries
    (previous / "data").mkdir(parents=True)
    (previous / "generations.jsonl").write_text("")
    assert config.load("ci", {"work_dir": str(previous)}).work_dir == str(previous)
    fresh = config.load("ci", {"work_dir": str(tmp_path / "fresh")})
    fresh.path("figures", "x.png")  # the first write claims the folder
    (tmp_path / "fresh" / "notes.txt").write_text("mine")
    assert config.load("ci", {"work_dir": str(tmp_path / "fresh")})  # claimed: its contents are the run's


@pytest.mark.parametrize("value,quoted", [("api_base_url=ftp://x", "'ftp://x'"), ("policy=../../etc", "'../../etc'"),
                                          ("work_dir=/etc", "'/etc'"), ("n_boot=5", "got 5"),
                                          ("dumps=[[/nonexistent.zst,/x.zst]]", "'/nonexistent.zst'")])
def test_cli_config_refuses_the_issue_values(value, quoted):
    proc = subprocess.run([sys.executable, "-m", "simlib.publish.cli", "config", "--set", value],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout
    assert quoted in proc.stderr, proc.stderr
