"""TRL's ``GRPOTrainer`` with simlib's three changes: each prompt read once per group in the
rollouts and in the training pass, and a data order that a resumed run replays exactly.

These override private TRL methods (:data:`TRL_OVERRIDES`); :func:`check_trl` compares their
signatures in the installed TRL with the ones written against, when :func:`trainer_class` first
imports TRL, and raises before any training if one is missing or changed: a renamed or reshaped
private method would otherwise be silently bypassed (TRL's own path runs) or called wrongly.
"""
from __future__ import annotations

import collections
import contextlib
import inspect
from typing import Any, Sequence

from simlib.lm import weights  # also sets the offline environment variables
from simlib.train.spec import TrainSpec, grpo_config, use_cpu

__all__ = ["shared_prompt_logps", "trainer_class", "build_trainer", "check_trl", "TRL_OVERRIDES"]

_IMAGE_KW = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
             "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
# (class, method) -> its parameters as (name, default) in TRL 1.16, the version the overrides are written against
TRL_OVERRIDES: dict[tuple[str, str], tuple[tuple[str, Any], ...]] = {
    ("GRPOTrainer", "_generate_single_turn"): (
        ("self", None), ("prompt_ids", None), ("images", None), ("multimodal_fields", None),
        ("num_generations", None), ("has_tool_images", False)),
    ("GRPOTrainer", "_get_per_token_logps_and_entropies"): (
        ("self", None), ("model", None), ("input_ids", None), ("attention_mask", None), ("logits_to_keep", None),
        ("batch_size", None), ("compute_entropy", False), ("compute_aux_loss", False), *((k, None) for k in _IMAGE_KW)),
    ("GRPOTrainer", "_get_train_sampler"): (("self", None), ("dataset", None)),
    ("RepeatSampler", "__init__"): (
        ("self", None), ("data_source", None), ("mini_repeat_count", None), ("batch_size", 1), ("repeat_count", 1),
        ("shuffle", True), ("seed", None)),
}


def _params(fn: Any) -> tuple[tuple[str, Any], ...]:
    return tuple((p.name, None if p.default is inspect.Parameter.empty else p.default)
                 for p in inspect.signature(fn).parameters.values())


def check_trl(classes: dict[str, Any] | None = None) -> None:
    """Raise ``RuntimeError`` unless every TRL method simlib overrides exists with the expected
    parameters (names and defaults, in order). ``classes``: name -> class (default: TRL's own)."""
    if classes is None:
        from trl import GRPOTrainer
        from trl.trainer.utils import RepeatSampler

        classes = {"GRPOTrainer": GRPOTrainer, "RepeatSampler": RepeatSampler}
    problems = []
    for (cls, name), expected in TRL_OVERRIDES.items():
        fn = getattr(classes[cls], name, None)
        if fn is None:
            problems.append(f"{cls}.{name} is missing")
        elif _params(fn) != expected:
            problems.append(f"{cls}.{name}{inspect.signature(fn)} differs from the expected "
                            f"({', '.join(n for n, _ in expected)}) with defaults {dict(expected)}")
    if problems:
        import trl

        raise RuntimeError(f"simlib.train.trainer overrides private methods of TRL 1.16, and TRL {trl.__version__} "
                           "changed them: " + "; ".join(problems) + ". Pin trl==1.16.0 or port the overrides.")


def prefill_prompt(model: Any, prompt_ids: Sequence[int], autocast: Any = contextlib.nullcontext) -> Any:
    """The KV cache of ``prompt_ids`` less its last token, with autograd on: the first pass of
    :func:`shared_prompt_logps` for an unpadded prompt, computed once by the rollouts (which sample
    from it) and handed to the training pass (which back-propagates through it)."""
    import torch

    from simlib.lm.forward import out_cache

    dev = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)[:-1]], dtype=torch.long, device=dev)
    with torch.enable_grad(), autocast():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(ids.shape[1], device=dev)[None],
                    use_cache=True, logits_to_keep=1)
    return out_cache(out)


