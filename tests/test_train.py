"""GRPO training: a real 2-step run, resume after a kill, skip when done, evaluation, accelerate."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from simlib.train.evaluate import evaluate_policy
from simlib.train import (TrainSpec, check_paired, generate_responses, last_checkpoint,
                          paired_specs, read_log, run_dir, train)
from simlib.train import spec as train_spec_mod
from simlib.train import run as run_mod
from simlib.train import trainer as trainer_mod

REPO = Path(__file__).resolve().parent.parent

REFS = {"a": ["NTA, she was rude to take it."], "b": ["YTA, you should apologise to him."],
        "c": ["ESH, talk it out."], "d": ["Info: who paid for the car?"]}
PROMPTS = [{"post_id": k, "prompt": [{"role": "system", "content": "Reply briefly."},
                                     {"role": "user", "content": f"AITA? Post {k}: my sister took my car."}]}
           for k in REFS]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, torch's default of 2
    spinning OpenMP threads makes these small models several times slower (see the report)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_spec(tmp_path: Path, policy: str, **kw) -> TrainSpec:
    base = dict(policy=policy, steps=2, num_generations=2, prompts_per_step=2, max_completion_length=8,
                save_steps=1, output_dir=str(tmp_path / "run"), seed=0)
    base.update(kw)
    return TrainSpec(**base)


@pytest.mark.slow
def test_two_steps_smollm2_logs_rewards(tmp_path):
    # 2 short prompts, one per step, 2 generations of <= 8 tokens: ~10 s a step on a quiet 2-core CPU
    spec = TrainSpec(policy="smollm2-135m", steps=2, num_generations=2, prompts_per_step=1,
                     max_completion_length=8, save_steps=10, output_dir=str(tmp_path / "run"))
    final = train(spec, PROMPTS[:2], REFS)
    assert (final / "config.json").exists() and (final / "tokenizer_config.json").exists()
    log = read_log(spec.output_dir)
    assert [r["step"] for r in log] == [1, 2]
    for r in log:
        assert 0.0 < r["reward_mean"] <= 1.0 and r["reward_std"] >= 0.0
        assert math.isfinite(r["loss"]) and 1 <= r["completion_length"] <= 8
        assert r["step_seconds"] > 0 and r["target"] == "synthetic"
        assert r["metrics"]["rewards/bertscore_max/mean"] == pytest.approx(r["reward_mean"])
    lines = (Path(spec.output_dir) / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2
    done = json.loads((Path(spec.output_dir) / "done.json").read_text())
    assert done["spec_hash"] == spec.hash() and done["steps"] == 2
    assert not list(Path(spec.output_dir).glob("checkpoint-*"))


class KillAfterSave(TrainerCallback):
    """Dies right after checkpoint ``step`` is written, like a run killed between two steps."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated kill after checkpoint-{self.step}")


