"""GRPO training of a user simulator with a BERTScore reward (TRL ``GRPOTrainer``).

The study trains the same policy twice per seed, once with **synthetic** targets (LLM replies to each
training post) and once with **real** targets (the Reddit replies), and compares how much the
BERTScore reward improves. :func:`train` runs one such run; the two runs of a pair get the same
:class:`TrainSpec` except ``target`` and ``output_dir`` (see :func:`paired_specs`) and the same
``prompts_df``, so they see the same posts in the same order with the same seeds and
hyper-parameters and differ only in the references the reward compares against.
:func:`check_paired` verifies that afterwards from the two run folders.

Run folder (``spec.output_dir``)
--------------------------------
``run.json``
    The spec, its hash and the hashes of the prompts and references, written when the run starts.
    A folder is bound to one run: a different spec or data raises instead of mixing checkpoints.
``log.jsonl``
    One line per optimisation step: ``step, reward_mean, reward_std, loss, kl, completion_length,
    step_seconds, elapsed_seconds`` and all of TRL's metrics under ``metrics``. Steps that a killed run
    logged after its last checkpoint are dropped when it resumes, so every step appears once.
``checkpoint-<step>/``
    Every ``save_steps`` steps (model or LoRA adapter, optimizer, scheduler, RNG states), at most
    ``save_total_limit`` of them. An interrupted run resumes from the last one; the checkpoints are
    deleted when the run finishes unless ``keep_checkpoints``.
``final/``
    The trained model (full weights, or the LoRA adapter) and tokenizer; what :func:`train` returns.
``done.json``
    Written last, with the spec hash: calling :func:`train` again with the same spec and data returns
    ``final/`` at once.

CPU settings (the ``ci`` profile)
---------------------------------
No vLLM, ``use_cpu`` when there is no CUDA device, fp32 weights,
optional bf16 autocast (``TrainSpec.bf16``; AVX-512-BF16 CPUs), ``report_to=[]``, ``logging_steps=1``,
``dataloader_num_workers=0``, no gradient checkpointing (TRL 1.16 turns it on by default; on CPU it
only costs time), progress bars off. ``prompts_per_step`` prompts x ``num_generations`` completions
are generated and scored per device and step (TRL's ``per_device_train_batch_size`` counts
completions, not prompts).
The rollouts and the training pass read each prompt once for its group of completions
(``TrainSpec.share_prompt_rollouts``: :func:`simlib.sampling.sample` instead of TRL's
``model.generate``; ``TrainSpec.share_prompt``: :func:`shared_prompt_logps`), on every device:
TRL reads it once per completion.

Scale-out: several processes or GPUs
------------------------------------
The same entry point runs under ``accelerate launch``; each process generates and scores its share of
the completions and TRL gathers the rewards before normalising them within each prompt group::

    accelerate launch --num_processes 2 --cpu -m simlib.train --spec spec.json --data data.json

(gloo backend on CPU; ``data.json`` holds ``{"prompts": [{"post_id", "prompt"}], "references":
{post_id: [texts]}}``, ``spec.json`` the :class:`TrainSpec` fields.)

The ``paper`` profile (Qwen3-8B policy, ``microsoft/deberta-xlarge-mnli`` BERTScore, 500 steps,
8 generations, 256 completion tokens, lr 1e-6) trains on one node of GPUs with DeepSpeed ZeRO-3,
sharding parameters, gradients and optimizer states across GPUs, and generates with vLLM inside the
training processes::

    # spec.json: {"policy": "Qwen/Qwen3-8B", "dtype": "bfloat16", "bf16": true, "use_cpu": false,
    #             "use_vllm": true, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
    #             "gradient_checkpointing": true, "encoder": "microsoft/deberta-xlarge-mnli",
    #             "steps": 500, "num_generations": 8, "max_completion_length": 256,
    #             "learning_rate": 1e-6, "prompts_per_step": 2, ...}
    accelerate launch --config_file configs/deepspeed_zero3.yaml \\
        --num_processes 8 -m simlib.train --spec spec.json --data data.json

:func:`train` builds and runs that command itself when ``spec.num_processes`` > 1 or
``spec.accelerate_config`` is set (:mod:`simlib.launch`; ``steps.train_spec`` maps the profile's
``num_processes``, ``accelerate_config``, ``policy_dtype``, ``gradient_checkpointing`` and ``vllm_mode``).
``configs/deepspeed_zero3.yaml`` holds TRL's ZeRO-3 settings (``distributed_type: DEEPSPEED``,
``zero_stage: 3``, ``zero3_init_flag: true``, ``mixed_precision: bf16``); DeepSpeed and vLLM must be
installed on the GPU machine (they are not dependencies of this package). With ``vllm_mode="colocate"`` (a
``GRPOConfig`` field of TRL 1.16, with ``use_vllm``, ``vllm_gpu_memory_utilization`` and
``vllm_tensor_parallel_size``) each process runs a vLLM engine that shares its GPU with training and
receives the new weights after every optimizer step (ZeRO-3 gathers them, see
``ds3_gather_for_generation``); ``vllm_mode="server"`` instead talks to a separate ``trl vllm-serve``
process on dedicated GPUs. The reward encoder runs on each process's GPU. Anything else of
``GRPOConfig`` can be set through ``TrainSpec.extra``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from simlib import models  # also sets the offline environment variables
from simlib.cache import atomic_write_json, atomic_write_text, content_hash
from simlib.chat import THINKING_OFF

__all__ = [
    "TrainSpec", "train", "build_trainer", "paired_specs", "run_dir", "check_paired", "read_log", "last_checkpoint",
    "generate_responses", "load_policy", "main",
]

TARGETS = ("synthetic", "real")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
# Fields that may change between an interrupted run and its continuation.
_RESUMABLE_FIELDS = ("steps", "save_steps", "save_total_limit", "keep_checkpoints", "output_dir")
# Fields added later, with the default at which they are left out of the spec's hashes.
_LATER_DEFAULTS = {"num_processes": 1, "accelerate_config": ""}


@dataclass
class TrainSpec:
    """Everything that defines one GRPO run (the data aside).

    Two runs of a synthetic/real pair must differ only in ``target`` and ``output_dir``.
    """

    policy: str = "smollm2-135m"
    """Policy to train: a simlib model name, a local folder or a hub id (``Qwen/Qwen3-8B``)."""
    target: str = "synthetic"
    """Which references the reward uses: ``"synthetic"`` (LLM replies) or ``"real"`` (Reddit replies),
    the study's pair, or another label such as a prompt style (``"persona"``). Only a label here: the
    references themselves are the ``references`` argument of :func:`train`."""
    seed: int = 0
    """Seed of weights init (LoRA), data order and sampling."""
    steps: int = 10
    """Optimisation steps (``max_steps``)."""
    num_generations: int = 4
    """Completions per prompt (the GRPO group)."""
    prompts_per_step: int = 2
    """Prompts per device and step; ``prompts_per_step * num_generations`` completions per device."""
    beta: float = 0.0
    """KL coefficient; 0 loads no reference model."""
    loss_type: str = "dapo"
    """TRL loss aggregation: grpo, dapo, dr_grpo, bnpo, cispo, sapo."""
    learning_rate: float = 1e-5
    """AdamW learning rate."""
    lr_scheduler_type: str = "constant"
    """Learning-rate schedule; constant keeps runs of different lengths comparable and extensible."""
    max_completion_length: int = 48
    """Maximum new tokens per completion."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    use_lora: bool = False
    """Train a LoRA adapter instead of all weights."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """LoRA dropout (0 keeps rollouts and training forward passes identical)."""
    lora_target_modules: Any = "all-linear"
    """Modules receiving adapters (PEFT syntax)."""
    bf16: bool = False
    """bf16 autocast (mixed precision); weights and optimizer stay in ``dtype``."""
    dtype: str = "float32"
    """Weight dtype of the policy: float32 (CPU) or bfloat16 (GPU, paper)."""
    use_cpu: bool | None = None
    """Force the CPU; ``None`` = CPU exactly when no CUDA device is visible."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (memory for time; useful for 8B models)."""
    share_prompt: bool = True
    """Read each prompt once in the training forward and backward passes, for all its completions
    (:func:`shared_prompt_logps`); False runs TRL's pass over prompt + completion for every one."""
    share_prompt_rollouts: bool = True
    """Sample each prompt's ``num_generations`` rollouts together from one read of the prompt
    (:func:`simlib.sampling.sample`, one seeded generator per prompt and step). False, or what that
    sampler does not implement (top-k, min-p, repetition penalty, ``generation_kwargs``, vLLM,
    DeepSpeed/FSDP, activation checkpointing, images), takes TRL's ``model.generate``, which reads
    the prompt once per completion and draws from the global random stream."""
    encoder: str = "minilm-l6"
    """BERTScore encoder of the reward (``microsoft/deberta-xlarge-mnli`` in the paper profile)."""
    reward_aggregate: str = "max"
    """How the BERTScores against a post's references combine: max or mean."""
    max_references: int = 0
    """Use at most this many references per post (the first ones); 0 = all."""
    output_dir: str = "runs/grpo"
    """Run folder (checkpoints, log.jsonl, final/, done.json)."""
    save_steps: int = 5
    """Checkpoint every this many steps."""
    save_total_limit: int = 2
    """Keep at most this many checkpoints."""
    keep_checkpoints: bool = False
    """Keep the checkpoints after the run has finished (they are deleted otherwise); needed to
    extend a finished run to more ``steps`` (without them it restarts from step 0)."""
    use_vllm: bool = False
    """Generate with vLLM (GPU only; see the module docstring)."""
    vllm_mode: str = "colocate"
    """vLLM mode: colocate (inside the training processes) or server."""
    vllm_gpu_memory_utilization: float = 0.3
    """GPU memory share of a colocated vLLM engine."""
    num_processes: int = 1
    """Training processes; more than 1 (or an ``accelerate_config``) makes :func:`train` run itself under ``accelerate launch``
    (:func:`simlib.launch.launch_train`), each process taking ``prompts_per_step`` prompts."""
    accelerate_config: str = ""
    """accelerate config file of a GPU launch (DeepSpeed ZeRO-3: ``configs/deepspeed_zero3.yaml``);
    '' = plain data parallel. Set, :func:`train` launches even one process."""
    extra: dict = field(default_factory=dict)
    """Further ``GRPOConfig`` keyword arguments (they override the ones derived above)."""

    def __post_init__(self) -> None:
        errors = []
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(self.target)):
            errors.append(f"target must be a lower-case label such as {TARGETS}, got {self.target!r}")
        if self.loss_type not in LOSS_TYPES:
            errors.append(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.num_generations < 2:
            errors.append(f"num_generations must be >= 2 (GRPO needs a group), got {self.num_generations}")
        for name in ("steps", "prompts_per_step", "max_completion_length", "save_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reward_aggregate not in ("max", "mean"):
            errors.append(f"reward_aggregate must be max or mean, got {self.reward_aggregate!r}")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            errors.append(f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}")
        if self.vllm_mode not in ("colocate", "server"):
            errors.append(f"vllm_mode must be colocate or server, got {self.vllm_mode!r}")
        if self.num_processes < 1:
            errors.append(f"num_processes must be >= 1, got {self.num_processes}")
        if self.max_references < 0 or self.beta < 0 or not 0 < self.learning_rate < 1:
            errors.append("max_references and beta must be >= 0 and learning_rate in (0, 1)")
        if errors:
            raise ValueError("invalid TrainSpec:\n  - " + "\n  - ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainSpec fields {unknown}; valid: {sorted(names)}")
        return cls(**dict(d))

    def _hashed(self) -> dict[str, Any]:
        # Fields added after runs existed enter hashes only when set, so older run folders keep their keys.
        return {k: v for k, v in self.to_dict().items() if not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])}

    def hash(self) -> str:
        """Hash of everything but the output folder."""
        return content_hash({k: v for k, v in self._hashed().items() if k != "output_dir"})

    def identity(self) -> str:
        """Hash of the fields a resumed run must share with the interrupted one."""
        return content_hash({k: v for k, v in self._hashed().items() if k not in _RESUMABLE_FIELDS})


