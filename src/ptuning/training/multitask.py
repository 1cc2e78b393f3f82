"""Multi-task prompt pre-training (MPT-2): one shared prefix learned jointly on several tasks.

Why: P-tuning v2 (section 4.2, "MPT-2") pre-trains the prompt on several datasets at once, then uses it to
start each single-task run (``init_prefix_from``); a low-resource task then starts from a prefix that has
already learned something useful, instead of from noise. Every task keeps its own linear head.

Mixing rule. Each batch holds ONE task (its own padding, its own head and loss); the sequence of batches
mixes tasks. With ``n_i`` training features for task i, the share of batches drawn from task i is

* ``proportional``: p_i = n_i / sum_j n_j (every task is seen about once per nominal epoch);
* ``temperature``:  p_i ∝ n_i^(1/T) (T = 1 is proportional, larger T moves towards uniform and so
  up-samples small tasks; T5 and mT5 use this rule).

A run of S micro-batches holds round(S * p_i) batches of task i (largest remainder, so the counts sum to S)
in a seeded random order. Each task walks through its own length-grouped batches and starts a freshly
shuffled pass whenever it runs out. A nominal epoch is sum_i ceil(n_i / batch_size) micro-batches.

Training is single-process (the per-task heads that a batch does not use would stall DDP); everything else
(options, data loading, evaluation, checkpoints, resumable state) is the single-task engine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import ConfigError, Method
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.tasks.registry import get_task, list_tasks
from ptuning.training.config import TrainConfig, check_keys, load_config_file
from ptuning.training.data import DEV_CANDIDATES, choose_split
from ptuning.training.engine import (
    BEST_DIR,
    RunResult,
    Split,
    data_split_name,
    evaluate,
    init_prefix,
    load_split,
    report_dict,
    restore_training,
    save_state,
    shuffled_batches,
    tensorboard_writer,
)
from ptuning.training.inference import feature_length

logger = logging.getLogger(__name__)

SHARED_PREFIX = "shared"  # the name of the one prefix every task's head sits on
SAMPLING_RULES = ("proportional", "temperature")


# ---------------------------------------------------------------------------------------------- mixing
def task_probabilities(sizes: dict[str, int], sampling: str, temperature: float = 1.0) -> dict[str, float]:
    """The share of batches each task gets: p_i ∝ n_i (proportional) or p_i ∝ n_i^(1/T) (temperature)."""
    if sampling not in SAMPLING_RULES:
        raise ConfigError(f"sampling must be one of {', '.join(SAMPLING_RULES)}; got {sampling!r}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0; got {temperature!r}")
    empty = [name for name, size in sizes.items() if size <= 0]
    if empty:
        raise ConfigError(f"tasks {empty} have no training examples")
    exponent = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = {name: float(size) ** exponent for name, size in sizes.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def apportion(probabilities: dict[str, float], steps: int) -> dict[str, int]:
    """Integer batch counts summing to ``steps``, closest to ``steps * p_i`` (largest remainder)."""
    exact = {name: steps * p for name, p in probabilities.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (-(exact[name] - counts[name]), name))
    for name in by_remainder[: steps - sum(counts.values())]:
        counts[name] += 1
    return counts


def _batch_stream(
    lengths: list[int], batch_size: int, seed: int, group_by_length: bool
) -> Iterator[list[int]]:
    """One task's batches forever: pass k is a fresh shuffle (seed + k) of all its features."""
    for epoch in range(1_000_000):
        if group_by_length:
            yield from length_grouped_batches(lengths, batch_size, seed=seed + epoch)
        else:
            yield from shuffled_batches(len(lengths), batch_size, seed + epoch)


def mixed_schedule(
    lengths: dict[str, list[int]],
    probabilities: dict[str, float],
    steps: int,
    batch_size: int,
    seed: int,
    group_by_length: bool = True,
) -> list[tuple[str, list[int]]]:
    """``steps`` homogeneous batches as (task, feature indices), mixed by the rule in the module doc."""
    counts = apportion(probabilities, steps)
    names = list(lengths)
    order = [name for name in names for _ in range(counts[name])]
    np.random.default_rng(seed).shuffle(order)
    streams = {
        name: _batch_stream(lengths[name], batch_size, seed + 7919 * (index + 1), group_by_length)
        for index, name in enumerate(names)
    }
    return [(name, next(streams[name])) for name in order]


