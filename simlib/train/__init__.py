"""GRPO training: the run's settings (:mod:`~simlib.train.spec`), the trainer (:mod:`~simlib.train.trainer`),
run folders (:mod:`~simlib.train.run`), policies to sample from (:mod:`~simlib.train.policy`), the
reward experiment's examples (:mod:`~simlib.train.examples`) and its evaluation (:mod:`~simlib.train.evaluate`)."""
from simlib.train.policy import generate_responses, load_policy
from simlib.train.run import check_paired, last_checkpoint, main, read_log, run_dir, train
from simlib.train.spec import TARGETS, TrainSpec, paired_specs
from simlib.train.trainer import build_trainer

__all__ = ["TrainSpec", "TARGETS", "train", "build_trainer", "paired_specs", "run_dir", "check_paired", "read_log",
           "last_checkpoint", "generate_responses", "load_policy", "main"]