def paired_specs(spec: TrainSpec, root: str | os.PathLike | None = None) -> dict[str, TrainSpec]:
    """The synthetic and the real run of one seed: ``spec`` with only ``target``/``output_dir`` changed.

    Output folders are ``<root>/<target>-seed<seed>`` (``root`` defaults to ``spec.output_dir``).
    """
    root = Path(root if root is not None else spec.output_dir)
    return {t: dataclasses.replace(spec, target=t, output_dir=str(root / f"{t}-seed{spec.seed}"))
            for t in TARGETS}


def run_dir(spec: TrainSpec, target: str, prompts_df: Any, references: Mapping[Any, Sequence[str]],
            root: str | os.PathLike | None = None) -> TrainSpec:
    """``spec`` for ``target`` in its own folder ``<root>/<target>-seed<seed>-<key>``.

    ``key`` hashes what the run depends on (the spec less its resumable fields, the prompts and the
    target's references), so two calls with the same inputs share a folder (and its finished run or
    checkpoints), and any other setting or data gets a folder of its own.
    """
    root = Path(root if root is not None else spec.output_dir)
    spec = dataclasses.replace(spec, target=target)
    records = _records(prompts_df)
    refs = _select_references(references, [r["post_id"] for r in records], spec.max_references)
    key = content_hash({"identity": spec.identity(), "prompts": records, "references": refs})[:12]
    return dataclasses.replace(spec, output_dir=str(root / f"{target}-seed{spec.seed}-{key}"))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def _records(prompts_df: Any) -> list[dict[str, Any]]:
    """``post_id`` + ``prompt`` (list of chat messages) records from a DataFrame or dicts."""
    rows = prompts_df.to_dict("records") if hasattr(prompts_df, "to_dict") else list(prompts_df)
    out = []
    for r in rows:
        if "post_id" not in r or "prompt" not in r:
            raise ValueError("prompts need the columns post_id and prompt (a list of chat messages)")
        prompt = r["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in list(prompt)]
        out.append({"post_id": str(r["post_id"]), "prompt": prompt})
    if not out:
        raise ValueError("no prompts")
    ids = [r["post_id"] for r in out]
    if len(set(ids)) != len(ids):
        raise ValueError("post_id values must be unique")
    return out


def _select_references(references: Mapping[Any, Sequence[str]], post_ids: Iterable[str],
                       max_references: int) -> dict[str, list[str]]:
    refs = {str(k): [str(t) for t in v] for k, v in references.items()}
    missing = [p for p in post_ids if not refs.get(p)]
    if missing:
        raise ValueError(f"no references for {len(missing)} training post(s), e.g. {missing[:3]}")
    keep = list(post_ids)
    return {p: (refs[p][:max_references] if max_references else refs[p]) for p in keep}


# ---------------------------------------------------------------------------------------------
# Logging callback
# ---------------------------------------------------------------------------------------------
def read_log(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-step records of a run's ``log.jsonl`` (one per step, the latest if repeated)."""
    path = Path(output_dir) / "log.jsonl"
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn last line of a killed run
        if isinstance(rec, dict) and "step" in rec:
            by_step[int(rec["step"])] = rec
    return [by_step[k] for k in sorted(by_step)]


def _truncate_log(output_dir: Path, last_step: int) -> float:
    """Keep the log's records up to ``last_step`` (once each); return their elapsed seconds."""
    keep = [r for r in read_log(output_dir) if r["step"] <= last_step]
    path = output_dir / "log.jsonl"
    if path.exists() or keep:
        atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in keep))
    return float(keep[-1].get("elapsed_seconds", 0.0)) if keep else 0.0


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _log_callback(path: Path, spec: TrainSpec, elapsed_before: float):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Appends one record per optimisation step to ``log.jsonl`` (main process only)."""

        def __init__(self) -> None:
            self.t_session = time.perf_counter()
            self.t_step = self.t_session
            self.logged = {r["step"] for r in read_log(path.parent)}

        def on_step_begin(self, args, state, control, **kw):
            self.t_step = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if not state.is_world_process_zero or "reward" not in logs:
                return
            step = int(state.global_step)
            if step in self.logged:
                return
            now = time.perf_counter()
            rec = {
                "step": step,
                "target": spec.target,
                "seed": spec.seed,
                "reward_mean": _num(logs.get("reward")),
                "reward_std": _num(logs.get("reward_std")),
                "loss": _num(logs.get("loss")),
                "kl": _num(logs.get("kl")),
                "completion_length": _num(logs.get("completions/mean_length")),
                "learning_rate": _num(logs.get("learning_rate")),
                "step_seconds": round(now - self.t_step, 4),
                "elapsed_seconds": round(elapsed_before + now - self.t_session, 4),
                "time": time.time(),
                "metrics": {k: _num(v) for k, v in logs.items()},
            }
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.logged.add(step)

    return JsonlLog()


def _no_final_checkpoint():
    """Skip the checkpoint transformers writes after the last step (weights, optimizer, RNG:
    three times the model) when it would be deleted a moment later: ``final/`` is saved instead."""
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_save = False

    return NoFinalCheckpoint()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder, if any."""
    d = Path(output_dir)
    if not d.is_dir():
        return None
    ckpts = []
    for c in d.glob("checkpoint-*"):
        if c.is_dir() and c.name.split("-")[-1].isdigit() and (c / "trainer_state.json").exists():
            ckpts.append((int(c.name.split("-")[-1]), c))
    return max(ckpts)[1] if ckpts else None