# ---------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class _TaskData:
    task: Any
    config: TrainConfig  # the run's options with this task's name and data folder
    train: Split
    dev: Split | None


def _load_tasks(
    config: TrainConfig,
    tasks: list[str],
    data_dirs: dict[str, str],
    splits: dict[str, tuple[str | None, str | None]],
    tokenizer: Any,
) -> dict[str, _TaskData]:
    loaded: dict[str, _TaskData] = {}
    keyed = bool(config.task_options) and set(config.task_options) <= set(tasks)
    for name in tasks:
        options = config.task_options.get(name, {}) if keyed else config.task_options
        task = get_task(name, **options)  # options are the task's constructor keywords
        task_config = dataclasses.replace(config, task=name, data_dir=data_dirs[name], task_options=options)
        train_name, dev_name = splits.get(name, (None, None))
        train_name = data_split_name(task, train_name or config.train_split, ("train",))
        one_file = Path(data_dirs[name]).expanduser().is_file()  # [data] as single-task runs choose dev
        dev_name = choose_split(
            task, data_dirs[name], dev_name or config.dev_split, DEV_CANDIDATES, one_file, []
        )
        if train_name is None:
            raise ConfigError(f"task {name!r} has no train split; name one (splits: {sorted(task.splits)})")
        train = load_split(task, task_config, tokenizer, train_name, config.max_train_samples)
        dev = (
            load_split(task, task_config, tokenizer, dev_name, config.max_eval_samples) if dev_name else None
        )
        loaded[name] = _TaskData(task, task_config, train, dev)
    return loaded


