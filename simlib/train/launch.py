"""Multi-process GRPO: the training step run under ``accelerate launch``.

:func:`simlib.train.train` calls :func:`launch_train` when its spec asks for more than one process
(``TrainSpec.num_processes``; :func:`simlib.train.spec.from_config` sets it from ``num_processes``, by default one per
visible GPU), or names an accelerate config, and it is not itself one of the launched processes. The run's spec and data go to
``<output_dir>/launch/{spec,data}.json``, the same entry point (``python -m simlib.train``) runs in
every process, and the caller gets back ``<output_dir>/final`` as from a one-process run; the run
folder (log, checkpoints, ``done.json``) is written by the main process only.

Three shapes of launch, from the spec:

* **GPUs, an accelerate config** (``accelerate_config: configs/deepspeed_zero3.yaml``, the ``paper``
  and ``gpu-smoke`` profiles): that config (ZeRO-3: parameters, gradients and optimizer states
  sharded across the GPUs, bf16) with ``--num_processes`` GPUs, one or more.
* **GPUs, data parallel** (no config): ``--multi_gpu``, one process per GPU, each with a full copy
  of the policy.
* **CPU** (no GPU, or ``device: cpu``): ``--cpu``, gloo between the processes; what the tests run.

The launcher's output goes to ``<output_dir>/launch/launch.log``; a failed launch raises with its tail.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from simlib.cache import atomic_write_json
from simlib.config import REPO_ROOT

# Set in the launched processes' environment: they run the training itself, never another launch.
LAUNCHED_ENV = "SIMLIB_LAUNCHED"


def inside_launch() -> bool:
    """Whether this process is one of a launch's processes (ours, or any torch.distributed one)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def free_port() -> int:
    """A TCP port free on this machine now, for the processes' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_path(name: str) -> Path:
    """An accelerate/DeepSpeed config named relative to the repo root (or absolute)."""
    p = Path(name).expanduser()
    p = p if p.is_absolute() else REPO_ROOT / p
    if not p.is_file():
        raise FileNotFoundError(f"no accelerate config at {p}")
    return p


def accelerate_command(spec_path: str | os.PathLike, data_path: str | os.PathLike, num_processes: int, *,
                       cpu: bool, config_file: str = "", bf16: bool = False, port: int | None = None,
                       python: str = sys.executable) -> list[str]:
    """The ``accelerate launch`` command line of a multi-process run of ``python -m simlib.train``."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    cmd = [python, "-m", "accelerate.commands.launch"]
    if config_file:
        if cpu:
            raise ValueError("a DeepSpeed/accelerate config file is for GPU launches; the CPU launch uses gloo")
        cmd += ["--config_file", str(config_path(config_file))]
    else:
        cmd += ["--cpu"] if cpu else (["--multi_gpu"] if num_processes > 1 else [])
        cmd += ["--mixed_precision", "bf16" if bf16 else "no"]
    cmd += ["--num_processes", str(num_processes), "--num_machines", "1", "--dynamo_backend", "no",
            "--main_process_port", str(port or free_port()),
            "-m", "simlib.train", "--spec", str(spec_path), "--data", str(data_path)]
    return cmd


def launch_env(cpu: bool, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launched processes' environment: offline, marked as launched, one thread each on a CPU
    (several processes on a few cores: more threads only make them wait for each other)."""
    env = {**(os.environ if base is None else base)}
    env.update({LAUNCHED_ENV: "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    if cpu:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def launch_train(spec: Any, prompts: Sequence[Mapping[str, Any]], references: Mapping[str, Sequence[str]],
                 *, timeout: float | None = None) -> Path:
    """Run :func:`simlib.train.train` for ``spec`` in ``spec.num_processes`` processes; return ``final/``.

    ``prompts`` are the run's records (``post_id``, ``prompt``) and ``references`` its selected
    references, as :func:`simlib.train.train` prepared them.
    """
    from simlib.train.spec import use_cpu

    out = Path(spec.output_dir)
    work = out / "launch"
    work.mkdir(parents=True, exist_ok=True)
    spec_path, data_path = work / "spec.json", work / "data.json"
    atomic_write_json(spec_path, spec.to_dict())
    atomic_write_json(data_path, {"prompts": list(prompts), "references": {k: list(v) for k, v in references.items()}})
    cpu = use_cpu(spec)
    cmd = accelerate_command(spec_path, data_path, spec.num_processes, cpu=cpu,
                             config_file="" if cpu else spec.accelerate_config, bf16=spec.bf16)
    log = work / "launch.log"
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=launch_env(cpu), stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout)
    final = out / "final"
    if proc.returncode != 0 or not (out / "done.json").exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"accelerate launch of {spec.num_processes} processes failed (exit {proc.returncode}); "
                           f"log {log}:\n{tail}")
    return final