def _use_cpu(spec: TrainSpec) -> bool:
    # the one device rule, shared with Config.resolved_bf16 (simlib.hardware.training_device)
    from simlib.hardware import training_device

    return spec.use_cpu if spec.use_cpu is not None else training_device() == "cpu"


def _grpo_config(spec: TrainSpec, use_cpu: bool):
    from trl import GRPOConfig

    kwargs: dict[str, Any] = dict(
        output_dir=spec.output_dir,
        max_steps=spec.steps,
        per_device_train_batch_size=spec.prompts_per_step * spec.num_generations,
        gradient_accumulation_steps=1,
        num_generations=spec.num_generations,
        max_completion_length=spec.max_completion_length,
        temperature=spec.temperature,
        top_p=spec.top_p,
        beta=spec.beta,
        loss_type=spec.loss_type,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type,
        seed=spec.seed,
        data_seed=spec.seed,
        shuffle_dataset=True,
        use_cpu=use_cpu,
        bf16=spec.bf16,
        fp16=False,
        # TRL 1.16 defaults gradient checkpointing on; the transformers 5 name avoids the alias warning.
        activation_checkpointing=spec.gradient_checkpointing,
        model_init_kwargs={"dtype": spec.dtype},
        report_to=[],
        logging_steps=1,
        save_strategy="steps",
        save_steps=spec.save_steps,
        save_total_limit=spec.save_total_limit,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        log_completions=False,
        disable_tqdm=True,
        log_level="warning",
        use_vllm=spec.use_vllm,
        # Thinking off for templates with the switch (Qwen3): rollouts answer, they do not reason first.
        chat_template_kwargs=dict(THINKING_OFF),
    )
    if spec.use_vllm:
        kwargs.update(vllm_mode=spec.vllm_mode, vllm_gpu_memory_utilization=spec.vllm_gpu_memory_utilization)
    kwargs.update(spec.extra)
    return GRPOConfig(**kwargs)


