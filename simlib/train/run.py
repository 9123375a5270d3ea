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


The settings and their CPU and GPU defaults are documented in :mod:`simlib.train.spec`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from simlib import progress
from simlib.cache import atomic_write_json, atomic_write_text, content_hash
from simlib.train.spec import TrainSpec, grpo_config, use_cpu
from simlib.train.trainer import build_trainer

__all__ = ["train", "prompt_records", "run_dir", "check_paired", "read_log", "last_checkpoint", "main"]


def run_dir(spec: TrainSpec, target: str, prompts_df: Any, references: Mapping[Any, Sequence[str]],
            root: str | os.PathLike | None = None) -> TrainSpec:
    """``spec`` for ``target`` in its own folder ``<root>/<target>-seed<seed>-<key>``.

    ``key`` hashes what the run depends on (the spec less its resumable fields, the prompts and the
    target's references), so two calls with the same inputs share a folder (and its finished run or
    checkpoints), and any other setting or data gets a folder of its own.
    """
    root = Path(root if root is not None else spec.output_dir)
    spec = dataclasses.replace(spec, target=target)
    records = prompt_records(prompts_df)
    refs = _select_references(references, [r["post_id"] for r in records], spec.max_references)
    key = content_hash({"identity": spec.identity(), "prompts": records, "references": refs})[:12]
    return dataclasses.replace(spec, output_dir=str(root / f"{target}-seed{spec.seed}-{key}"))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def prompt_records(prompts_df: Any) -> list[dict[str, Any]]:
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
            progress.report("GRPO step", step, state.max_steps, run=f"{spec.target} seed {spec.seed}")

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
    records = prompt_records(prompts_df)
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

    from simlib.train import launch

    if (spec.num_processes > 1 or spec.accelerate_config) and not launch.inside_launch():
        # This process is not one of the launched ones: run the same entry point under
        # `accelerate launch` (one process per GPU, or gloo on the CPU) and wait for it.
        if callbacks:
            raise ValueError("callbacks cannot reach the processes of a launched run (num_processes > 1)")
        return launch.launch_train(spec, records, refs)

    from accelerate import PartialState

    cpu = use_cpu(spec)
    args = grpo_config(spec, cpu)
    state = PartialState()
    ckpt = last_checkpoint(out)
    elapsed_before = 0.0
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        done.unlink(missing_ok=True)
        atomic_write_json(run_json, {**info, "started": time.time(), "resumed_from": str(ckpt) if ckpt else None})
        elapsed_before = _truncate_log(out, _checkpoint_step(ckpt))
    state.wait_for_everyone()

    from simlib.measures.reward import BertScoreReward

    reward = BertScoreReward(spec.encoder, refs, aggregate=spec.reward_aggregate,
                             device="cpu" if cpu else str(state.device))
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