"""The one training loop, for one task or several sharing a prefix (MPT-2): accelerate for devices, processes
and precision; ptuning for everything P-tuning.

A run goes: plan (which tasks, folders, splits; nothing loaded) -> checks (training/preflight.py) -> read the
splits -> build the model -> tokenize -> train. Training walks one schedule of micro-batches (a batch source
per task, mixed; training/schedule.py); single-task training is the one-task case. Resuming, data-parallel
sharding, evaluation, the best-dev checkpoint and the resumable state exist once, here.

Why accelerate rather than HF Trainer (docs/ARCHITECTURE.md): our model is a plain nn.Module whose
checkpoints are prompt-only safetensors, resuming must not unpickle anything, and evaluation is the task's
own decoding + metric. A short explicit loop over ``Accelerator`` keeps all of that visible while
``accelerate launch`` / ``torchrun`` still give DDP, multi-node, DeepSpeed and FSDP without code changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ptuning.core.compilation import CompileStats, compile_backbone
from ptuning.core.config import ConfigError, Method
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.packing import pack_features, segment_labels
from ptuning.generation import generate_task_outputs, is_generative
from ptuning.tasks.base import DataReport, Task
from ptuning.tasks.collate import collate
from ptuning.tasks.registry import get_task, list_tasks
from ptuning.training.config import TrainConfig, flag_name
from ptuning.training.data import (
    DEV_FROM_TRAIN_SEED,
    DEV_SPLITS,
    NONE,
    Split,
    choose_split,
    featurize_split,
    hold_out,
    keep_first,
    read_split,
)
from ptuning.training.inference import feature_length, predict_outputs
from ptuning.training.preflight import check_run
from ptuning.training.schedule import (
    apportion,
    mixed_schedule,
    shard_batches,
    shuffled_batches,  # noqa: F401 (re-exported: benchmarks and older callers import it from here)
    task_probabilities,
)
from ptuning.training.sharding import average_replicated_gradients, reshard_backbone, shard_backbone
from ptuning.training.state import load_training_state, restore_rng, rng_states, save_training_state

logger = logging.getLogger(__name__)
BEST_DIR = "checkpoint"  # the best-dev prompt checkpoint inside output_dir
SHARED_PREFIX = "shared"  # the one prefix every task's head sits on in a multi-task run
BACKBONE_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: as loaded today


class TrainingDivergedError(RuntimeError):
    """The loss or the trained weights stopped being finite numbers; nothing after that point is kept."""


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TaskPlan:
    """One task of a run, before anything is read: the task object, its data folder and split names."""

    name: str
    task: Task
    data_dir: str
    train_split: str
    dev_split: str | None
    test_split: str | None
    options: dict[str, Any]  # the task's constructor keywords, stored in the checkpoint to rebuild it
    notes: list[str] = field(default_factory=list)  # why a dev or test split is absent


@dataclass
class TaskData:
    plan: TaskPlan
    train: Split
    dev: Split | None
    test: Split | None
    data_plan: dict[str, Any] = field(
        default_factory=dict
    )  # summary.json: which splits, dev held out of train

    @property
    def task(self) -> Task:
        return self.plan.task

    @property
    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.dev, self.test) if s is not None]


# ============================================================================================ the whole run
def train(config: TrainConfig) -> RunResult:
    """Train, evaluate every epoch (or N updates), keep the best-dev checkpoint, report test at best dev.

    With ``config.tasks`` (MPT-2) one prefix is shared by every task, each with its own head, and the best
    checkpoint is the one with the best mean of the tasks' dev primary metrics.
    """
    started = time.perf_counter()
    plans = plan_tasks(config)
    check_run(config, {plan.name: plan.task.head for plan in plans})  # before anything heavy loads
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        cpu=_cpu_processes(),
    )
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        (output_dir / "config.json").write_text(json.dumps(_run_config(config, plans), indent=2) + "\n")
    # the splits are read before the model is built: a task may learn its label set from train
    data = [read_task_data(plan, config, accelerator.print) for plan in plans]
    model, tokenizer = build_prompt_model(config, [item.task for item in data])
    if config.pack_sequences:  # refuse before tokenizing what packing cannot reproduce (core/packing.py)
        for item in data:
            model.check_packable(item.task.name)
    if config.shard_backbone:  # before the optimizer is built (preflight checked processes and method)
        shard_backbone(model.to(accelerator.device))
        accelerator.print(f"backbone sharded layer by layer over {accelerator.num_processes} processes")
    for item in data:
        for split in item.splits:
            featurize_split(item.task, split, tokenizer, config.max_length)
    data_report = _data_report(config, data)
    for name, counts in data_report.items():
        accelerator.print(f"data {name}: {counts}")
    trainer = Trainer(config, accelerator, model, tokenizer, data, output_dir)
    compiling = CompileStats.now()
    trainer.run()
    summary = trainer.summary(data_report, time.perf_counter() - started)
    if config.compile:
        compiled = CompileStats.now().since(compiling)
        accelerator.print(compiled)
        summary["compile"] = {"graphs": compiled.graphs, "seconds": round(compiled.seconds, 2)}
    summary["data_plan"] = _data_plan(config, data)
    if accelerator.is_main_process:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    trainer.close()
    return RunResult(summary, trainer.progress["history"])


# ============================================================================================ 1. plan
def plan_tasks(config: TrainConfig) -> list[TaskPlan]:
    """The run's tasks with their data folders and split names, checked; nothing is read yet."""
    names = config.task_names
    if config.is_multitask:
        _check_multitask(config, names)
    keyed = config.is_multitask and bool(config.task_options) and set(config.task_options) <= set(names)
    plans = []
    for name in names:
        options = config.task_options.get(name, {}) if keyed else config.task_options
        task = get_task(name, **options)  # options are the task's constructor keywords
        data_dir, notes = _data_dir(config, name), []
        train_name, dev_name = _own_splits(config, name)
        train_name = train_name or config.train_split or ("train" if "train" in task.splits else None)
        if train_name is None:
            raise ConfigError(f"task {name!r} has no train split; name one (splits: {sorted(task.splits)})")
        dev_name = dev_name or config.dev_split
        if config.dev_from_train is not None:
            if dev_name not in (None, NONE):
                raise ConfigError(
                    f"task {name!r}: dev split {dev_name!r} and {flag_name('dev_from_train')} "
                    f"{config.dev_from_train} both name a dev split; pass one of them"
                )
            dev_name = None  # read_task_data holds dev out of train
        else:
            dev_name = choose_split(task, data_dir, dev_name, DEV_SPLITS, notes)
        if config.is_multitask and config.test_split is None:
            test_name = (
                None  # MPT-2 pre-trains: test is scored only when asked for (the transfer runs score it)
            )
        else:
            test_name = choose_split(task, data_dir, config.test_split, ("test",), notes)
        plans.append(TaskPlan(name, task, data_dir, train_name, dev_name, test_name, options, notes))
    return plans