def shared_prompt_logps(model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int,
                        autocast: Any = contextlib.nullcontext) -> tuple[Any, Any] | None:
    """Per-token log-probs and entropies of the completions, each distinct prompt read once.

    A GRPO batch holds ``num_generations`` completions of each prompt, and TRL's training pass runs
    the model (forward and backward) over prompt + completion for every one of them; with a prompt
    of a few hundred tokens and completions of a few dozen, that is mostly the same prompt again.
    Here the rows with the same prompt (ids and mask) read it once, its KV cache is repeated for
    them, and only the completions run on top of it; gradients flow back through the repeated
    cache into the one prompt pass. Positions are those of TRL's pass (0..L-1, left padding
    included) and the log-probs come from TRL's fused head (temperature, soft-capping), so the
    result is TRL's up to the order of floating-point sums (``tests/test_train.py``). Returns
    ``(logps, entropies)``, each ``(batch, logits_to_keep)``, or None when no two rows share a
    prompt or the prompt is a single token (then nothing is saved).
    """
    import torch

    from simlib.logprob import _out_cache

    n, length = input_ids.shape
    p = length - logits_to_keep
    if p < 2:
        return None
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(map(tuple, input_ids[:, :p].tolist()), map(tuple, attention_mask[:, :p].tolist()))):
        groups.setdefault(key, []).append(i)
    if len(groups) == n:
        return None
    pos = torch.arange(length, device=input_ids.device).unsqueeze(0)
    logps, entropies, order = [], [], []
    for rows in groups.values():
        first, idx = rows[0], torch.tensor(rows, device=input_ids.device)
        with autocast():
            out = model(input_ids=input_ids[first:first + 1, :p - 1], attention_mask=attention_mask[first:first + 1, :p - 1],
                        position_ids=pos[:, :p - 1], use_cache=True, logits_to_keep=1)
        cache = _out_cache(out)
        cache.batch_repeat_interleave(len(rows))
        # the last prompt token is fed again with the completion: its output predicts the first token
        tail, mask = input_ids[idx, p - 1:], attention_mask[idx]
        labels = tail.masked_fill(mask[:, p - 1:] == 0, -100)
        labels[:, 0] = -100
        with autocast():
            res = model(input_ids=tail, attention_mask=mask, position_ids=pos[:, p - 1:].expand(len(rows), -1),
                        cache=cache, labels=labels, fused_lm_head=True)
        logps.append(res.log_probs)
        entropies.append(res.entropy)
        order += rows
    back = torch.argsort(torch.tensor(order, device=input_ids.device))
    ent = torch.cat(entropies)[back] if all(e is not None for e in entropies) else None
    return torch.cat(logps)[back], ent


