"""The training loop: accelerate for devices, processes and precision; ptuning for everything P-tuning.

Why accelerate rather than HF Trainer (docs/ARCHITECTURE.md): our model is a plain nn.Module whose
checkpoints are prompt-only safetensors, resuming must not unpickle anything, and evaluation is the task's
own decoding + metric. A short explicit loop over ``Accelerator`` keeps all of that visible while
``accelerate launch`` / ``torchrun`` still give DDP, multi-node, DeepSpeed and FSDP without code changes.
"""

from __future__ import annotations

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
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ptuning.core.config import Method
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.base import DataReport, Task
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.tasks.registry import get_task
from ptuning.training.config import TrainConfig
from ptuning.training.data import Split, featurize_split, keep_first, read_run_data, read_split
from ptuning.training.inference import feature_length, predict_outputs
from ptuning.training.state import load_training_state, restore_rng, save_training_state

logger = logging.getLogger(__name__)
BEST_DIR = "checkpoint"  # the best-dev prompt checkpoint inside output_dir


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def data_split_name(task: Task, requested: str | None, candidates: tuple[str, ...]) -> str | None:
    if requested == "none":  # [data] the split is turned off (multi-task training picks its splits here)
        return None
    if requested:
        return requested
    return next((name for name in candidates if name in task.splits), None)


def load_split(task: Task, config: TrainConfig, tokenizer: Any, split: str, limit: int | None) -> Split:
    """One split read, cut to ``limit`` examples and featurized (multi-task training reads its splits so)."""
    read = keep_first(read_split(task, config.data_dir, split), limit)  # [data]
    return featurize_split(task, read, tokenizer, config.max_length)


def build_model(config: TrainConfig, task: Task) -> tuple[PromptModel, Any]:
    causal = task.head is HeadKind.CAUSAL_LM
    backbone, tokenizer = load_backbone(
        config.model, causal_lm=causal, attn_implementation=config.attn_implementation
    )
    model = PromptModel(backbone, Method(config.method), config.prefix_config(), config.head_dropout)
    model.add_task(task.name, HeadSpec(task.head, task.label_names))
    if config.init_prefix_from:
        init_prefix(model, task.name, config.init_prefix_from)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model, tokenizer


def restore_training(output_dir: Path, model: torch.nn.Module, optimizer, scheduler) -> dict[str, Any] | None:
    """Load the saved model, optimizer, scheduler and RNG states; the saved progress, or None if none."""
    resumed = load_training_state(output_dir)
    if resumed is None:
        return None
    model_state, optimizer_state, meta = resumed
    model.load_state_dict(model_state, strict=False)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(meta["scheduler"])
    restore_rng(meta)
    return meta["progress"]


def init_prefix(model: PromptModel, task: str, checkpoint_dir: str) -> None:
    """Start from a trained prefix (e.g. multi-task pre-training); the head stays new."""
    source = load_checkpoint(checkpoint_dir, backbone=model.backbone)
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
    if hasattr(task, "generate_outputs"):  # generative tasks decode with model.generate
        outputs = task.generate_outputs(model, tokenizer, split.features, config.eval_batch_size)
    else:
        outputs = predict_outputs(
            model, task.name, split.features, tokenizer.pad_token_id, config.eval_batch_size
        )
    return task.score(split.examples, split.features, outputs)


