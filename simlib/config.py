"""One validated configuration object per run.

A profile (``params/<name>.yaml``) names values for some of the fields below; everything else
keeps its default. ``--set key=value`` on the command line, or ``-p key value`` through papermill,
overrides single fields. Every field is documented here, validated in ``__post_init__`` before any
expensive work starts, and unknown names fail with the list of valid ones (as TRL's configs do).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_origin

import yaml

from simlib import inputs

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"
# TRL 1.16's GRPO loss types; TrainSpec validates against the same list.
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
# The local servers simlib.generate.server can start (its BACKENDS).
LOCAL_SERVERS = ("llama_server",)


class ConfigError(ValueError):
    """A profile, a parameter name or a parameter value is invalid."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    """All tunables of a run; see ``params/*.yaml`` for the three profiles."""

    # --- run ---------------------------------------------------------------------------
    profile: str = _f("ci", "Name of the profile this config came from (smoke, ci, paper).")
    seed: int = _f(0, "Base random seed; every sampled step derives its seed from it.")
    work_dir: str = _f("runs", "Folder (relative to the repo root unless absolute) for caches and artefacts.")
    # --- data --------------------------------------------------------------------------
    subreddits: list = _f(["aitah"], "Subreddits to read: crawler folders aitah, askreddit; with dumps, any "
                                      "subreddit the dumps hold (case-insensitive: askreddit = r/AskReddit).")
    data_dir: str = _f("", "Data directory holding reddit/raw/...; empty = $SIMLIB_DATA_DIR, else download.")
    dumps: list = _f([], "Optional Pushshift/Arctic-Shift dump pairs [submissions, comments] (NDJSON or .zst).")
    n_posts: int = _f(0, "Threads read per subreddit (0 = all), crawl or dumps: a fixed hash-chosen subset spread "
                         "over the period, chosen before filtering (simlib.data.select).")
    min_chars: int = _f(1, "Drop responses shorter than this many characters (bare verdicts like NTA are real answers).")
    min_responses: int = _f(10, "Drop posts with fewer usable responses than this.")
    max_responses: int = _f(50, "Keep at most this many responses per post (earliest first).")
    max_post_chars: int = _f(2000, "Truncate post bodies in prompts to this many characters (word boundary).")
    train_frac: float = _f(0.6, "Fraction of posts (earliest) in the training split.")
    val_frac: float = _f(0.1, "Fraction of posts in the validation split; the latest remainder is test.")
    # --- models (roles) ----------------------------------------------------------------
    generator: str = _f("smollm2-135m", "Model writing synthetic responses (served over the OpenAI API).")
    policy: str = _f("smollm2-135m", "Model trained with GRPO.")
    scorer: str = _f("gemma3-270m", "Model computing log-probs; must not be the generator.")
    encoder: str = _f("minilm-l6", "Encoder for embeddings and BERTScore.")
    judge: str = _f("gemma3-270m", "Local causal LM that labels stance and register by log-prob over fixed label sets "
                    "(simlib.measures.judge); must not be the generator, whose replies it labels.")
    # --- generation --------------------------------------------------------------------
    api_base_url: str = _f("", "OpenAI-compatible endpoint; empty = start the local llama.cpp server.")
    styles: list = _f(["plain", "humanlike"], "Synthetic prompt styles of the gap, reward and log-prob chapters.")
    remedy_styles: list = _f(["persona", "seeded"], "Styles the remedy chapter tests against those (persona, seeded).")
    seed_examples: int = _f(3, "Real replies (from training posts only) shown as examples in each `seeded` prompt.")
    seed_example_chars: int = _f(300, "Each `seeded` example is cut to this many characters (word boundary).")
    n_samples: int = _f(8, "Synthetic samples per post and style.")
    temperature: float = _f(1.0, "Sampling temperature of synthetic generation.")
    top_p: float = _f(1.0, "Nucleus sampling of synthetic generation.")
    max_tokens: int = _f(96, "Maximum new tokens per synthetic response.")
    concurrency: int = _f(2, "Replies in flight (a post's replies in one style go as one request with n; the "
                             "local server decodes this many together).")
    local_server: str = _f("llama_server", "Which local llama.cpp server answers when api_base_url is empty: "
                                           "llama_server (llama.cpp's own, continuous batching; the only one since "
                                           "it outran simlib's own server). Joins generation cache keys.",
                           choices=LOCAL_SERVERS)
    use_batch_api: bool = _f(False, "Use the OpenAI Batch API (paper scale) instead of live requests.")
    # --- diversity ---------------------------------------------------------------------
    n_per_group: int = _f(8, "Responses per (post, source) compared by the diversity measures.")
    n_boot: int = _f(2000, "Bootstrap resamples for confidence intervals.")
    # --- reward / GRPO -----------------------------------------------------------------
    reward_aggregate: str = _f("max", "How BERTScore against several references is combined: max or mean.")
    grpo_steps: int = _f(10, "GRPO optimisation steps per run.")
    grpo_seeds: list = _f([0, 1, 2], "Seeds; each target kind is trained once per seed.", item=int)
    num_generations: int = _f(4, "Completions per prompt in a GRPO group.")
    beta: float = _f(0.0, "KL coefficient of GRPO.")
    loss_type: str = _f("dapo", "TRL GRPO loss type.", choices=LOSS_TYPES)
    learning_rate: float = _f(1e-5, "Learning rate of GRPO.")
    warmup_ratio: float = _f(0.0, "Share of the GRPO steps over which the learning rate rises linearly from 0 to "
                                  "learning_rate (then constant); 0 = none. Damps the first updates, taken while "
                                  "Adam's moment estimates still rest on a step or two.")
    scale_rewards: str = _f("group", "How GRPO scales each completion's advantage (its reward minus its group's "
                                     "mean): by the std of its group, of the whole step's batch, or not at all "
                                     "(TRL's scale_rewards: group, batch, none).", choices=("group", "batch", "none"))
    grpo_save_steps: int = _f(0, "Write a GRPO checkpoint (weights, optimizer, RNG: what resume needs) every this "
                                 "many steps; 0 = none mid-run, so an interrupted run restarts from step 0. A "
                                 "full-weight checkpoint is three times the policy's size.")
    max_completion_length: int = _f(48, "Maximum new tokens of a GRPO completion.")
    use_lora: bool = _f(False, "Train LoRA adapters instead of all weights.")
    bf16: bool | str = _f(False, "bf16 autocast during GRPO: true, false, or auto (true where the training "
                                 "device computes bfloat16 natively: GPUs, CPUs with AVX-512-BF16 or AMX; see "
                                 "simlib.lm.hardware; resolved_bf16() decides it).", auto=bool)
    prompts_per_step: int = _f(1, "Prompts per GRPO step (each with num_generations completions).")
    policy_max_post_chars: int = _f(0, "Truncate posts in the policy's prompts (GRPO, evaluation) to this many "
                                       "characters; 0 = max_post_chars. On a CPU the prompt is most of a step's cost.")
    eval_samples: int = _f(4, "Replies sampled per probe or test post when evaluating a policy (the base "
                              "policy with the same seeds as each trained one, so changes are paired).")
    # --- the reward experiment (finding 2) ---------------------------------------------
    reward_targets_per_post: int = _f(4, "Training examples per training post: each pairs the post with ONE "
                                         "target reply (drawn at random for real targets), as the study does.")
    reward_synthetic_from: str = _f("gemma3-270m", "Who writes the synthetic targets of the reward chapter: "
                                                 "'generator' (the styles of the gap chapter) or a local model "
                                                 "name sampled with the scorer's prompt (simlib.steps.own_samples). "
                                                 "It must not be the policy: a policy would be trained towards "
                                                 "its own text.")
    probe_posts: int = _f(0, "Training posts in the fixed probe set on which the training-reward gain is "
                             "measured (0 = every training post).")
    eval_refs: int = _f(4, "References per held-out post and kind; a reply's score is its mean F1 over them.")
    remedy_seeds: int = _f(0, "The remedy chapter trains its new styles with the first this-many of grpo_seeds (0 = "
                              "all); its synthetic and real runs are the reward chapter's.")
    reward_margin_fraction: float = _f(0.25, "The reward chapter's margin (the smallest effect that counts, in "
                                             "BERTScore F1) is this fraction of the headroom: the real references' "
                                             "F1 against each other minus the base policy's F1 against them, on "
                                             "held-out posts (simlib.findings.claim.margin).")
    reward_margin: float = _f(0.02, "Fallback margin (BERTScore F1), used only when the base policy leaves no "
                                    "headroom below the references' agreement, so the fraction rule gives none.")
    # --- log-prob ----------------------------------------------------------------------
    logprob_batch_size: int = _f(16, "Responses scored per forward pass.")
    sample_rows: int = _f(96, "Sequences decoded together when a local model samples (the scorer's own samples, "
                              "policy evaluation; simlib.lm.sampling). On a CPU a decoding step costs about the "
                              "time to read the weights, so more rows per step are nearly free, up to memory.")
    max_response_tokens: int = _f(128, "Responses are cut to this many tokens before scoring.")
    # --- local inference ---------------------------------------------------------------
    inference_dtype: str = _f("float32", "Weight dtype of the local transformers models when they only infer (own "
                                         "samples, log-prob scoring, hidden features, policy evaluation): float32, "
                                         "bfloat16, or auto (bfloat16 where the CPU computes it natively, AVX-512-BF16 "
                                         "or AMX, else float32). bfloat16 halves the memory traffic that bounds a "
                                         "small model; emulated (AVX2 only) it is several times slower. Log-softmax "
                                         "stays float32. GRPO keeps float32 weights (see bf16).",
                                         choices=("float32", "bfloat16", "auto"))
    # --- devices and scale (paper) ---------------------------------------------------------
    device: str = _f("auto", "Where every model loads (sampling, scoring, hidden features, embeddings, BERTScore, "
                             "evaluation, GRPO): auto (CUDA when PyTorch sees a GPU, else the CPU), cpu or cuda "
                             "(simlib.lm.hardware.pick_device). inference_dtype/policy_dtype auto then pick bfloat16 "
                             "where that device computes it natively.", choices=("auto", "cpu", "cuda"))
    policy_dtype: str = _f("float32", "Weight dtype of the GRPO policy: float32, bfloat16, or auto (bfloat16 where the "
                                      "training device computes it natively). Full fine-tuning of an 8B policy in "
                                      "float32 with AdamW needs ~130 GB before activations; bfloat16 halves the weights.",
                           choices=("float32", "bfloat16", "auto"))
    gradient_checkpointing: bool = _f(False, "Recompute activations in GRPO's backward pass: memory for time (8B "
                                             "policies on GPUs); on a CPU it only costs time.")
    vllm_mode: str = _f("off", "GRPO rollouts through TRL's vLLM engine: off, colocate (an engine inside each "
                               "training process, sharing its GPU) or server (a separate `trl vllm-serve`). Used "
                               "only where vllm is importable and a GPU trains; otherwise simlib's sampler rolls out.",
                        choices=("off", "colocate", "server"))
    vllm_gpu_memory_utilization: float = _f(0.3, "GPU memory share of a colocated vLLM engine (vllm_mode: colocate).")
    num_processes: int | str = _f("auto", "GRPO training processes: auto (one per visible GPU, 1 without) or a number. "
                                          "More than 1 launches the training step with `accelerate launch` "
                                          "(simlib.train.launch); prompts_per_step is then split between them.", auto=int)
    accelerate_config: str = _f("", "accelerate config file of the GRPO launch on GPUs, relative to the repo root "
                                    "('' = plain data parallel); set, it launches even one process. "
                                    "configs/deepspeed_zero3.yaml: DeepSpeed ZeRO-3 shards parameters, gradients "
                                    "and optimizer states across the GPUs (needs `pip install deepspeed`).")
    # --- log-prob controls ---
    logprob_equal_tokens: int = _f(0, "The log-prob chapter compares replies on their first L scorer tokens (equal "
                                      "length); 0 = the shortest cap any source was cut at, min(max_tokens, "
                                      "max_response_tokens). Larger than that cap is an error.")
    t1_styles: list = _f([], "Synthetic styles the log-prob chapter also samples at temperature 1.0 (its temperature "
                             "control, with the scorer's own samples at 1.0); empty = styles.")
    t1_samples: int = _f(0, "Replies per post of each temperature-1.0 set (synthetic and own); 0 = n_per_group. "
                            "A profile sampling at 1.0 already reuses its main sets (cached).")

    def __post_init__(self) -> None:
        self._coerce_types()
        errors: list[str] = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                errors.append(msg)

        for name in ("seed", "n_posts", "min_chars"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)!r}")
        # Room for at least one character before the truncation marker " […]".
        for name in ("max_post_chars", "seed_example_chars"):
            need(getattr(self, name) >= 5, f"{name} must be >= 5, got {getattr(self, name)!r}")
        need(self.policy_max_post_chars == 0 or self.policy_max_post_chars >= 5,
             f"policy_max_post_chars must be 0 (= max_post_chars) or >= 5, got {self.policy_max_post_chars!r}")
        need(self.max_responses >= self.min_responses,
             f"max_responses must be >= min_responses (else every post is dropped), "
             f"got {self.max_responses} < {self.min_responses}")
        for name in ("min_responses", "max_responses", "n_samples", "max_tokens", "concurrency",
                     "n_per_group", "grpo_steps", "seed_examples", "max_completion_length", "prompts_per_step", "eval_samples", "logprob_batch_size",
                     "sample_rows", "max_response_tokens"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)!r}")
        # Diversity compares replies within a post: one reply has none. (n_samples below n_per_group is
        # caught where the sources are cut to n_per_group, simlib.findings.gap.responses_table.)
        need(self.n_per_group >= 2, f"n_per_group must be >= 2 (diversity needs two replies per post), got {self.n_per_group}")
        need(self.num_generations >= 2, f"num_generations must be >= 2 (GRPO needs a group), got {self.num_generations}")
        need(0 < self.train_frac < 1, f"train_frac must be in (0, 1), got {self.train_frac}")
        need(0 <= self.val_frac < 1 and self.train_frac + self.val_frac < 1,
             f"train_frac + val_frac must be < 1 to leave test posts, got {self.train_frac} + {self.val_frac}")
        need(0 <= self.temperature <= 2, f"temperature must be in [0, 2], got {self.temperature}")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        need(0 < self.learning_rate < 1, f"learning_rate must be in (0, 1), got {self.learning_rate}")
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        need(self.scale_rewards in ("group", "batch", "none"),
             f"scale_rewards must be group, batch or none, got {self.scale_rewards!r}")
        need(self.grpo_save_steps >= 0, f"grpo_save_steps must be >= 0 (0 = no checkpoint mid-run), "
                                        f"got {self.grpo_save_steps!r}")
        need(self.inference_dtype in ("float32", "bfloat16", "auto"),
             f"inference_dtype must be float32, bfloat16 or auto, got {self.inference_dtype!r}")
        need(self.local_server in LOCAL_SERVERS,
             f"local_server must be one of {', '.join(LOCAL_SERVERS)}, got {self.local_server!r}")
        need(self.reward_aggregate in ("max", "mean"), f"reward_aggregate must be max or mean, got {self.reward_aggregate!r}")
        need(self.loss_type in LOSS_TYPES, f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        # The crawl has two folders; dumps may hold any subreddit (matched case-insensitively when read).
        bad = [s for s in self.subreddits if not isinstance(s, str) or not s.strip()
               or (not self.dumps and s not in ("aitah", "askreddit"))]
        need(not bad and self.subreddits, f"subreddits must be a non-empty subset of [aitah, askreddit] "
                                          f"(with dumps: any subreddit names), got {self.subreddits}")
        bad = [s for s in self.styles if s not in ("plain", "humanlike", "persona", "seeded")]
        need(not bad and self.styles, f"styles must be a non-empty subset of [plain, humanlike, persona, seeded], got {self.styles}")
        bad = [s for s in self.remedy_styles if s not in ("plain", "humanlike", "persona", "seeded")]
        need(not bad and self.remedy_styles,
             f"remedy_styles must be a non-empty subset of [plain, humanlike, persona, seeded], got {self.remedy_styles}")
        for name in ("reward_targets_per_post", "eval_refs"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)!r}")
        need(self.remedy_seeds >= 0, f"remedy_seeds must be >= 0, got {self.remedy_seeds!r}")
        need(self.probe_posts >= 0, f"probe_posts must be >= 0, got {self.probe_posts!r}")
        need(self.reward_margin > 0, f"reward_margin must be > 0, got {self.reward_margin!r}")
        need(0 < self.reward_margin_fraction < 1,
             f"reward_margin_fraction must lie in (0, 1), got {self.reward_margin_fraction!r}")
        writer = self.generator if self.reward_synthetic_from == "generator" else self.reward_synthetic_from
        need(writer != self.policy,
             f"the synthetic targets' writer must not be the policy (reward_synthetic_from="
             f"{self.reward_synthetic_from!r} means {writer!r}, policy={self.policy!r})")
        need(len(self.grpo_seeds) >= 1, "grpo_seeds must name at least one seed")
        need(all(s >= 0 for s in self.grpo_seeds), f"grpo_seeds must be >= 0, got {self.grpo_seeds}")
        need(all(isinstance(d, (list, tuple)) and len(d) == 2 for d in self.dumps),
             f"dumps must be a list of [submissions, comments] pairs, got {self.dumps!r}")
        need(self.scorer != self.generator,
             f"scorer must not be the generator (it must not have written what it scores), both are {self.scorer!r}")
        # devices and scale (paper)
        need(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        need(self.policy_dtype in ("float32", "bfloat16", "auto"),
             f"policy_dtype must be float32, bfloat16 or auto, got {self.policy_dtype!r}")
        need(self.vllm_mode in ("off", "colocate", "server"),
             f"vllm_mode must be off, colocate or server, got {self.vllm_mode!r}")
        need(0 < self.vllm_gpu_memory_utilization <= 1,
             f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization!r}")
        need(self.num_processes == "auto" or (isinstance(self.num_processes, int) and self.num_processes >= 1),
             f"num_processes must be auto or >= 1, got {self.num_processes!r}")
        need(not (isinstance(self.num_processes, int) and self.num_processes >= 1
                  and self.prompts_per_step % self.num_processes),
             f"prompts_per_step ({self.prompts_per_step!r}) must be a multiple of num_processes "
             f"({self.num_processes!r}): each process takes an equal share")
        need(not self.accelerate_config or (REPO_ROOT / self.accelerate_config).is_file()
             or Path(self.accelerate_config).is_file(),
             f"accelerate_config must name an existing file, got {self.accelerate_config!r}")
        # log-prob controls
        cap = min(self.max_tokens, self.max_response_tokens)
        need(0 <= self.logprob_equal_tokens <= cap,
             f"logprob_equal_tokens must be in 0..{cap} (0 = the shortest cap, min(max_tokens={self.max_tokens}, "
             f"max_response_tokens={self.max_response_tokens})), got {self.logprob_equal_tokens!r}")
        need(self.t1_samples >= 0, f"t1_samples must be >= 0 (0 = n_per_group), got {self.t1_samples!r}")
        bad = [s for s in self.t1_styles if s not in ("plain", "humanlike", "persona", "seeded")]
        need(not bad, f"t1_styles must be a subset of [plain, humanlike, persona, seeded], got {self.t1_styles}")
        # endpoints, models, files, folders and the bootstrap floor (simlib.inputs)
        errors += inputs.problems(self, REPO_ROOT)
        if errors:
            raise ConfigError(f"invalid configuration (profile {self.profile!r}):\n  - " + "\n  - ".join(errors))

    def _coerce_types(self) -> None:
        """Coerce strings from the command line to each field's type; reject what cannot be."""
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                # auto=T: the field holds "auto" or a value of type T (its annotation says T | str)
                if "auto" in f.metadata and isinstance(value, str) and value.lower() == "auto":
                    setattr(self, f.name, "auto")
                    continue
                value = _coerce(value, f.metadata.get("auto", f.type), f.name)
                if "item" in f.metadata:  # e.g. "--set grpo_seeds=1,2" gives strings
                    value = [_coerce(v, f.metadata["item"], f.name) for v in value]
                setattr(self, f.name, value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"parameter {f.name}: {exc}") from None

    # --- conveniences ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def path(self, *parts: str) -> Path:
        """A path under the work directory (created on demand)."""
        base = Path(self.work_dir)
        base = base if base.is_absolute() else REPO_ROOT / base
        p = base.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not (base / inputs.MARKER).exists() and base.is_dir():  # claims the folder (simlib.inputs)
            (base / inputs.MARKER).touch()
        return p

    def resolved_inference_dtype(self) -> str:
        """``inference_dtype`` with ``auto`` decided for the device models load on (simlib.lm.hardware)."""
        if self.inference_dtype != "auto":
            return self.inference_dtype
        from simlib.lm.hardware import pick_dtype

        return pick_dtype("auto", self.device)

    def resolved_device(self) -> str:
        """``device`` with ``auto`` decided for this machine: cuda or cpu (simlib.lm.hardware.pick_device)."""
        from simlib.lm.hardware import pick_device

        return pick_device(self.device)

    def resolved_policy_dtype(self) -> str:
        """``policy_dtype`` with ``auto`` decided for the device GRPO trains on."""
        from simlib.lm.hardware import pick_dtype

        return pick_dtype(self.policy_dtype, self.device)

    def resolved_num_processes(self) -> int:
        """``num_processes`` with ``auto`` = the GPUs visible to the training device (1 on a CPU)."""
        if self.num_processes != "auto":
            return int(self.num_processes)
        from simlib.lm.hardware import gpu_count

        return max(1, gpu_count()) if self.resolved_device() == "cuda" else 1

    def resolved_bf16(self) -> bool:
        """``bf16`` with ``auto`` decided for the device GRPO trains on (simlib.lm.hardware)."""
        if self.bf16 != "auto":
            return bool(self.bf16)
        from simlib.lm.hardware import native_bf16, training_device

        return native_bf16(training_device(self.device))

    def resolved_data_dir(self) -> str | None:
        return self.data_dir or os.environ.get("SIMLIB_DATA_DIR") or None


def _coerce(value: Any, typ: Any, name: str) -> Any:
    typ = {"int": int, "float": float, "str": str, "bool": bool, "list": list}.get(typ, typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TypeError(f"expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(f"expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if typ is list or get_origin(typ) is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        return list(value)
    return value


FIELD_NAMES = tuple(f.name for f in fields(Config))


def field_help() -> dict[str, str]:
    """Name → help text of every parameter."""
    return {f.name: f.metadata.get("help", "") for f in fields(Config)}


def profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def check_names(names: Any, where: str = "parameters") -> None:
    """Fail on any name that is not a Config field, listing the valid ones."""
    unknown = [n for n in names if n not in FIELD_NAMES]
    if unknown:
        hints = {n: difflib.get_close_matches(n, FIELD_NAMES, n=1) for n in unknown}
        hint = "; ".join(f"{n!r}: did you mean {h[0]!r}?" for n, h in hints.items() if h)
        raise ConfigError(
            f"unknown {where}: {', '.join(map(repr, unknown))}" + (f" ({hint})" if hint else "")
            + "\nvalid names: " + ", ".join(FIELD_NAMES)
        )


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` (values coerced later by Config)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load(profile: str = "ci", overrides: dict[str, Any] | None = None) -> Config:
    """Read ``params/<profile>.yaml``, apply ``overrides``, validate, return the Config."""
    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown profile {profile!r}; valid profiles: {', '.join(profiles())}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values")
    check_names(values, where=f"names in {path.name}")
    overrides = dict(overrides or {})
    overrides.pop("profile", None)
    check_names(overrides)
    return Config(**{**values, **overrides, "profile": profile})
