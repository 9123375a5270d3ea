"""simlib's trainer overrides private TRL methods: the guard that TRL still has them as written
against, and proof that each override runs (and takes simlib's path) in a real training step."""
from __future__ import annotations

import pytest

from simlib.train import spec as spec_mod
from simlib.train import trainer as trainer_mod
from simlib.train.run import prompt_records

PROMPTS = [{"post_id": k, "prompt": [{"role": "user", "content": f"AITA? Post {k}: my sister took my car."}]}
           for k in ("a", "b")]


def test_installed_trl_has_every_overridden_method_as_expected():
    trainer_mod.check_trl()  # raises on a mismatch
    assert ("GRPOTrainer", "_get_per_token_logps_and_entropies") in trainer_mod.TRL_OVERRIDES


def test_guard_fails_loudly_on_a_missing_or_reshaped_method():
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class Renamed(GRPOTrainer):
        _generate_single_turn = None  # as if TRL had renamed it

    class Reshaped(GRPOTrainer):
        def _get_train_sampler(self, dataset=None, generator=None):  # a new parameter
            return None

    with pytest.raises(RuntimeError, match=r"_generate_single_turn is missing"):
        trainer_mod.check_trl({"GRPOTrainer": Renamed, "RepeatSampler": RepeatSampler})
    with pytest.raises(RuntimeError, match=r"_get_train_sampler.*differs.*Pin trl==1.16.0"):
        trainer_mod.check_trl({"GRPOTrainer": Reshaped, "RepeatSampler": RepeatSampler})

    class OtherDefault(RepeatSampler):
        def __init__(self, data_source, mini_repeat_count, batch_size=1, repeat_count=1, shuffle=False, seed=None):
            super().__init__(data_source, mini_repeat_count, batch_size, repeat_count, shuffle, seed)

    with pytest.raises(RuntimeError, match=r"RepeatSampler.__init__"):
        trainer_mod.check_trl({"GRPOTrainer": GRPOTrainer, "RepeatSampler": OtherDefault})


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_every_override_runs_in_a_one_step_training(tmp_path, tiny_policy):
    import torch

    torch.set_num_threads(1)
    spec = spec_mod.TrainSpec(policy=tiny_policy, steps=1, num_generations=2, prompts_per_step=2,
                              max_completion_length=4, output_dir=str(tmp_path), seed=0)

    def reward(completions, post_id, **kw):
        return [float(i % 2) for i in range(len(completions))]

    trainer = trainer_mod.build_trainer(spec, prompt_records(PROMPTS), reward, spec_mod.grpo_config(spec, cpu=True))
    trainer.train()
    c = trainer.simlib_counts
    assert c["train_sampler"] >= 1 and c["generate_single_turn"] == 1 and c["shared_rollouts"] == 1
    assert c["logps"] >= 1 and c["shared_prompt_pass"] == c["logps"]  # every training pass took simlib's path
    assert type(trainer._get_train_sampler()).__name__ == "EpochSeededRepeatSampler"