def _check_multitask(config: TrainConfig, names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks must be distinct; got {names}")
    unknown = [name for name in names if name not in list_tasks()]
    if unknown:
        raise ConfigError(f"unknown tasks {unknown}; `ptuning tasks` lists the known ones")
    strays = sorted((set(config.task_data) | set(config.task_splits)) - set(names))
    if strays:
        raise ConfigError(f"--task-data/--task-split name tasks {strays} that are not in --tasks")
    missing = [name for name in names if name not in config.task_data and not config.data_dir]
    if missing:
        raise ConfigError(
            f"no data folder for tasks {missing}: give --task-data {missing[0]}=DIR (one per task) or --data-dir"
        )
    method = Method(config.method)
    if not method.uses_prefix or not method.freezes_backbone:
        raise ConfigError(
            f"multi-task prompt pre-training shares a prefix; method must be ptuning-v2, prefix-mlp or "
            f"prompt-tuning, got {config.method!r}"
        )
    heads = {get_task(name).head for name in names}
    if HeadKind.CAUSAL_LM in heads and heads != {HeadKind.CAUSAL_LM}:
        raise ConfigError("causal-lm tasks cannot share a prefix with encoder tasks in one run")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # the heads a batch does not use would stall DDP's gradient reduction
        raise ConfigError("multi-task training runs in one process; launch it without accelerate/torchrun")


def _data_dir(config: TrainConfig, name: str) -> str:
    if not config.is_multitask:
        return config.data_dir
    return config.task_data.get(name) or str(Path(config.data_dir) / name)


def _own_splits(config: TrainConfig, name: str) -> tuple[str | None, str | None]:
    """A task's TRAIN[:DEV] from --task-split, if given."""
    train_split, _, dev_split = config.task_splits.get(name, "").partition(":")
    return train_split or None, dev_split or None


# ============================================================================================ 2. read
def read_task_data(plan: TaskPlan, config: TrainConfig, say: Any = print) -> TaskData:
    """A task's splits as examples, train first (it may fix the task's label set); tokenized later, once the
    model's tokenizer is loaded. With ``dev_from_train`` a seeded share of train becomes dev before the sample
    limits apply."""
    task, notes = plan.task, list(plan.notes)
    train = read_split(task, plan.data_dir, plan.train_split)
    held_out: dict[str, Any] | None = None
    dev: Split | None = None
    if config.dev_from_train is not None:
        train, dev, held_out = hold_out(train, config.dev_from_train, DEV_FROM_TRAIN_SEED)
    elif plan.dev_split:
        dev = read_split(task, plan.data_dir, plan.dev_split)
    test = read_split(task, plan.data_dir, plan.test_split) if plan.test_split else None
    train = keep_first(train, config.max_train_samples)
    dev = keep_first(dev, config.max_eval_samples) if dev else None
    test = keep_first(test, config.max_eval_samples) if test else None
    if test is not None and test.report.unlabelled == len(test.examples):
        say(f"test split {plan.test_split!r} is unlabelled: not scored")
        notes.append(f"test split {plan.test_split!r} is unlabelled: not scored")
        test = None
    data_plan = {
        "data": plan.data_dir,
        "train": train.name,
        "dev": dev.name if dev else None,
        "test": test.name if test else None,
        "dev_from_train": held_out,
        "notes": notes,
    }
    return TaskData(plan, train, dev, test, data_plan)


def load_split(task: Task, config: TrainConfig, tokenizer: Any, split: str, limit: int | None) -> Split:
    """Read and tokenize one split (what benchmarks and tests use)."""
    return featurize_split(
        task, read_split(task, config.data_dir, split, limit), tokenizer, config.max_length
    )


# ============================================================================================ 3. model
def build_model(config: TrainConfig, task: Task) -> tuple[PromptModel, Any]:
    """The model of a single-task run (what benchmarks and tests use)."""
    return build_prompt_model(config, [task])


def build_prompt_model(config: TrainConfig, tasks: list[Task]) -> tuple[PromptModel, Any]:
    """Backbone + prefix + a head per task; several tasks share one prefix (MPT-2)."""
    if config.compile and config.shard_backbone:  # FSDP2's per-layer hooks are not what compile was tested on
        raise ConfigError("--compile and --shard-backbone cannot be combined; drop one of them")
    causal = all(task.head in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM) for task in tasks)  # an LM head
    backbone, tokenizer = load_backbone(
        config.model,
        causal_lm=causal,
        attn_implementation=config.attn_implementation,
        dtype=BACKBONE_DTYPES[config.backbone_dtype],
        quantization=config.backbone_quantization,  # bitsandbytes on CUDA (checked before loading)
    )
    model = PromptModel(backbone, Method(config.method), config.prefix_config(), config.head_dropout)
    shared = SHARED_PREFIX if config.is_multitask else None
    for task in tasks:
        model.add_task(task.name, HeadSpec(task.head, task.label_names, config.pooling), prefix_name=shared)
    if config.init_prefix_from:
        init_prefix(model, tasks[0].name, config.init_prefix_from)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if config.compile:
        compile_backbone(model)
    return model, tokenizer