def _check_inputs(config: TrainConfig, tasks: list[str], data_dirs: dict[str, str]) -> None:
    if not tasks:
        raise ConfigError("train_multitask needs at least one task")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks must be distinct; got {tasks}")
    unknown = [name for name in tasks if name not in list_tasks()]
    if unknown:
        raise ConfigError(f"unknown tasks {unknown}; `ptuning tasks` lists the known ones")
    missing = [name for name in tasks if name not in data_dirs]
    if missing:
        raise ConfigError(f"no data folder for tasks {missing}; give one per task (task=folder)")
    if config.dev_from_train is not None:  # [data] not silently ignored: read_run_data holds out dev per run
        raise ConfigError(
            "multi-task training does not take dev_from_train yet: give each task a dev file, or --dev-split none"
        )
    if not Method(config.method).uses_prefix or not Method(config.method).freezes_backbone:
        raise ConfigError(
            f"multi-task prompt pre-training shares a prefix; method must be ptuning-v2, prefix-mlp or "
            f"prompt-tuning, got {config.method!r}"
        )


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
    transfer.
    """
    started = time.perf_counter()
    _check_inputs(config, tasks, data_dirs)
    task_probabilities(dict.fromkeys(tasks, 1), sampling, temperature)  # checks the rule before loading
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
    )
    if accelerator.num_processes > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("multi-task training runs in one process; launch it without accelerate/torchrun")
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    mixing = {"tasks": tasks, "data_dirs": data_dirs, "sampling": sampling, "temperature": temperature}
    (output_dir / "config.json").write_text(
        json.dumps({**config.to_dict(), "multitask": {**mixing, "splits": splits or {}}}, indent=2) + "\n"
    )

    heads = {get_task(name).head for name in tasks}
    causal = heads == {HeadKind.CAUSAL_LM}
    if HeadKind.CAUSAL_LM in heads and not causal:
        raise ConfigError("causal-lm tasks cannot share a prefix with encoder tasks in one run")
    backbone, tokenizer = load_backbone(
        config.model, causal_lm=causal, attn_implementation=config.attn_implementation
    )
    data = _load_tasks(config, tasks, data_dirs, splits or {}, tokenizer)
    model = PromptModel(backbone, Method(config.method), config.prefix_config(), config.head_dropout)
    for name, item in data.items():
        model.add_task(name, HeadSpec(item.task.head, item.task.label_names), prefix_name=SHARED_PREFIX)
    if config.init_prefix_from:
        init_prefix(model, tasks[0], config.init_prefix_from)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    report = model.trainable_parameters()
    accelerator.print(f"MPT-2 {'+'.join(tasks)} · {config.method} · {config.model}: {report}")
    data_report = {
        f"{name}/{split.name}": report_dict(split.report)
        for name, item in data.items()
        for split in (item.train, item.dev)
        if split is not None
    }

    lengths = {name: [feature_length(f) for f in item.train.features] for name, item in data.items()}
    sizes = {name: len(values) for name, values in lengths.items()}
    probabilities = task_probabilities(sizes, sampling, temperature)
    epoch_steps = sum(math.ceil(size / config.batch_size) for size in sizes.values())
    accumulation = config.gradient_accumulation_steps
    total_micro = math.ceil(epoch_steps * config.epochs)
    if config.max_steps:
        total_micro = min(total_micro, config.max_steps * accumulation)
    total_updates = math.ceil(total_micro / accumulation)
    schedule = mixed_schedule(
        lengths, probabilities, total_micro, config.batch_size, config.seed, config.group_by_length
    )
    counts = apportion(probabilities, total_micro)
    accelerator.print(
        "mixing: "
        + ", ".join(f"{n} n={sizes[n]} p={probabilities[n]:.3f} batches={counts[n]}" for n in tasks)
    )

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_updates), total_updates
    )
    progress: dict[str, Any] = {
        "epoch": 0,
        "micro": 0,
        "update": 0,
        "best": None,
        "best_update": None,
        "history": [],
        "losses": {name: [] for name in tasks},
    }
    if config.resume and (restored := restore_training(output_dir, model, optimizer, scheduler)) is not None:
        progress = restored
        accelerator.print(f"resumed after {progress['micro']} of {total_micro} batches")

    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: PromptModel = accelerator.unwrap_model(model)
    writer = tensorboard_writer(output_dir, config)
    pad_id = tokenizer.pad_token_id
    eval_micro = (config.eval_every_steps * accumulation) if config.eval_every_steps else epoch_steps

    def run_eval() -> None:
        entry: dict[str, Any] = {
            "update": progress["update"],
            "epoch": round(progress["micro"] / epoch_steps, 3),
            "dev": {},
            "train_loss": {n: _mean(v) for n, v in progress["losses"].items()},
        }
        for name, item in data.items():
            if item.dev is not None:
                entry["dev"][name] = evaluate(unwrapped, item.task, item.dev, tokenizer, item.config)
        primaries = [
            entry["dev"][name].get(item.task.primary_metric)
            for name, item in data.items()
            if name in entry["dev"]
        ]
        score = _mean([p for p in primaries if p is not None]) if primaries else None
        entry["mean_primary"] = score
        progress["history"].append(entry)
        progress["losses"] = {name: [] for name in tasks}
        if progress["best"] is None or (score is not None and score > progress["best"]):
            progress["best"], progress["best_update"] = score, progress["update"]
            extra = {"dev": entry["dev"], "mpt2": {**mixing, "probabilities": probabilities}}
            save_checkpoint(unwrapped, output_dir / BEST_DIR, {name: name for name in tasks}, extra)
        if writer is not None:
            for name, metrics in entry["dev"].items():
                for metric, value in metrics.items():
                    writer.add_scalar(f"dev/{name}/{metric}", value, progress["update"])
        accelerator.print(f"update {progress['update']}: mean dev {score} {entry['dev']}")

    model.train()
    train_seconds, seen = 0.0, 0
    bar = tqdm(total=total_micro, initial=progress["micro"], desc="MPT-2")
    for step in range(progress["micro"], total_micro):
        name, indices = schedule[step]
        batch = collate([data[name].train.features[i] for i in indices], pad_id)
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        tick = time.perf_counter()
        with accelerator.accumulate(model):
            loss = model(**batch, task=name).loss
            accelerator.backward(loss)
            optimizer.step()
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad()
        train_seconds += time.perf_counter() - tick
        seen += len(indices)
        progress["losses"][name].append(float(loss.detach()))
        progress["micro"] = step + 1
        bar.update(1)
        bar.set_postfix(task=name, loss=f"{float(loss.detach()):.4f}")
        if accelerator.sync_gradients:
            progress["update"] += 1
            if writer is not None:
                writer.add_scalar(f"train/loss/{name}", float(loss.detach()), progress["update"])
        if progress["micro"] % eval_micro == 0 or progress["micro"] == total_micro:
            run_eval()
        if config.save_every_steps and progress["micro"] % (config.save_every_steps * accumulation) == 0:
            save_state(accelerator, unwrapped, optimizer, scheduler, progress, output_dir, progress["epoch"])
    bar.close()
    if progress["micro"] == total_micro and (
        not progress["history"] or progress["history"][-1]["update"] != progress["update"]
    ):
        run_eval()  # a resumed run that had finished its batches but not its last evaluation
    save_state(accelerator, unwrapped, optimizer, scheduler, progress, output_dir, progress["epoch"])

    best = next((h for h in progress["history"] if h["update"] == progress["best_update"]), {})
    summary = {
        "tasks": tasks,
        "method": config.method,
        "model": config.model,
        "seed": config.seed,
        "sampling": sampling,
        "temperature": temperature if sampling == "temperature" else None,
        "train_sizes": sizes,
        "probabilities": probabilities,
        "batches": counts,
        "trainable_params": report.trainable,
        "total_params": report.total,
        "best_update": progress["best_update"],
        "dev": best.get("dev"),
        "mean_primary": best.get("mean_primary"),
        "updates": progress["update"],
        "train_examples_per_second": round(seen / train_seconds, 2) if train_seconds else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(output_dir / BEST_DIR),
        "data": data_report,
        "history": progress["history"],
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if writer is not None:
        writer.close()
    return RunResult(summary, progress["history"])


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------------------- command line
def add_multitask_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``ptuning train --tasks a,b,c`` adds to the single-task ones (TrainConfig's flags)."""
    group = parser.add_argument_group("multi-task prompt pre-training (MPT-2)")
    group.add_argument(
        "--tasks",
        type=_comma_list,
        help="comma-separated registry tasks sharing one prefix, e.g. superglue-rte,boolq,copa",
    )
    group.add_argument(
        "--task-data",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="data folder of one task (repeat per task); default: <--data-dir>/<TASK>",
    )
    group.add_argument(
        "--task-split",
        action="append",
        default=[],
        metavar="TASK=TRAIN[:DEV]",
        help="train (and dev) split of one task, e.g. boolq=train-from-val:eval-from-val",
    )
    group.add_argument(
        "--sampling",
        choices=SAMPLING_RULES,
        default="proportional",
        help="batch mixing: proportional to dataset size, or p_i ∝ n_i^(1/T)",
    )
    group.add_argument("--temperature", type=float, default=2.0, help="T of --sampling temperature")