def train(config: TrainConfig) -> RunResult:
    """Train, evaluate every epoch (or N steps), keep the best-dev checkpoint, report test at best dev."""
    started = time.perf_counter()
    # batch_size is global: each process takes its share of every batch (see _shard_batches). accelerate's own
    # split_batches is not used: since 1.x it is ignored unless set through DataLoaderConfiguration, and it
    # drops or pads the partial batches that length grouping makes.
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        cpu=_cpu_processes(),
    )
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    task = get_task(config.task, **config.task_options)  # options are the task's constructor keywords
    # [data] read every split before building the model: a task may learn its label set from train
    run_data = read_run_data(task, config)
    model, tokenizer = build_model(config, task)
    report = model.trainable_parameters()
    accelerator.print(f"{task.name} · {config.method} · {config.model}: {report}")

    train_split, dev_split, test_split = (
        featurize_split(task, read, tokenizer, config.max_length) if read is not None else None
        for read in (run_data.train, run_data.dev, run_data.test)
    )
    # [/data]
    if test_split is not None and test_split.report.unlabelled == len(test_split.examples):
        accelerator.print(f"test split {test_split.name!r} is unlabelled: not scored")
        test_split = None
    data_report = {
        s.name: report_dict(s.report) for s in (train_split, dev_split, test_split) if s is not None
    }
    for name, counts in data_report.items():
        accelerator.print(f"data {name}: {counts}")

    lengths = [feature_length(f) for f in train_split.features]
    updates_per_epoch = math.ceil(
        math.ceil(len(lengths) / config.batch_size) / config.gradient_accumulation_steps
    )
    total_updates = math.ceil(updates_per_epoch * config.epochs)
    if config.max_steps:
        total_updates = min(total_updates, config.max_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_updates), total_updates
    )

    progress = {"epoch": 0, "batch_in_epoch": 0, "update": 0, "best": None, "best_epoch": None, "history": []}
    if config.resume and (restored := restore_training(output_dir, model, optimizer, scheduler)) is not None:
        progress = restored
        accelerator.print(f"resumed at epoch {progress['epoch']} batch {progress['batch_in_epoch']}")

    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: PromptModel = accelerator.unwrap_model(model)
    writer = tensorboard_writer(output_dir, config) if accelerator.is_main_process else None
    pad_id = tokenizer.pad_token_id
    seen_examples = 0
    train_seconds = 0.0
    epochs = math.ceil(config.epochs)

    def run_eval(epoch: float) -> bool:
        """Evaluate on dev (and test), save the checkpoint if dev improved; True if it did."""
        if not accelerator.is_main_process:
            return False
        entry: dict[str, Any] = {"epoch": epoch, "update": progress["update"]}
        if dev_split is not None:
            entry["dev"] = evaluate(unwrapped, task, dev_split, tokenizer, config)
        if test_split is not None:
            entry["test"] = evaluate(unwrapped, task, test_split, tokenizer, config)
        entry["train_loss"] = progress.get("last_loss")
        progress["history"].append(entry)
        score = entry.get("dev", {}).get(task.primary_metric)
        improved = progress["best"] is None or (score is not None and score > progress["best"])
        if improved:
            progress["best"], progress["best_epoch"] = score, epoch
            save_checkpoint(
                unwrapped, output_dir / BEST_DIR, {task.name: task.name}, {"dev": entry.get("dev")}
            )
        if writer is not None:
            for split in ("dev", "test"):
                for metric, value in entry.get(split, {}).items():
                    writer.add_scalar(f"{split}/{metric}", value, progress["update"])
        accelerator.print(f"epoch {epoch:.2f}: dev {entry.get('dev')} test {entry.get('test')}")
        return improved

    model.train()
    for epoch in range(progress["epoch"], epochs):
        order = (
            length_grouped_batches(lengths, config.batch_size, seed=config.seed + epoch)
            if config.group_by_length
            else shuffled_batches(len(lengths), config.batch_size, config.seed + epoch)
        )
        skip = progress["batch_in_epoch"] if epoch == progress["epoch"] else 0
        shards, weights = _shard_batches(order[skip:], accelerator.process_index, accelerator.num_processes)
        loader = DataLoader(
            train_split.features,
            batch_sampler=shards,
            collate_fn=lambda batch: collate(batch, pad_id),
            # Its own generator: iterating a DataLoader otherwise draws from the global RNG, so a run resumed
            # mid-epoch would see different dropout masks than the uninterrupted run.
            generator=torch.Generator(),
        )
        # already sharded: only device placement and end-of-epoch tracking (for accumulation) are wanted
        loader = prepare_data_loader(
            loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True
        )
        bar = tqdm(
            total=len(order),
            initial=skip,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not accelerator.is_main_process,
        )
        for batch_index, batch in enumerate(loader, start=skip):
            tick = time.perf_counter()
            with accelerator.accumulate(model):
                loss = model(**batch, task=task.name).loss
                accelerator.backward(loss * weights[batch_index - skip])
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            train_seconds += time.perf_counter() - tick
            seen_examples += len(batch["input_ids"]) * accelerator.num_processes
            progress["last_loss"] = float(loss.detach())
            progress["batch_in_epoch"] = batch_index + 1
            bar.update(1)
            bar.set_postfix(loss=f"{progress['last_loss']:.4f}")
            if accelerator.sync_gradients:
                progress["update"] += 1
                if writer is not None:
                    writer.add_scalar("train/loss", progress["last_loss"], progress["update"])
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], progress["update"])
                if config.eval_every_steps and progress["update"] % config.eval_every_steps == 0:
                    run_eval(epoch + (batch_index + 1) / len(order))
                if config.save_every_steps and progress["update"] % config.save_every_steps == 0:
                    save_state(accelerator, unwrapped, optimizer, scheduler, progress, output_dir, epoch)
                if progress["update"] >= total_updates:
                    break
        bar.close()
        done = epoch + progress["batch_in_epoch"] / max(len(order), 1)  # [data] a max_steps stop: a fraction
        progress["epoch"], progress["batch_in_epoch"] = epoch + 1, 0
        if not config.eval_every_steps:
            run_eval(done)
        save_state(accelerator, unwrapped, optimizer, scheduler, progress, output_dir, epoch + 1)
        if progress["update"] >= total_updates:
            break

    accelerator.wait_for_everyone()
    wall = time.perf_counter() - started
    summary = _summary(
        config, task, report, progress, data_report, seen_examples, train_seconds, wall, output_dir
    )
    summary["data_plan"] = run_data.plan  # [data] which splits, dev held out of train, checkpoint kept
    if accelerator.is_main_process:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if writer is not None:
        writer.close()
    return RunResult(summary, progress["history"])