def _checkpointing(model: Any) -> bool:
    """Whether the model recomputes activations (transformers 5 renamed the flag)."""
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def _trainer_class():
    """``GRPOTrainer`` whose data order is a function of (seed, epoch), so resuming is exact, and
    whose bf16 rollouts cast the weights once per generation instead of once per token.

    TRL 1.16's ``RepeatSampler`` draws each epoch's permutation from one generator seeded once, and
    has no ``set_epoch``; a run resumed after its first epoch would restart that generator and replay
    epoch 0's order. Here the trainer's ``set_epoch`` calls reseed it per epoch (epoch 0 keeps TRL's
    order), which makes a resumed run identical to an uninterrupted one.
    """
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    class EpochSeededRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed(int(self.seed or 0) + 1_000_003 * int(epoch))

    class SimlibGRPOTrainer(GRPOTrainer):
        _simlib_share_prompt = True  # build_trainer sets it from TrainSpec.share_prompt
        _simlib_share_rollouts = True  # and this from TrainSpec.share_prompt_rollouts
        _simlib_calls = (-1, 0)  # (step, generation calls in it) of the last rollout

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            # accelerate gives every forward its own autocast region, and autocast forgets its cast
            # weights when a region ends: each decoding step cast all weights to bf16 again. One region
            # around the whole generation casts them once (same casts, same tokens; by hand, 8 replies of 24
            # tokens from SmolLM2: 3.0 s -> 1.9 s).
            import torch

            region = (torch.autocast(device_type=self.accelerator.device.type, dtype=torch.bfloat16)
                      if self.args.bf16 and not self.use_vllm else contextlib.nullcontext())
            with region:
                completions = self._simlib_rollouts(prompt_ids, images, multimodal_fields)
                if completions is not None:
                    return completions, None
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     *args, **kwargs)

        def _simlib_rollouts(self, prompt_ids, images, multimodal_fields) -> list[list[int]] | None:
            """Every row's completion (token ids, EOS included as TRL keeps it), each distinct prompt
            read once for its group (simlib.sampling); None where TRL's generation is needed."""
            a, model = self.args, self.accelerator.unwrap_model(self.model)
            if not (self._simlib_share_rollouts and not self.use_vllm and not self.use_transformers_continuous_batching
                    and not self.top_k and self.min_p is None and self.repetition_penalty == 1.0
                    and not a.generation_kwargs and not self.is_deepspeed_enabled and not self.is_fsdp_enabled
                    and not _checkpointing(model)
                    and not multimodal_fields and not (images is not None and any(images))):
                return None
            groups: dict[tuple, list[int]] = {}
            for i, ids in enumerate(prompt_ids):
                groups.setdefault(tuple(ids), []).append(i)
            sizes = {len(rows) for rows in groups.values()}
            if len(sizes) != 1:
                return None
            from simlib.cache import content_hash
            from simlib.sampling import sample

            # One seed per (run seed, step, process, call of the step, prompt): a resumed run draws what an
            # uninterrupted one would, and no two prompts, steps or processes share a stream.
            step = int(self.state.global_step)
            calls = self._simlib_calls = (step, self._simlib_calls[1] + 1 if self._simlib_calls[0] == step else 0)
            key = [int(a.seed), step, int(self.accelerator.process_index), calls[1]]
            seeds = [int(content_hash([*key, g])[:15], 16) for g in range(len(groups))]
            drawn = sample(model, [list(k) for k in groups], seeds, n=sizes.pop(),
                           max_new_tokens=self.max_completion_length, temperature=self.temperature,
                           top_p=self.top_p, eos_token_ids=self.eos_token_ids,
                           pad_token_id=self._tokenizer.pad_token_id or 0, keep_eos=True)
            out: list[list[int] | None] = [None] * len(prompt_ids)
            for rows, samples in zip(groups.values(), drawn):
                for r, ids in zip(rows, samples):
                    out[r] = ids
            return out

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False, **extra):
            # images, MoE losses and recomputed activations take TRL's path
            if (self._simlib_share_prompt and not compute_aux_loss and all(v is None for v in extra.values())
                    and not _checkpointing(model)):
                res = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, self.accelerator.autocast)
                if res is not None and (res[1] is not None or not compute_entropy):
                    return res[0], (res[1] if compute_entropy else None), None
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, batch_size,
                                                              compute_entropy, compute_aux_loss, **extra)

        def _get_train_sampler(self, dataset=None):
            sampler = super()._get_train_sampler(dataset)
            if type(sampler) is RepeatSampler:
                sampler.__class__ = EpochSeededRepeatSampler
            return sampler

    return SimlibGRPOTrainer