def init_prefix(model: PromptModel, task: str, checkpoint_dir: str) -> None:
    """Start from a trained prefix (e.g. multi-task pre-training); the head stays new."""
    source = load_checkpoint(checkpoint_dir, backbone=model.backbone, prefix_only=True)
    names = set(source.prefixes)
    if len(names) != 1:
        raise CheckpointError(
            f"{checkpoint_dir} holds prefixes {sorted(names)}; --init-prefix-from needs exactly one"
        )
    donor = source.prefixes[names.pop()]
    target = model.prefixes[model.task_prefix[task]]
    if type(donor) is not type(target) or donor.prefix_length != target.prefix_length:
        raise CheckpointError(
            f"{checkpoint_dir}: its prefix ({donor.prefix_length} slots) does not fit this run's"
        )
    target.load_state_dict(donor.state_dict())


def evaluate(
    model: PromptModel, task: Task, split: Split, tokenizer: Any, config: TrainConfig
) -> dict[str, float]:
    if is_generative(task):  # causal-LM tasks are scored on generated texts (ptuning.generation)
        outputs = generate_task_outputs(task, model, tokenizer, split.features, config.eval_batch_size)
    else:
        outputs = predict_outputs(
            model,
            task.name,
            split.features,
            tokenizer.pad_token_id,
            config.eval_batch_size,
            pack_length=config.max_length if config.pack_sequences else None,
        )
    return task.score(split.examples, split.features, outputs)