def save_state(accelerator, model, optimizer, scheduler, progress, output_dir, epoch) -> None:
    if accelerator.is_main_process:
        state = {
            k: v
            for k, v in model.state_dict().items()
            if k.startswith(("prefixes.", "heads.")) or not model.method.freezes_backbone
        }
        save_training_state(output_dir, state, optimizer, scheduler, dict(progress, epoch=progress["epoch"]))
    accelerator.wait_for_everyone()


def _cpu_processes() -> bool:
    """True when launched as several processes (torchrun) on a machine without GPU: accelerate then forms a
    gloo group only if told cpu=True; otherwise every process would silently train alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _shard_batches(batches: list[list[int]], rank: int, world: int) -> tuple[list[list[int]], list[float]]:
    """This process's share of every global batch, and the weight that makes DDP's gradient average equal the
    one-process gradient of the whole batch (for losses that are means over examples).

    A share of n of the batch's N examples is weighted n * world / N; a process left without examples (a
    batch smaller than the world) runs the batch's first example with weight 0, so that every process still
    joins the gradient all-reduce.
    """
    shards, weights = [], []
    for batch in batches:
        share = batch[rank::world]
        shards.append(share or batch[:1])
        weights.append(len(share) * world / len(batch))
    return shards, weights


def shuffled_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(count).tolist()
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


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


def _summary(
    config, task, report, progress, data_report, seen, train_seconds, wall, output_dir
) -> dict[str, Any]:
    best = next((h for h in progress["history"] if h["epoch"] == progress["best_epoch"]), {})
    return {
        "task": task.name,
        "method": config.method,
        "model": config.model,
        "seed": config.seed,
        "trainable_params": report.trainable,
        "total_params": report.total,
        "trainable_percent": round(report.percent, 4),
        "primary_metric": task.primary_metric,
        "best_epoch": progress["best_epoch"],
        "dev": best.get("dev"),
        "test": best.get("test"),
        "updates": progress["update"],
        "train_examples_per_second": round(seen / train_seconds, 2) if train_seconds else None,
        "wall_seconds": round(wall, 1),
        "checkpoint": str(output_dir / BEST_DIR),
        "data": data_report,
        "history": progress["history"],
    }
