"""The GRPO recipe: its settings validated and carried from the profile to TRL, and the sweep's rule."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simlib import config
from simlib.train import spec as spec_mod

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package
from benchmarks import bench_recipe  # noqa: E402


@pytest.mark.parametrize("name,value,quoted", [("warmup_ratio", 1.5, "1.5"), ("scale_rewards", "std", "'std'"),
                                               ("grpo_save_steps", -1, "-1")])
def test_recipe_fields_are_validated_quoting_the_value(name, value, quoted):
    with pytest.raises(config.ConfigError, match=f"{name}.*{quoted}"):
        config.load("ci", {name: value})


def test_recipe_flows_from_the_profile_to_grpo_config():
    cfg = config.load("ci", {"warmup_ratio": 0.25, "scale_rewards": "none", "grpo_steps": 8, "learning_rate": 3e-6})
    spec = spec_mod.from_config(cfg, seed=0)
    assert (spec.warmup_ratio, spec.scale_rewards, spec.save_steps) == (0.25, "none", 0)
    args = spec_mod.grpo_config(spec, cpu=True)
    assert args.warmup_steps == 2 and args.lr_scheduler_type == "constant_with_warmup"
    assert args.scale_rewards == "none" and args.learning_rate == 3e-6
    assert args.save_strategy == "no"  # no checkpoint mid-run unless grpo_save_steps asks for one
    kept = spec_mod.grpo_config(spec_mod.from_config(config.load("ci", {"grpo_save_steps": 5}), 0), cpu=True)
    assert kept.save_strategy == "steps" and kept.save_steps == 5
    plain = spec_mod.grpo_config(spec_mod.from_config(config.load("ci"), 0), cpu=True)
    assert plain.warmup_steps == 0 and plain.lr_scheduler_type == "constant"


def test_new_fields_at_their_defaults_leave_run_identities_unchanged():
    base = spec_mod.TrainSpec(steps=3)
    assert "warmup_ratio" not in base._hashed() and "reuse_prefill" not in base._hashed()
    assert spec_mod.TrainSpec(steps=3, warmup_ratio=0.1).identity() != base.identity()
    with pytest.raises(ValueError, match="scale_rewards"):
        spec_mod.TrainSpec(scale_rewards="std")


def _table(**rows):
    runs = {name: [{"seed": i, "gain": g, "kl": 0.01, "median_step_s": cost} for i, g in enumerate(gains)]
            for name, (gains, cost) in rows.items()}
    return bench_recipe.summarise(runs)


def test_rule_takes_a_separated_winner():
    t = _table(current=([0.0, 0.1, 0.2], 10.0), prompts_4=([0.1, 0.101, 0.099], 30.0))
    d = bench_recipe.choose(t)
    assert d["winner"] == "prompts_4" and d["separated"] and d["choice"] == "prompts_4" and d["f_test_p"] < 0.05


def test_rule_breaks_a_tie_towards_the_study_and_within_cost():
    # beta wins on SD/gain but is not separated; the tie-break keeps the cheap setting in the study's direction
    t = _table(current=([0.02, 0.04, 0.06], 10.0), beta_0_04=([0.04, 0.05, 0.06], 10.0),
               warmup_lr_3e_6=([0.02, 0.035, 0.05], 10.0), prompts_4=([0.03, 0.04, 0.05], 40.0))
    t["beta_0.04"], t["warmup_lr_3e-6"] = t.pop("beta_0_04"), t.pop("warmup_lr_3e_6")
    d = bench_recipe.choose(t)
    assert d["winner"] == "beta_0.04" and not d["separated"] and d["f_test_p"] > 0.05
    assert d["choice"] == "warmup_lr_3e-6"  # prompts_4 costs 4x the current step
    none = bench_recipe.choose(_table(current=([-0.01, 0.0, -0.02], 10.0), scale_none=([-0.01, -0.02, 0.0], 10.0)))
    assert none["choice"] == "current" and none["winner"] is None


def test_rule_says_how_far_the_current_recipe_stands_when_it_wins():
    d = bench_recipe.choose(_table(current=([0.04, 0.05, 0.06], 10.0), lora_lr_1e_4=([0.02, 0.05, 0.08], 8.0)))
    assert d["choice"] == "current" and d["runner_up"] == "lora_lr_1e_4" and not d["separated"]
    assert "stays" in d["reason"] and 0.05 < d["f_test_p"] < 1