def shared_prompt_logps(model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int,
                        autocast: Any = contextlib.nullcontext, prefills: dict | None = None) -> tuple[Any, Any] | None:
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
    prompt or the prompt is a single token (then nothing is saved). ``prefills``: prompt ids (a
    tuple) -> :func:`prefill_prompt`'s cache, used (and removed) for an unpadded prompt instead of
    reading it again: the same computation, so the same log-probs and gradients.
    """
    import torch

    from simlib.lm.forward import out_cache

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
        cache = None
        if prefills and bool(attention_mask[first, :p].all()):
            cache = prefills.pop(tuple(input_ids[first, :p].tolist()), None)
        if cache is None:
            with autocast():
                out = model(input_ids=input_ids[first:first + 1, :p - 1], attention_mask=attention_mask[first:first + 1, :p - 1],
                            position_ids=pos[:, :p - 1], use_cache=True, logits_to_keep=1)
            cache = out_cache(out)
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


def trainer_class():
    """``GRPOTrainer`` whose data order is a function of (seed, epoch), so resuming is exact, and
    whose bf16 rollouts cast the weights once per generation instead of once per token.

    TRL 1.16's ``RepeatSampler`` draws each epoch's permutation from one generator seeded once, and
    has no ``set_epoch``; a run resumed after its first epoch would restart that generator and replay
    epoch 0's order. Here the trainer's ``set_epoch`` calls reseed it per epoch (epoch 0 keeps TRL's
    order), which makes a resumed run identical to an uninterrupted one.
    """
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    check_trl({"GRPOTrainer": GRPOTrainer, "RepeatSampler": RepeatSampler})

    class EpochSeededRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed(int(self.seed or 0) + 1_000_003 * int(epoch))

    class SimlibGRPOTrainer(GRPOTrainer):
        _simlib_share_prompt = True  # build_trainer sets it from TrainSpec.share_prompt
        _simlib_share_rollouts = True  # and this from TrainSpec.share_prompt_rollouts
        _simlib_reuse_prefill = True  # and this from TrainSpec.reuse_prefill
        _simlib_prefills: dict = {}  # prompt ids -> the rollouts' prompt cache, for this step's training pass
        _simlib_calls = (-1, 0)  # (step, generation calls in it) of the last rollout
        simlib_counts: collections.Counter  # which override ran and which path it took (tests read it)

        def __init__(self, *args, **kwargs):
            self.simlib_counts = collections.Counter()
            super().__init__(*args, **kwargs)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
            self.simlib_counts["generate_single_turn"] += 1
            # accelerate gives every forward its own autocast region, and autocast forgets its cast
            # weights when a region ends: each decoding step cast all weights to bf16 again. One region
            # around the whole generation casts them once (same casts, same tokens, less time).
            import torch

            region = (torch.autocast(device_type=self.accelerator.device.type, dtype=torch.bfloat16)
                      if self.args.bf16 and not self.use_vllm else contextlib.nullcontext())
            with region:
                completions = self._simlib_rollouts(prompt_ids, images, multimodal_fields)
                if completions is not None:
                    self.simlib_counts["shared_rollouts"] += 1
                    return completions, None
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     *args, **kwargs)

        def _simlib_rollouts(self, prompt_ids, images, multimodal_fields) -> list[list[int]] | None:
            """Every row's completion (token ids, EOS included as TRL keeps it), each distinct prompt
            read once for its group (simlib.lm.sampling); None where TRL's generation is needed."""
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
            from simlib.lm.sampling import sample

            # One seed per (run seed, step, process, call of the step, prompt): a resumed run draws what an
            # uninterrupted one would, and no two prompts, steps or processes share a stream.
            step = int(self.state.global_step)
            calls = self._simlib_calls = (step, self._simlib_calls[1] + 1 if self._simlib_calls[0] == step else 0)
            key = [int(a.seed), step, int(self.accelerator.process_index), calls[1]]
            seeds = [int(content_hash([*key, g])[:15], 16) for g in range(len(groups))]
            prefix = self._simlib_prefill(model, list(groups))
            drawn = sample(model, [list(k) for k in groups], seeds, n=sizes.pop(), prefix=prefix,
                           max_new_tokens=self.max_completion_length, temperature=self.temperature,
                           top_p=self.top_p, eos_token_ids=self.eos_token_ids,
                           pad_token_id=self._tokenizer.pad_token_id or 0, keep_eos=True)
            out: list[list[int] | None] = [None] * len(prompt_ids)
            for rows, samples in zip(groups.values(), drawn):
                for r, ids in zip(rows, samples):
                    out[r] = ids
            return out

        def _simlib_prefill(self, model, prompts: list[tuple]) -> list | None:
            """Each prompt's :func:`prefill_prompt` cache, kept for this step's training pass, where
            that pass follows the rollouts with the same weights (one generation per optimizer step,
            one iteration); None (nothing kept) elsewhere or for prompts of several lengths."""
            import torch

            a = self.args
            self._simlib_prefills = {}
            if not (self._simlib_share_prompt and self._simlib_reuse_prefill and model.training
                    and a.steps_per_generation == 1 and self.num_iterations == 1 and a.gradient_accumulation_steps == 1
                    and len({len(p) for p in prompts}) == 1 and len(prompts[0]) >= 2 and torch.is_grad_enabled()):
                return None
            caches = [prefill_prompt(model, p, self.accelerator.autocast) for p in prompts]
            if any(type(layer).__name__ != "DynamicLayer" for c in caches for layer in c.layers):
                return None  # sliding-window caches: the sampler and the training pass read the prompt themselves
            self._simlib_prefills = dict(zip(prompts, caches))
            self.simlib_counts["prefills"] += len(caches)
            return caches

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False, **extra):
            # images, MoE losses and recomputed activations take TRL's path
            self.simlib_counts["logps"] += 1
            if (self._simlib_share_prompt and not compute_aux_loss and all(v is None for v in extra.values())
                    and not _checkpointing(model)):
                import torch

                # the rollouts' prefills serve the one pass with gradients (not a reference model's)
                prefills = self._simlib_prefills if torch.is_grad_enabled() else None
                kept = len(prefills or ())
                res = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, self.accelerator.autocast,
                                          prefills)
                if prefills is not None:
                    self.simlib_counts["prefills_reused"] += kept - len(prefills)
                    self._simlib_prefills = {}
                if res is not None and (res[1] is not None or not compute_entropy):
                    self.simlib_counts["shared_prompt_pass"] += 1
                    return res[0], (res[1] if compute_entropy else None), None
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, batch_size,
                                                              compute_entropy, compute_aux_loss, **extra)

        def _get_train_sampler(self, dataset=None):
            sampler = super()._get_train_sampler(dataset)
            self.simlib_counts["train_sampler"] += 1
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
        args = grpo_config(spec, use_cpu(spec))
    peft_config = None
    if spec.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                                 target_modules=spec.lora_target_modules, task_type="CAUSAL_LM")
    trainer = trainer_class()(
        model=weights.resolve(spec.policy),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(records),
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # log.jsonl is the record; no dicts printed per step
    trainer._simlib_share_prompt = spec.share_prompt
    trainer._simlib_share_rollouts = spec.share_prompt_rollouts
    trainer._simlib_reuse_prefill = spec.reuse_prefill
    return trainer