def build_trainer(spec: TrainSpec, records: list[dict[str, Any]], reward: Any, args: Any = None,
                  callbacks: Sequence[Any] = ()):
    """The ``GRPOTrainer`` of a run (policy, LoRA, reward, dataset), without resuming or saving."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    if args is None:
        args = _grpo_config(spec, _use_cpu(spec))
    peft_config = None
    if spec.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                                 target_modules=spec.lora_target_modules, task_type="CAUSAL_LM")
    trainer = _trainer_class()(
        model=models.resolve(spec.policy),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(records),
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # log.jsonl is the record; no dicts printed per step
    trainer._simlib_share_prompt = spec.share_prompt
    trainer._simlib_share_rollouts = spec.share_prompt_rollouts
    return trainer


def train(spec: TrainSpec, prompts_df: Any, references: Mapping[Any, Sequence[str]],
          callbacks: Sequence[Any] = ()) -> Path:
    """Train one GRPO run; return the folder of the trained model (or LoRA adapter).

    ``prompts_df``: rows with ``post_id`` and ``prompt`` (a list of chat messages; a plain string
    becomes one user message). ``references``: ``post_id -> target replies`` (synthetic or real,
    as ``spec.target`` says); only the training posts' references are used. A finished run with the
    same spec and data is not redone; an interrupted one resumes from its last checkpoint.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects.
    """

    out = Path(spec.output_dir)
    final = out / "final"
    records = _records(prompts_df)
    post_ids = [r["post_id"] for r in records]
    refs = _select_references(references, post_ids, spec.max_references)
    info = {
        "spec": spec.to_dict(),
        "spec_hash": spec.hash(),
        "identity": spec.identity(),
        "prompts_hash": content_hash(records),
        "references_hash": content_hash(refs),
        "n_prompts": len(records),
        "n_references": sum(len(v) for v in refs.values()),
    }
    done = out / "done.json"
    if done.exists():
        prev = json.loads(done.read_text())
        same = all(prev.get(k) == info[k] for k in ("spec_hash", "prompts_hash", "references_hash"))
        if same and final.exists():
            return final
    run_json = out / "run.json"
    if run_json.exists():
        prev = json.loads(run_json.read_text())
        for k in ("identity", "prompts_hash", "references_hash"):
            if prev.get(k) != info[k]:
                raise RuntimeError(
                    f"{out} holds another run ({k} differs: {prev.get(k)} != {info[k]}); "
                    "use another output_dir or delete the folder")

    from simlib import launch

    if (spec.num_processes > 1 or spec.accelerate_config) and not launch.inside_launch():
        # This process is not one of the launched ones: run the same entry point under
        # `accelerate launch` (one process per GPU, or gloo on the CPU) and wait for it.
        if callbacks:
            raise ValueError("callbacks cannot reach the processes of a launched run (num_processes > 1)")
        return launch.launch_train(spec, records, refs)

    from accelerate import PartialState

    use_cpu = _use_cpu(spec)
    args = _grpo_config(spec, use_cpu)
    state = PartialState()
    ckpt = last_checkpoint(out)
    elapsed_before = 0.0
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        done.unlink(missing_ok=True)
        atomic_write_json(run_json, {**info, "started": time.time(), "resumed_from": str(ckpt) if ckpt else None})
        elapsed_before = _truncate_log(out, _checkpoint_step(ckpt))
    state.wait_for_everyone()

    from simlib.reward import BertScoreReward

    reward = BertScoreReward(spec.encoder, refs, aggregate=spec.reward_aggregate,
                             device="cpu" if use_cpu else str(state.device))
    with warnings.catch_warnings():
        # TRL 1.16 calls transformers' deprecated `is_gradient_checkpointing` at every step
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        own = [_log_callback(out / "log.jsonl", spec, elapsed_before)]
        if not spec.keep_checkpoints:
            own.append(_no_final_checkpoint())
        trainer = build_trainer(spec, records, reward, args, callbacks=[*own, *callbacks])
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        trainer.save_model(str(final))  # also writes the tokenizer (processing_class)
    steps_done = int(trainer.state.global_step)
    del trainer, reward
    _release_memory()
    state.wait_for_everyone()
    if state.is_main_process:
        if not spec.keep_checkpoints:
            for c in out.glob("checkpoint-*"):
                shutil.rmtree(c, ignore_errors=True)
        atomic_write_json(done, {**info, "finished": time.time(), "final": str(final), "steps": steps_done})
    state.wait_for_everyone()
    return final


def _release_memory() -> None:
    """Free a finished run's policy, optimizer and encoder before the next run of the same process.

    Runs of a chapter follow each other in one kernel; without this the trainer's reference cycles
    and glibc's arenas keep each run's memory until much later, and peaks add up.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _checkpoint_step(ckpt: Path | None) -> int:
    return int(ckpt.name.split("-")[-1]) if ckpt else 0