def run_multitask(args: argparse.Namespace) -> RunResult:
    """Build the TrainConfig from ``args`` (a --config file, then any TrainConfig flag present) and train."""
    if not args.tasks:
        raise ConfigError("--tasks needs at least one task")
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if field.name not in ("task", "data_dir") and getattr(args, field.name, None) is not None
    }
    file_data = load_config_file(args.config) if getattr(args, "config", None) else {}
    check_keys(file_data, str(getattr(args, "config", "")))
    parent = getattr(args, "data_dir", None) or file_data.get("data_dir")
    file_data = {k: v for k, v in file_data.items() if k not in ("task", "data_dir")}
    config = TrainConfig(**{**file_data, **overrides})
    data_dirs = _pairs(args.task_data, "--task-data")
    for name in args.tasks:
        if name not in data_dirs:
            if not parent:
                raise ConfigError(f"no data folder for {name!r}: give --task-data {name}=DIR or --data-dir")
            data_dirs[name] = str(Path(parent) / name)
    splits: dict[str, tuple[str | None, str | None]] = {}
    for name, value in _pairs(args.task_split, "--task-split").items():
        train_split, _, dev_split = value.partition(":")
        splits[name] = (train_split or None, dev_split or None)
    unknown = sorted((set(data_dirs) | set(splits)) - set(args.tasks))
    if unknown:
        raise ConfigError(f"--task-data/--task-split name tasks {unknown} that are not in --tasks")
    return train_multitask(config, args.tasks, data_dirs, args.sampling, args.temperature, splits)


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        for item in _comma_list(value):
            name, sep, rest = item.partition("=")
            if not sep or not name or not rest:
                raise ConfigError(f"{flag} expects TASK=VALUE; got {item!r}")
            pairs[name] = rest
    return pairs
