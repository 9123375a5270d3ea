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


def _tiny_fused(tiny_policy):
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy, dtype=torch.float32)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    return model


@pytest.mark.parametrize("n_prompts", [1, 2])
def test_reusing_the_rollouts_prefill_gives_the_same_loss_and_gradients(tiny_policy, n_prompts):
    """The training pass from the rollouts' prompt cache (prefill_prompt) equals the pass that reads
    the prompt itself: per-token log-probs, entropies, the loss and every gradient within 1e-5."""
    import torch

    model = _tiny_fused(tiny_policy)
    P, C, G = 12, 5, 4 // n_prompts
    prompts = torch.randint(5, 1000, (n_prompts, P))
    rows = [i for i in range(n_prompts) for _ in range(G)]
    comp = torch.randint(5, 1000, (4, C))
    cmask = torch.ones(4, C, dtype=torch.long)
    cmask[2, 3:] = 0  # a completion that ended early
    ids = torch.cat([prompts[rows], comp], 1)
    mask = torch.ones_like(ids)
    mask[:, P:] = cmask

    def loss_and_grads(prefills):
        model.zero_grad()
        lp, ent = trainer_mod.shared_prompt_logps(model, ids, mask, C, prefills=prefills)
        loss = (lp * cmask).sum() / cmask.sum() + 0.1 * ent.sum()
        loss.backward()
        return float(loss.detach()), lp.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ref_loss, ref_lp, ref_g = loss_and_grads(None)
    prefills = {tuple(p.tolist()): trainer_mod.prefill_prompt(model, p.tolist()) for p in prompts}
    loss, lp, got_g = loss_and_grads(prefills)
    assert prefills == {}  # each prefill was used, once
    assert abs(loss - ref_loss) < 1e-5 and torch.allclose(lp, ref_lp, atol=1e-5)
    assert len(got_g) == len(ref_g) > 0
    for a, b in zip(got_g, ref_g):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_sampling_from_a_prefix_cache_draws_the_same_tokens_and_leaves_it(tiny_policy):
    import torch

    from simlib.lm.sampling import sample

    model = _tiny_fused(tiny_policy).eval()
    prompts = [list(range(10, 22)), list(range(30, 42))]
    caches = [trainer_mod.prefill_prompt(model, p) for p in prompts]
    before = [c.layers[0].keys.clone() for c in caches]
    kw = dict(n=3, max_new_tokens=6, temperature=1.0, eos_token_ids=[], pad_token_id=0)
    assert sample(model, prompts, [1, 2], prefix=caches, **kw) == sample(model, prompts, [1, 2], **kw)
    for c, b in zip(caches, before):  # untouched: still the prompt less its last token, graph and all
        assert c.get_seq_length() == 11 and torch.equal(c.layers[0].keys, b) and c.layers[0].keys.requires_grad
    with pytest.raises(ValueError, match="one length"):
        sample(model, [prompts[0], prompts[1][:-1]], [1, 2], prefix=caches, **kw)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_training_reuses_the_prefill_with_the_same_loss(tmp_path, tiny_policy):
    import torch

    torch.set_num_threads(1)

    def one_step(reuse: bool):
        spec = spec_mod.TrainSpec(policy=tiny_policy, steps=1, num_generations=2, prompts_per_step=1,
                                  max_completion_length=6, output_dir=str(tmp_path / str(reuse)), seed=0,
                                  reuse_prefill=reuse)

        def reward(completions, post_id, **kw):
            return [float(len(str(c)) % 3) for c in completions]

        trainer = trainer_mod.build_trainer(spec, prompt_records(PROMPTS[:1]), reward, spec_mod.grpo_config(spec, cpu=True))
        trainer.train()
        return trainer.simlib_counts, [h for h in trainer.state.log_history if "loss" in h][0]

    on, log_on = one_step(True)
    off, log_off = one_step(False)
    assert on["prefills"] == on["prefills_reused"] == 1 and off["prefills"] == 0
    assert on["shared_prompt_pass"] == off["shared_prompt_pass"] == 1
    assert log_on["reward"] == log_off["reward"]  # the same rollouts
    assert abs(log_on["loss"] - log_off["loss"]) < 1e-5 and abs(log_on["grad_norm"] - log_off["grad_norm"]) < 1e-5