def check_paired(dir_a: str | os.PathLike, dir_b: str | os.PathLike) -> None:
    """Raise unless two run folders differ only in their targets (same posts, spec otherwise)."""
    a, b = (json.loads((Path(d) / "run.json").read_text()) for d in (dir_a, dir_b))
    if a["prompts_hash"] != b["prompts_hash"]:
        raise AssertionError("the two runs trained on different prompts")
    diff = sorted(k for k in a["spec"] if k not in ("target", "output_dir") and a["spec"][k] != b["spec"].get(k))
    if diff:
        raise AssertionError(f"the two runs differ in more than their targets: {diff}")


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def load_policy(model_dir_or_name: str, dtype: str = "float32"):
    """``(tokenizer, model)`` of a simlib name, a folder or a :func:`train` result (a LoRA adapter is
    merged), in eval mode, ready to sample."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simlib.hardware import pick_device, pick_dtype

    device = pick_device()  # the one device rule (simlib.hardware), as for every model load
    dtype = pick_dtype(dtype, device)
    path = Path(model_dir_or_name)
    if path.is_dir() and (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
        model = model.merge_and_unload()
        tok_src = path if (path / "tokenizer_config.json").exists() else model.config._name_or_path
    else:
        src = str(path) if path.is_dir() else models.resolve(model_dir_or_name)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype))
        tok_src = src
    tok = AutoTokenizer.from_pretrained(str(tok_src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device != "cpu":
        model = model.to(device)
    model.eval()
    return tok, model


def generate_responses(model_dir_or_name: str, prompts: Sequence[Any], n: int = 4,
                       max_new_tokens: int = 48, seed: int = 0, *, temperature: float = 1.0,
                       top_p: float = 1.0, dtype: str = "float32", model: Any = None,
                       tokenizer: Any = None, max_rows: int = 96) -> list[list[str]]:
    """``n`` sampled replies to each prompt (chat messages, or a string = one user message).

    ``model_dir_or_name``: a simlib name, a model folder, a :func:`train` result (full model or LoRA
    adapter, merged for generation) or a hub id. Prompts are decoded together, up to ``max_rows``
    sequences at a time (:func:`simlib.sampling.sample`); prompt ``i`` draws from a generator
    seeded ``seed + i``, so its replies do not depend on the other prompts. Replies are decoded
    without special tokens. A loaded ``model``/``tokenizer`` pair may be passed to skip loading.
    """
    from simlib.chat import render
    from simlib.sampling import batches, eos_ids, sample

    if model is None or tokenizer is None:
        tokenizer, model = load_policy(model_dir_or_name, dtype)
    ids = []
    for prompt in prompts:
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        enc = render(tokenizer, msgs, tokenize=True, return_dict=True)  # thinking off (simlib.chat)
        ids.append(list(enc["input_ids"]))
    results: list[list[str]] = [[] for _ in ids]
    for group in batches([len(i) for i in ids], n, max_rows):
        toks = sample(model, [ids[i] for i in group], [seed + i for i in group], n=n,
                      max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      eos_token_ids=eos_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id)
        for i, rows in zip(group, toks):
            results[i] = [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]
    return results


# ---------------------------------------------------------------------------------------------
# CLI (works under `accelerate launch`)
# ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simlib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="JSON file with TrainSpec fields")
    parser.add_argument("--data", required=True,
                        help='JSON file {"prompts": [{"post_id", "prompt"}], "references": {post_id: [texts]}}')
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field (JSON value, e.g. steps=2)")
    ns = parser.parse_args(argv)
    spec_d = json.loads(Path(ns.spec).read_text())
    for pair in ns.set:
        k, _, v = pair.partition("=")
        try:
            spec_d[k] = json.loads(v)
        except json.JSONDecodeError:
            spec_d[k] = v
    spec = TrainSpec.from_dict(spec_d)
    data = json.loads(Path(ns.data).read_text())
    final = train(spec, data["prompts"], data["references"])
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