# ============================================================================================ 4. train
class Trainer:
    """One schedule of micro-batches, the optimizer and what is kept of the run (history, best, state)."""

    def __init__(
        self,
        config: TrainConfig,
        accelerator: Accelerator,
        model: PromptModel,
        tokenizer: Any,
        data: list[TaskData],
        output_dir: Path,
    ) -> None:
        self.config, self.accelerator, self.tokenizer, self.output_dir = (
            config,
            accelerator,
            tokenizer,
            output_dir,
        )
        self.data = {item.task.name: item for item in data}
        self.single = not config.is_multitask
        self.report = model.trainable_parameters()
        label = self._names[0] if self.single else f"MPT-2 {'+'.join(self._names)}"
        accelerator.print(f"{label} · {config.method} · {config.model}: {self.report}")
        self._plan_schedule()
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(config.warmup_ratio * self.total_updates), self.total_updates
        )
        self.progress: dict[str, Any] = {
            "micro": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "update": 0,
            "best": None,
            "best_epoch": None,
            "best_update": None,
            "history": [],
            "losses": {name: [] for name in self._names},
            "last_loss": None,
            "evaluated_update": None,
        }
        if config.resume:
            self._resume(model)
        # A sharded backbone is already placed and split (train()); its prefixes and heads are replicated
        # with their gradients averaged in _step, so the model is not wrapped in DDP: only the optimizer
        # is prepared (fp16 loss scaling), and autocast is applied in _step.
        self.sharded = config.shard_backbone
        if self.sharded:
            self.model, self.optimizer = model, accelerator.prepare(self.optimizer)
        else:
            self.model, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.unwrapped: PromptModel = accelerator.unwrap_model(self.model)
        self.writer = tensorboard_writer(output_dir, config) if accelerator.is_main_process else None
        self.seen_examples, self.train_seconds = 0, 0.0

    @property
    def _names(self) -> list[str]:
        return list(self.data)

    # ----------------------------------------------------------------------------------- schedule
    def _plan_schedule(self) -> None:
        """How many micro-batches and updates, and which batch comes when.

        An accumulation window never spans the end of a nominal epoch (the epoch's last micro-batches make a
        shorter window), so a run updates ceil(epoch_batches / accumulation) times per epoch.
        """
        config = self.config
        lengths = {name: [feature_length(f) for f in item.train.features] for name, item in self.data.items()}
        self.sizes = {name: len(values) for name, values in lengths.items()}
        self.probabilities = task_probabilities(self.sizes, config.sampling, config.temperature)
        self.epoch_steps = sum(math.ceil(size / config.batch_size) for size in self.sizes.values())
        accumulation = config.gradient_accumulation_steps
        updates_per_epoch = math.ceil(self.epoch_steps / accumulation)
        self.total_updates = math.ceil(updates_per_epoch * config.epochs)
        if config.max_steps:
            self.total_updates = min(self.total_updates, config.max_steps)
        full_epochs, rest = divmod(self.total_updates, updates_per_epoch)
        self.total_micro = full_epochs * self.epoch_steps + min(rest * accumulation, self.epoch_steps)
        self.schedule = mixed_schedule(
            lengths,
            self.probabilities,
            self.total_micro,
            config.batch_size,
            config.seed,
            config.group_by_length,
            spread_seeds=config.is_multitask,
        )
        self.counts = apportion(self.probabilities, self.total_micro)
        if not self.single:
            self.accelerator.print(
                "mixing: "
                + ", ".join(
                    f"{n} n={self.sizes[n]} p={self.probabilities[n]:.3f} batches={self.counts[n]}"
                    for n in self._names
                )
            )

    def _closes_window(self, micro: int) -> bool:
        """Whether micro-batch number ``micro`` (1-based) ends an accumulation window (an optimizer update)."""
        in_epoch = (micro - 1) % self.epoch_steps + 1
        accumulation = self.config.gradient_accumulation_steps
        return in_epoch % accumulation == 0 or in_epoch == self.epoch_steps or micro == self.total_micro

    # ----------------------------------------------------------------------------------- the loop
    def run(self) -> None:
        self.model.train()
        start = self.progress["micro"]
        with tqdm(
            total=self.total_micro,
            initial=start,
            desc="MPT-2" if not self.single else "train",
            disable=not self.accelerator.is_main_process,
        ) as bar:  # closed (its line ended) before any error is printed
            for micro in range(start + 1, self.total_micro + 1):
                name, indices = self.schedule[micro - 1]
                loss = self._step(name, indices, sync=self._closes_window(micro))
                self._advance(micro, name, loss)
                bar.update(1)
                bar.set_postfix(**({} if self.single else {"task": name}), loss=f"{loss:.4f}")
        if self.progress.get("evaluated_update") != self.progress["update"]:
            self._evaluate()  # a resumed run that had finished its batches but not its last evaluation
            self._save_state()
        self.accelerator.wait_for_everyone()

    def _step(self, name: str, indices: list[int], sync: bool) -> float:
        """Forward and backward of this process's share of one global batch; an optimizer update if ``sync``."""
        accelerator = self.accelerator
        shards, weights = shard_batches([indices], accelerator.process_index, accelerator.num_processes)
        features = self.data[name].train.features
        batch = self._batch(name, [features[i] for i in shards[0]])
        tick = time.perf_counter()
        # DDP averages gradients across processes only when a window closes
        quiet = accelerator.no_sync(self.model) if not sync else contextlib.nullcontext()
        autocast = accelerator.autocast() if self.sharded else contextlib.nullcontext()
        with quiet:
            with autocast:
                loss = self.model(**batch, task=name).loss
            value = self._global_loss(loss.detach() * weights[0])
            if not math.isfinite(value):
                self._diverged(f"the {name} training loss is {value}")
            accelerator.backward(loss * weights[0])  # accelerate divides by the accumulation steps
        if sync:
            if self.sharded:  # what DDP's reducer does otherwise: the global batch's mean gradient
                average_replicated_gradients(self.unwrapped)
            try:
                self.optimizer.step()
            except RuntimeError as error:  # e.g. a step size beyond float32 range
                if "overflow" not in str(error):
                    raise
                self._diverged(f"the optimizer step overflowed ({error})")
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.train_seconds += time.perf_counter() - tick
        self.seen_examples += len(indices)
        return value

    def _batch(self, name: str, chosen: list[dict[str, Any]]) -> dict[str, Any]:
        """Model inputs of one micro-batch on the device: padded rows, or packed ones (--pack-sequences)."""
        device, pad = self.accelerator.device, self.tokenizer.pad_token_id
        if self.config.pack_sequences:
            kind = self.unwrapped.head_specs[name].kind
            packed = pack_features(chosen, self.config.max_length, pad).to(device)
            return {"packed": packed, "labels": segment_labels(chosen, kind).to(device)}
        return {key: value.to(device) for key, value in collate(chosen, pad).items()}

    def _global_loss(self, weighted: torch.Tensor) -> float:
        """The global batch's mean loss from each process's weighted share (shard_batches' weights make the
        shares' sum over processes equal to ``world`` times the global mean): the same number on every process,
        so the history matches one process and every process sees a divergence alike."""
        if self.accelerator.num_processes == 1:
            return float(weighted)
        total = self.accelerator.reduce(weighted.float().reshape(1), reduction="sum")
        return float(total) / self.accelerator.num_processes

    def _advance(self, micro: int, name: str, loss: float) -> None:
        """Book-keeping after micro-batch ``micro``: progress, logs, evaluation, saved state."""
        config, progress = self.config, self.progress
        progress["micro"] = micro
        progress["epoch"], progress["batch_in_epoch"] = divmod(micro, self.epoch_steps)
        progress["last_loss"] = loss
        progress["losses"][name].append(loss)
        sync = self._closes_window(micro)
        if sync:
            progress["update"] += 1
            if self.writer is not None:
                tag = "train/loss" if self.single else f"train/loss/{name}"
                self.writer.add_scalar(tag, loss, progress["update"])
                self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], progress["update"])
        update = progress["update"]
        epoch_end = micro % self.epoch_steps == 0
        last = micro == self.total_micro
        every_eval, every_save = config.eval_every_steps, config.save_every_steps
        if (sync and every_eval and update % every_eval == 0) or (epoch_end and not every_eval) or last:
            self._evaluate()
        if (sync and every_save and update % every_save == 0) or epoch_end or last:
            self._save_state()

    # ----------------------------------------------------------------------------------- evaluation
    def _evaluate(self) -> None:
        """Score every task's dev (and test) split; save the checkpoint if the dev score improved."""
        progress = self.progress
        progress["evaluated_update"] = progress["update"]  # on every process: they decide alike what runs
        scores = None
        if self.sharded:  # every process takes part in every forward (the layers' all-gathers)
            scores = {name: self._score(item) for name, item in self.data.items()}
            reshard_backbone(self.unwrapped)  # before rank 0 alone reads state_dict() (it would reshard)
        if self.accelerator.is_main_process:
            self._check_finite_weights()
            epoch = progress["micro"] / self.epoch_steps
            if scores is None:
                scores = {name: self._score(item) for name, item in self.data.items()}
            entry = self._single_entry(epoch, scores) if self.single else self._multi_entry(epoch, scores)
            progress["history"].append(entry)
            progress["losses"] = {name: [] for name in self._names}
            score = entry["mean_primary"] if not self.single else entry.get("dev", {}).get(self._primary)
            if progress["best"] is None or (score is not None and score > progress["best"]):
                progress["best"], progress["best_epoch"], progress["best_update"] = (
                    score,
                    epoch,
                    entry["update"],
                )
                self._save_best(entry)
            self._log_scores(entry, epoch, score)
        self.accelerator.wait_for_everyone()

    def _score(self, item: TaskData) -> dict[str, dict[str, float]]:
        return {
            role: evaluate(self.unwrapped, item.task, split, self.tokenizer, self.config)
            for role, split in (("dev", item.dev), ("test", item.test))
            if split is not None
        }

    @property
    def _primary(self) -> str:
        return self.data[self._names[0]].task.primary_metric

    def _single_entry(self, epoch: float, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
        entry: dict[str, Any] = {"epoch": epoch, "update": self.progress["update"]}
        entry.update(scores[self._names[0]])
        entry["train_loss"] = self.progress["last_loss"]
        return entry

    def _multi_entry(self, epoch: float, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "update": self.progress["update"],
            "epoch": epoch,
            "dev": {name: s["dev"] for name, s in scores.items() if "dev" in s},
            "train_loss": {name: _mean(values) for name, values in self.progress["losses"].items()},
        }
        tests = {name: s["test"] for name, s in scores.items() if "test" in s}
        if tests:
            entry["test"] = tests
        primaries = [entry["dev"][name].get(self.data[name].task.primary_metric) for name in entry["dev"]]
        primaries = [p for p in primaries if p is not None]
        entry["mean_primary"] = _mean(primaries)
        return entry

    def _save_best(self, entry: dict[str, Any]) -> None:
        extra: dict[str, Any] = {"dev": entry.get("dev")}
        if not self.single:
            extra["mpt2"] = {**_mixing(self.config, self.data), "probabilities": self.probabilities}
        save_checkpoint(
            self.unwrapped,
            self.output_dir / BEST_DIR,
            {n: n for n in self._names},
            extra,
            task_options={n: self.data[n].plan.options for n in self._names},  # eval/predict/serve rebuild
            max_length=self.config.max_length,
        )

    def _log_scores(self, entry: dict[str, Any], epoch: float, score: float | None) -> None:
        if self.writer is not None:
            for split in ("dev", "test"):
                for key, values in entry.get(split, {}).items():
                    if isinstance(values, dict):  # multi-task: task -> metrics
                        for metric, value in values.items():
                            self.writer.add_scalar(f"{split}/{key}/{metric}", value, entry["update"])
                    else:
                        self.writer.add_scalar(f"{split}/{key}", values, entry["update"])
        if self.single:
            self.accelerator.print(f"epoch {epoch:.2f}: dev {entry.get('dev')} test {entry.get('test')}")
        else:
            self.accelerator.print(f"update {entry['update']}: mean dev {score} {entry['dev']}")

    # ----------------------------------------------------------------------------------- finite numbers
    def _check_finite_weights(self) -> None:
        for name, parameter in self.unwrapped.named_parameters():
            if parameter.requires_grad and not bool(torch.isfinite(parameter).all()):
                self._diverged(f"the trained weight {name} is no longer finite")

    def _diverged(self, what: str) -> None:
        best = self.progress["best_update"]
        kept = (
            f"the best checkpoint so far (update {best}) is kept" if best is not None else "nothing was saved"
        )
        raise TrainingDivergedError(
            f"training diverged at update {self.progress['update'] + 1}: {what}; {kept}. Lower --learning-rate "
            f"(now {self.config.learning_rate:g}) or check the data"
        )

    # ----------------------------------------------------------------------------------- resumable state
    def _save_state(self) -> None:
        """Replace OUTPUT_DIR/training_state (rank 0 writes; every rank contributes its RNG states)."""
        accelerator = self.accelerator
        rng = rng_states(accelerator)
        if self.sharded:
            reshard_backbone(self.unwrapped)  # see reshard_backbone: rank 0 alone reads state_dict() below
        if accelerator.is_main_process:
            self._check_finite_weights()
            model = self.unwrapped
            state = {
                k: v
                for k, v in model.state_dict().items()
                if k.startswith(("prefixes.", "heads.")) or not model.method.freezes_backbone
            }
            save_training_state(
                self.output_dir, state, self.optimizer, self.scheduler, dict(self.progress), rng
            )
        accelerator.wait_for_everyone()

    def _resume(self, model: PromptModel) -> None:
        restored = restore_training(
            self.output_dir,
            model,
            self.optimizer,
            self.scheduler,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        if restored is None:
            return
        restored.setdefault(
            "micro", restored.get("epoch", 0) * self.epoch_steps + restored.get("batch_in_epoch", 0)
        )
        restored.setdefault("losses", {})
        for name in self._names:
            restored["losses"].setdefault(name, [])
        for key in ("best_epoch", "best_update", "last_loss"):
            restored.setdefault(key, None)
        history = restored.get("history") or [{}]
        restored.setdefault("evaluated_update", history[-1].get("update"))
        self.progress = restored
        self.accelerator.print(f"resumed after {restored['micro']} of {self.total_micro} batches")

    # ----------------------------------------------------------------------------------- summary
    def summary(self, data_report: dict[str, Any], wall: float) -> dict[str, Any]:
        progress, report, config = self.progress, self.report, self.config
        best = next((h for h in progress["history"] if h["update"] == progress["best_update"]), {})
        common = {
            "method": config.method,
            "model": config.model,
            "seed": config.seed,
            "trainable_params": report.trainable,
            "total_params": report.total,
        }
        timing = {
            "updates": progress["update"],
            "train_examples_per_second": round(self.seen_examples / self.train_seconds, 2)
            if self.train_seconds
            else None,
            "wall_seconds": round(wall, 1),
            "checkpoint": str(self.output_dir / BEST_DIR),
            "data": data_report,
            "history": progress["history"],
        }
        if self.single:
            return {
                "task": self._names[0],
                **common,
                "trainable_percent": round(report.percent, 4),
                "primary_metric": self._primary,
                "best_epoch": progress["best_epoch"],
                "dev": best.get("dev"),
                "test": best.get("test"),
                **timing,
            }
        return {
            "tasks": self._names,
            **common,
            "sampling": config.sampling,
            "temperature": config.temperature if config.sampling == "temperature" else None,
            "train_sizes": self.sizes,
            "probabilities": self.probabilities,
            "batches": self.counts,
            "best_update": progress["best_update"],
            "dev": best.get("dev"),
            "test": best.get("test"),
            "mean_primary": best.get("mean_primary"),
            **timing,
        }

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def restore_training(
    output_dir: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0, world: int = 1
) -> dict[str, Any] | None:
    """Load the saved model, optimizer, scheduler and RNG states; the saved progress, or None if none."""
    resumed = load_training_state(output_dir)
    if resumed is None:
        return None
    model_state, optimizer_state, meta = resumed
    model.load_state_dict(model_state, strict=False)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(meta["scheduler"])
    restore_rng(meta, rank, world)
    return meta["progress"]


# ============================================================================================ helpers
def _cpu_processes() -> bool:
    """True when launched as several processes (torchrun) on a machine without GPU: accelerate then forms a
    gloo group only if told cpu=True; otherwise every process would silently train alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _shard_batches(batches: list[list[int]], rank: int, world: int) -> tuple[list[list[int]], list[float]]:
    return shard_batches(batches, rank, world)


def _mixing(config: TrainConfig, data: dict[str, TaskData]) -> dict[str, Any]:
    return {
        "tasks": list(data),
        "data_dirs": {name: item.plan.data_dir for name, item in data.items()},
        "sampling": config.sampling,
        "temperature": config.temperature,
    }


def _run_config(config: TrainConfig, plans: list[TaskPlan]) -> dict[str, Any]:
    """What config.json records: the options, and for MPT-2 the resolved folders and splits."""
    options = config.to_dict()
    if config.is_multitask:
        options["multitask"] = {
            "tasks": [plan.name for plan in plans],
            "data_dirs": {plan.name: plan.data_dir for plan in plans},
            "sampling": config.sampling,
            "temperature": config.temperature,
            "splits": {plan.name: [plan.train_split, plan.dev_split] for plan in plans},
        }
    return options


def _data_plan(config: TrainConfig, data: list[TaskData]) -> dict[str, Any]:
    """summary.json's data_plan: which splits each task read, dev held out of train, the checkpoint kept.
    A single-task run has one plan; a multi-task run one per task."""
    if not any(item.dev is not None for item in data):
        kept = "last evaluation (no dev split)"
    elif config.is_multitask:
        kept = "best mean of the tasks' dev primary metrics"
    else:
        kept = f"best dev {data[0].task.primary_metric}"
    plans = {item.task.name: {**item.data_plan, "checkpoint": kept} for item in data}
    return plans if config.is_multitask else plans[data[0].task.name]


def _data_report(config: TrainConfig, data: list[TaskData]) -> dict[str, Any]:
    if config.is_multitask:
        return {f"{item.task.name}/{s.name}": report_dict(s.report) for item in data for s in item.splits}
    return {s.name: report_dict(s.report) for s in data[0].splits}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def tensorboard_writer(output_dir: Path, config: TrainConfig):
    if not config.log_tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: logging is optional
        return None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def report_dict(report: DataReport) -> dict[str, Any]:
    return {
        "examples": report.examples,
        "skipped": report.skipped,
        "unlabelled": report.unlabelled,
        "truncated": report.truncated,
        "notes": report.notes,
    }
