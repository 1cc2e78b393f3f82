"""Multi-task prompt pre-training (MPT-2): one shared prefix learned jointly on several tasks.

Why: P-tuning v2 (section 4.2, "MPT-2") pre-trains the prompt on several datasets at once, then uses it to
start each single-task run (``init_prefix_from``); a low-resource task then starts from a prefix that has
already learned something useful, instead of from noise. Every task keeps its own linear head.

There is no second training loop here: a multi-task run is ``engine.train`` with ``config.tasks`` set (the
batch mixing rule is in training/schedule.py). This module keeps the Python entry point with explicit
arguments and the command-line helpers of earlier versions.
"""

from __future__ import annotations

import argparse
from typing import Any

from ptuning.core.config import ConfigError
from ptuning.training.config import MULTITASK_FIELDS, TrainConfig, add_config_flags, build_config
from ptuning.training.config import flag_options as _flag_options
from ptuning.training.config import load_config_file as _load_config_file
from ptuning.training.engine import SHARED_PREFIX, RunResult, train
from ptuning.training.schedule import SAMPLING_RULES, apportion, mixed_schedule, task_probabilities

__all__ = [
    "SAMPLING_RULES",
    "SHARED_PREFIX",
    "add_multitask_arguments",
    "apportion",
    "mixed_schedule",
    "run_multitask",
    "task_probabilities",
    "train_multitask",
]


def train_multitask(
    config: TrainConfig,
    tasks: list[str],
    data_dirs: dict[str, str],
    sampling: str = "proportional",
    temperature: float = 2.0,
    splits: dict[str, tuple[str | None, str | None]] | None = None,
) -> RunResult:
    """Train one shared prefix (and one head per task) on ``tasks``; keep the best mean-dev checkpoint.

    ``data_dirs`` maps each task to its data folder; ``splits`` optionally maps a task to its
    (train split, dev split), e.g. {"boolq": ("train-from-val", "eval-from-val")}. ``task_options`` of
    the config may be keyed by task name ({"squad": {"doc_stride": 64}}) or apply to every task. The
    checkpoint in ``output_dir/checkpoint`` holds the prefix and every head; ``init_prefix_from`` it to
    transfer. The same as ``engine.train(config)`` with those fields set.
    """
    if not tasks:
        raise ConfigError("train_multitask needs at least one task")
    task_splits = {name: f"{train or ''}:{dev or ''}" for name, (train, dev) in (splits or {}).items()}
    changes: dict[str, Any] = {
        "tasks": list(tasks),
        "task_data": dict(data_dirs),
        "task_splits": task_splits,
        "sampling": sampling,
        "temperature": temperature,
    }
    return train(config.replace(**changes))


def add_multitask_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """The flags of the multi-task fields of TrainConfig (``ptuning train`` has them already)."""
    group = parser.add_argument_group("multi-task prompt pre-training (MPT-2)")
    add_config_flags(group, MULTITASK_FIELDS)


def run_multitask(args: argparse.Namespace) -> RunResult:
    """Train from parsed arguments: a --config file (if any), then every TrainConfig flag present."""
    if not getattr(args, "tasks", None):
        raise ConfigError("--tasks needs at least one task")
    layers: list[tuple[str, dict[str, Any]]] = []
    if getattr(args, "config", None):
        layers.append((args.config, _load_config_file(args.config)))
    layers.append(("flags", _flag_options(args)))
    return train(build_config(layers))
