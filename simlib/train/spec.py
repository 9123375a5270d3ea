"""What defines one GRPO run (:class:`TrainSpec`), how a profile's Config becomes one
(:func:`from_config`), and how a spec becomes TRL's ``GRPOConfig`` (:func:`grpo_config`): the only
places GRPO settings are copied.

CPU settings (the ``ci`` profile)
---------------------------------
No vLLM, ``use_cpu`` when there is no CUDA device, fp32 weights,
optional bf16 autocast (``TrainSpec.bf16``; AVX-512-BF16 CPUs), ``report_to=[]``, ``logging_steps=1``,
``dataloader_num_workers=0``, no gradient checkpointing (TRL 1.16 turns it on by default; on CPU it
only costs time), progress bars off. ``prompts_per_step`` prompts x ``num_generations`` completions
are generated and scored per device and step (TRL's ``per_device_train_batch_size`` counts
completions, not prompts).
The rollouts and the training pass read each prompt once for its group of completions
(``TrainSpec.share_prompt_rollouts``: :func:`simlib.lm.sampling.sample` instead of TRL's
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
``spec.accelerate_config`` is set (:mod:`simlib.train.launch`; :func:`from_config` maps the profile's
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

import dataclasses
import importlib.util
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from simlib.cache import content_hash
from simlib.config import LOSS_TYPES
from simlib.lm.chat import THINKING_OFF

__all__ = ["TrainSpec", "TARGETS", "LOSS_TYPES", "paired_specs", "from_config", "use_cpu", "grpo_config"]

TARGETS = ("synthetic", "real")
# Fields that may change between an interrupted run and its continuation.
_RESUMABLE_FIELDS = ("steps", "save_steps", "save_total_limit", "keep_checkpoints", "output_dir")
# Fields added later, with the default at which they are left out of the spec's hashes.
_LATER_DEFAULTS = {"num_processes": 1, "accelerate_config": "", "warmup_ratio": 0.0, "scale_rewards": "group",
                   "reuse_prefill": True}
SCALE_REWARDS = ("group", "batch", "none")


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
    """Learning-rate schedule; constant keeps runs of different lengths comparable and extensible
    (with ``warmup_ratio`` > 0, constant becomes transformers' ``constant_with_warmup``)."""
    warmup_ratio: float = 0.0
    """Share of ``steps`` over which the learning rate rises linearly from 0 (rounded to whole steps)."""
    scale_rewards: str = "group"
    """How TRL scales the advantages (reward minus its group mean): divided by the std of the group,
    of the whole batch, or not at all (group, batch, none)."""
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
    reuse_prefill: bool = True
    """With ``share_prompt`` and simlib's rollouts: the rollouts read each prompt once with autograd on
    (:func:`simlib.train.trainer.prefill_prompt`), sample from that cache and hand it to the training
    pass, which then does not read the prompt again (same gradients; one prompt pass less per step).
    Needs one generation per optimizer step and prompts of one length in the step; elsewhere off."""
    share_prompt_rollouts: bool = True
    """Sample each prompt's ``num_generations`` rollouts together from one read of the prompt
    (:func:`simlib.lm.sampling.sample`, one seeded generator per prompt and step). False, or what that
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
    save_steps: int = 0
    """Checkpoint every this many steps (weights, optimizer, RNG: what resume needs); 0 = none
    mid-run, so an interrupted run starts again from step 0 (a CPU run is minutes long and each
    full-weight checkpoint is three times the model)."""
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
    (:func:`simlib.train.launch.launch_train`), each process taking ``prompts_per_step`` prompts."""
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
        for name in ("steps", "prompts_per_step", "max_completion_length", "save_total_limit"):
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
        if self.save_steps < 0:
            errors.append(f"save_steps must be >= 0 (0 = no checkpoint mid-run), got {self.save_steps}")
        if not 0 <= self.warmup_ratio < 1:
            errors.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            errors.append(f"scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}")
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


def use_cpu(spec: TrainSpec) -> bool:
    # the one device rule, shared with Config.resolved_bf16 (simlib.lm.hardware.training_device)
    from simlib.lm.hardware import training_device

    return spec.use_cpu if spec.use_cpu is not None else training_device() == "cpu"


def grpo_config(spec: TrainSpec, cpu: bool):
    from trl import GRPOConfig

    warmup = int(round(spec.warmup_ratio * spec.steps))
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
        lr_scheduler_type=("constant_with_warmup" if warmup and spec.lr_scheduler_type == "constant"
                           else spec.lr_scheduler_type),
        warmup_steps=warmup,
        scale_rewards=spec.scale_rewards,
        seed=spec.seed,
        data_seed=spec.seed,
        shuffle_dataset=True,
        use_cpu=cpu,
        bf16=spec.bf16,
        fp16=False,
        # TRL 1.16 defaults gradient checkpointing on; the transformers 5 name avoids the alias warning.
        activation_checkpointing=spec.gradient_checkpointing,
        model_init_kwargs={"dtype": spec.dtype},
        report_to=[],
        logging_steps=1,
        save_strategy="steps" if spec.save_steps else "no",
        save_steps=spec.save_steps or 500,
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


def from_config(cfg: Any, seed: int) -> TrainSpec:
    """The TrainSpec of one seed, from the profile's :class:`simlib.config.Config`: the one place GRPO
    settings are read from a profile (the runs of a seed differ only in their target).

    ``prompts_per_step`` counts the prompts of a whole step; with ``num_processes`` > 1 (a launch
    through accelerate, :mod:`simlib.train.launch`) each process takes an equal share. vLLM rollouts are
    asked for only where vllm is importable and a GPU trains; elsewhere a warning says they are off.
    """
    n = cfg.resolved_num_processes()
    if cfg.prompts_per_step % n:
        raise ValueError(f"prompts_per_step ({cfg.prompts_per_step}) is not a multiple of the {n} training "
                         "processes; set num_processes or prompts_per_step")
    vllm: dict = {}
    if cfg.vllm_mode != "off":
        if importlib.util.find_spec("vllm") is not None and cfg.resolved_device() == "cuda":
            vllm = dict(use_vllm=True, vllm_mode=cfg.vllm_mode,
                        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
        else:
            warnings.warn(f"vllm_mode={cfg.vllm_mode!r} but vllm is not importable or no GPU trains: "
                          "GRPO rolls out with simlib's sampler", stacklevel=2)
    return TrainSpec(policy=cfg.policy, seed=seed, steps=cfg.grpo_steps, num_generations=cfg.num_generations,
                     prompts_per_step=cfg.prompts_per_step // n, beta=cfg.beta, loss_type=cfg.loss_type,
                     learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio, scale_rewards=cfg.scale_rewards,
                     save_steps=cfg.grpo_save_steps, max_completion_length=cfg.max_completion_length,
                     temperature=cfg.temperature,  # one temperature for targets, rollouts and evaluation
                     use_lora=cfg.use_lora, bf16=cfg.resolved_bf16(), encoder=cfg.encoder,
                     reward_aggregate=cfg.reward_aggregate, output_dir=str(cfg.path("grpo", "x").parent),
                     # devices and scale: the defaults (float32, no checkpointing, auto device, 1 process)
                     # leave the spec, and so the run folders of CPU profiles, as they were
                     dtype=cfg.resolved_policy_dtype(), gradient_checkpointing=cfg.gradient_checkpointing,
                     use_cpu={"auto": None, "cpu": True, "cuda": False}[cfg.device],
                     num_processes=n, **vllm,
                     accelerate_config=cfg.accelerate_config if cfg.resolved_device() == "cuda" else "")