def test_killed_run_resumes_from_checkpoint(tmp_path, tiny_policy):
    spec = tiny_spec(tmp_path, tiny_policy, steps=3, save_total_limit=2)
    with pytest.raises(KeyboardInterrupt):
        train(spec, PROMPTS, REFS, callbacks=[KillAfterSave(2)])
    out = Path(spec.output_dir)
    assert last_checkpoint(out).name == "checkpoint-2"
    assert not (out / "done.json").exists()
    first = read_log(out)
    assert [r["step"] for r in first] == [1, 2]
    # a kill between logging step 3 and saving it leaves a record the resumed run must replace
    with open(out / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "reward_mean": -99.0}) + "\n" + '{"step": 4, "torn')

    final = train(spec, PROMPTS, REFS)
    assert json.loads((out / "run.json").read_text())["resumed_from"].endswith("checkpoint-2")
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3]
    raw_steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert raw_steps == [1, 2, 3]  # each step once in the file itself
    assert log[:2] == first and log[2]["reward_mean"] != -99.0
    assert log[2]["elapsed_seconds"] >= log[1]["elapsed_seconds"]
    assert (final / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))

    # resuming restores weights, optimizer and RNG: the same as a run that was never interrupted
    from safetensors.torch import load_file

    whole = train(tiny_spec(tmp_path, tiny_policy, steps=3, save_total_limit=2,
                            output_dir=str(tmp_path / "uninterrupted")), PROMPTS, REFS)
    assert [r["reward_mean"] for r in read_log(whole.parent)] == [r["reward_mean"] for r in log]
    wa, wb = load_file(whole / "model.safetensors"), load_file(final / "model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) == 0.0

    # finished: a re-run returns at once without touching the log
    before = (out / "log.jsonl").read_bytes()
    assert train(spec, PROMPTS, REFS) == final
    assert (out / "log.jsonl").read_bytes() == before
    # the folder is bound to its run: another learning rate or other references are refused
    with pytest.raises(RuntimeError, match="another run"):
        train(tiny_spec(tmp_path, tiny_policy, steps=3, learning_rate=2e-5), PROMPTS, REFS)
    with pytest.raises(RuntimeError, match="another run"):
        train(spec, PROMPTS, {**REFS, "a": ["something else"]})

    # generation from the trained folder is reproducible per seed
    r1 = generate_responses(str(final), [p["prompt"] for p in PROMPTS[:2]], n=2, max_new_tokens=4, seed=1)
    r2 = generate_responses(str(final), [p["prompt"] for p in PROMPTS[:2]], n=2, max_new_tokens=4, seed=1)
    assert r1 == r2 and len(r1) == 2 and all(len(x) == 2 for x in r1)


def test_lora_run_and_evaluation(tmp_path, tiny_policy):
    spec = tiny_spec(tmp_path, tiny_policy, steps=1, use_lora=True, lora_r=4, lora_alpha=8)
    final = train(spec, PROMPTS[:2], REFS)
    assert (final / "adapter_config.json").exists()
    synth = {k: ["Thanks for sharing, that sounds hard."] for k in REFS}
    prompts, ids = [p["prompt"] for p in PROMPTS[2:]], [p["post_id"] for p in PROMPTS[2:]]
    kw = dict(n=2, max_new_tokens=4, seed=0, temperature=1.0, encoder="minilm-l6")
    base = evaluate_policy(tiny_policy, prompts, ids, {"real": REFS, "synthetic": synth}, **kw)
    res = evaluate_policy(str(final), prompts, ids, {"real": REFS, "synthetic": synth}, **kw,
                          shift_of=base["responses"], base_logprobs=base["self_logprob"])
    assert len(res["responses"]) == 2 and all(len(r) == 2 for r in res["responses"])
    for kind in ("real", "synthetic"):
        assert all(-1.0 <= x <= 1.0 for x in res["scores"][kind])
    assert len(res["logprob_shift"]) == 2 and all(x == x for x in res["logprob_shift"])
    # the same seed draws the same base replies again: deltas against the base are paired
    again = evaluate_policy(tiny_policy, prompts, ids, {"real": REFS}, **kw)
    assert again["responses"] == base["responses"] and again["scores"]["real"] == base["scores"]["real"]
    # the base policy has not moved from itself; log-probs only on the rows asked for
    same = evaluate_policy(tiny_policy, prompts, ids, {"real": REFS}, **kw, shift_of=base["responses"],
                           base_logprobs=base["self_logprob"], logprob_rows=[1])
    assert same["logprob_shift"][0] != same["logprob_shift"][0] and abs(same["logprob_shift"][1]) < 1e-4


def test_paired_specs_differ_only_in_targets(tmp_path):
    pair = paired_specs(TrainSpec(seed=3, steps=4), root=tmp_path)
    syn, real = pair["synthetic"], pair["real"]
    assert syn.target == "synthetic" and real.target == "real"
    diff = {k for k, v in syn.to_dict().items() if real.to_dict()[k] != v}
    assert diff == {"target", "output_dir"}
    assert syn.identity() != real.identity()
    for s in (syn, real):
        Path(s.output_dir).mkdir(parents=True)
        (Path(s.output_dir) / "run.json").write_text(json.dumps({"spec": s.to_dict(), "prompts_hash": "x"}))
    check_paired(syn.output_dir, real.output_dir)
    bad = dict(real.to_dict(), learning_rate=1e-3)
    (Path(real.output_dir) / "run.json").write_text(json.dumps({"spec": bad, "prompts_hash": "x"}))
    with pytest.raises(AssertionError, match="learning_rate"):
        check_paired(syn.output_dir, real.output_dir)


def test_spec_validation():
    with pytest.raises(ValueError, match="target"):
        TrainSpec(target="LLM replies")
    assert TrainSpec(target="persona").target == "persona"  # any style can be a target
    with pytest.raises(ValueError, match="num_generations"):
        TrainSpec(num_generations=1)
    with pytest.raises(ValueError, match="unknown"):
        TrainSpec.from_dict({"stepz": 3})
    assert TrainSpec.from_dict(TrainSpec(steps=7).to_dict()) == TrainSpec(steps=7)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_training_device_rule_is_the_one_of_simlib_hardware(monkeypatch, device):
    # train.py and Config.resolved_bf16 must agree on where GRPO trains
    from simlib.lm import hardware

    monkeypatch.setattr(hardware, "training_device", lambda: device)
    assert train_spec_mod.use_cpu(TrainSpec()) is (device == "cpu")
    assert train_spec_mod.use_cpu(TrainSpec(use_cpu=True)) is True  # an explicit spec wins
    assert train_spec_mod.use_cpu(TrainSpec(use_cpu=False)) is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_policy):
    spec = tiny_spec(tmp_path, tiny_policy, prompts_per_step=1)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    (tmp_path / "data.json").write_text(json.dumps({"prompts": PROMPTS[:2], "references": REFS}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "simlib.train", "--spec", str(tmp_path / "spec.json"), "--data", str(tmp_path / "data.json")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = Path(spec.output_dir)
    assert proc.stdout.strip().splitlines()[-1] == str(out / "final")
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2]
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # only the main process writes
    assert all(r["reward_mean"] is not None for r in log)
    # two processes x 1 prompt x 2 generations: TRL counted 4 completions' tokens per step
    assert json.loads((out / "done.json").read_text())["steps"] == 2


class CountSaves(TrainerCallback):
    def __init__(self):
        self.steps: list[int] = []

    def on_save(self, args, state, control, **kw):
        self.steps.append(state.global_step)


def test_no_checkpoint_after_the_last_step_unless_kept(tmp_path, tiny_policy):
    saves = CountSaves()
    train(tiny_spec(tmp_path, tiny_policy, steps=2, save_steps=1), PROMPTS, REFS, callbacks=[saves])
    assert saves.steps == [1]  # step 2's checkpoint would be deleted at once: final/ is written instead
    kept = CountSaves()
    out = tmp_path / "kept"
    train(tiny_spec(tmp_path, tiny_policy, steps=2, save_steps=1, keep_checkpoints=True, output_dir=str(out)),
          PROMPTS, REFS, callbacks=[kept])
    assert kept.steps == [1, 2] and last_checkpoint(out).name == "checkpoint-2"


def test_run_dir_is_keyed_by_what_the_run_depends_on(tmp_path):
    spec = TrainSpec(seed=1, steps=4, output_dir=str(tmp_path))
    a = run_dir(spec, "persona", PROMPTS, REFS)
    assert a.target == "persona" and Path(a.output_dir).parent == tmp_path
    assert Path(a.output_dir).name.startswith("persona-seed1-")
    assert run_dir(spec, "persona", PROMPTS, REFS) == a  # same inputs, same folder
    others = [run_dir(spec, "real", PROMPTS, REFS),
              run_dir(TrainSpec(seed=1, steps=4, learning_rate=2e-5, output_dir=str(tmp_path)), "persona", PROMPTS, REFS),
              run_dir(spec, "persona", PROMPTS[:3], REFS),
              run_dir(spec, "persona", PROMPTS, {**REFS, "a": ["other"]})]
    assert len({o.output_dir for o in others} | {a.output_dir}) == 5
    # the number of steps may grow without leaving the folder (a run can be extended)
    assert run_dir(TrainSpec(seed=1, steps=9, output_dir=str(tmp_path)), "persona", PROMPTS, REFS).output_dir == a.output_dir


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_bf16_rollouts_in_one_autocast_region_sample_what_trl_samples(tmp_path, tiny_policy, monkeypatch):
    """simlib's trainer wraps a whole bf16 generation in one autocast region (weights cast once, not
    once per token); its rollouts must be token for token those of TRL's own trainer."""
    import torch
    from trl import GRPOTrainer

    from simlib import train as train_mod

    def rollouts(trainer_cls) -> list[str]:
        monkeypatch.setattr(trainer_mod, "trainer_class", lambda: trainer_cls)
        # share_prompt off: the second step's rollouts must not differ by the order of gradient sums;
        # TRL's generation path (simlib's own rollouts are tested below)
        spec = tiny_spec(tmp_path, tiny_policy, steps=2, bf16=True, max_completion_length=6, share_prompt=False,
                         share_prompt_rollouts=False,
                         output_dir=str(tmp_path / trainer_cls.__name__), extra={"save_strategy": "no"})
        seen: list[str] = []

        def const(completions, post_id, **kw):
            seen.extend(str(c) for c in completions)
            return [float(len(str(c)) % 3) for c in completions]  # varied rewards: a real update

        trainer = train_mod.build_trainer(spec, run_mod.prompt_records(PROMPTS[:2]), const,
                                          train_spec_mod.grpo_config(spec, cpu=True))
        generate = trainer.model.generate

        def watched(*a, **kw):
            regions.append(torch.is_autocast_enabled("cpu"))
            return generate(*a, **kw)

        trainer.model.generate = watched
        trainer.train()
        return seen

    regions: list[bool] = []
    ours = rollouts(trainer_mod.trainer_class())
    assert regions == [True, True]  # one region spans each of the two steps' generation
    regions.clear()
    theirs = rollouts(GRPOTrainer)
    assert regions == [False, False]
    assert len(ours) == 8 and ours == theirs


def test_rollouts_read_each_prompt_once_and_are_seeded_per_step(tmp_path, tiny_policy, monkeypatch):
    """simlib's rollouts: one simlib.lm.sampling.sample call per step with each distinct prompt once
    and n = num_generations, no model.generate; the reward sees exactly the sampled tokens; the same
    spec draws the same completions, another seed others; top-k falls back to TRL's generate."""
    from simlib.lm import sampling
    from simlib import train as train_mod

    real = sampling.sample

    def run(name: str, **kw):
        calls, seen, generated = [], [], []

        def recorded(model, prompts, seeds, **skw):
            out = real(model, prompts, seeds, **skw)
            calls.append({"prompts": [list(p) for p in prompts], "seeds": list(seeds), "n": skw["n"], "out": out})
            return out

        monkeypatch.setattr(sampling, "sample", recorded)
        spec = tiny_spec(tmp_path, tiny_policy, steps=2, max_completion_length=6, output_dir=str(tmp_path / name),
                         extra={"save_strategy": "no", **kw.pop("extra", {})}, **kw)

        def reward(completions, post_id, **rkw):
            from simlib.measures.reward import completion_text

            seen.extend(completion_text(c) for c in completions)
            return [float(len(str(c)) % 3) for c in completions]

        trainer = train_mod.build_trainer(spec, run_mod.prompt_records(PROMPTS), reward,
                                          train_spec_mod.grpo_config(spec, cpu=True))
        generate = trainer.model.generate
        trainer.model.generate = lambda *a, **gkw: generated.append(1) or generate(*a, **gkw)
        trainer.train()
        return calls, seen, generated, trainer

    calls, seen, generated, trainer = run("a")
    assert len(calls) == 2 and not generated
    for c in calls:  # 2 prompts per step, each read once for its 2 completions
        assert len(c["prompts"]) == 2 and len({tuple(p) for p in c["prompts"]}) == 2 and c["n"] == 2
    tok = trainer.processing_class
    eos = set(trainer.eos_token_ids)
    texts = [tok.decode([t for t in ids if t not in eos], skip_special_tokens=True)
             for c in calls for per_prompt in c["out"] for ids in per_prompt]
    assert sorted(texts) == sorted(seen) and len(seen) == 8
    assert all(len(ids) <= 6 and all(t not in eos for t in ids[:-1]) for c in calls for p in c["out"] for ids in p)
    assert calls[0]["seeds"] != calls[1]["seeds"]  # a new stream each step
    again, seen_again, _, _ = run("b")
    assert [c["seeds"] for c in again] == [c["seeds"] for c in calls] and seen_again == seen
    other, _, _, _ = run("c", seed=1)
    assert other[0]["seeds"] != calls[0]["seeds"]
    fallback, _, generated, _ = run("d", extra={"top_k": 5})
    assert not fallback and len(generated) == 2


@pytest.mark.parametrize("padded", [False, True])
def test_shared_prompt_pass_equals_trls_pass(tiny_policy, padded):
    """Reading each prompt once (its cache repeated for its completions) gives TRL's per-token
    log-probs, entropies and gradients: one prompt x 4 completions, and two left-padded prompts x 2
    completions with right-padded completions."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from simlib.train.trainer import shared_prompt_logps

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy, dtype=torch.float32)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    P, C = 12, 5
    if padded:
        prompts = torch.randint(5, 1000, (2, P))
        pmask = torch.ones(2, P, dtype=torch.long)
        pmask[1, :4] = 0  # the shorter prompt is left-padded
        prompts[1, :4] = 2
        rows = [0, 1, 0, 1]
    else:
        prompts, pmask, rows = torch.randint(5, 1000, (1, P)), torch.ones(1, P, dtype=torch.long), [0, 0, 0, 0]
    comp = torch.randint(5, 1000, (4, C))
    cmask = torch.ones(4, C, dtype=torch.long)
    cmask[2, 3:] = 0  # a completion that ended early
    ids, mask = torch.cat([prompts[rows], comp], 1), torch.cat([pmask[rows], cmask], 1)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-C] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    ref_lp, ref_ent = out.log_probs[:, -C:], out.entropy[:, -C:]
    ref_g = grads((ref_lp * cmask).sum() + ref_ent.sum())
    lp, ent = shared_prompt_logps(model, ids, mask, C)
    assert lp.shape == ref_lp.shape == ent.shape
    assert torch.allclose(lp, ref_lp, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
    assert (lp[2, 3:] == 0).all() and (lp[2, :3] != 0).all()  # padding scored 0, as TRL scores it
    got_g = grads((lp * cmask).sum() + ent.sum())
    assert len(got_g) == len(ref_g) > 0
    for a, b in zip(got_g, ref_g):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert shared_prompt_logps(model, ids[:2] if padded else ids[:1], mask[:2] if padded else mask[:1], C) is None
