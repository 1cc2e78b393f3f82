"""A training run, for one task or several sharing a prefix (MPT-2): accelerate for devices, processes and
precision; ptuning for everything P-tuning.

A run goes: plan (which tasks, folders, splits; nothing loaded) -> checks (training/preflight.py) -> read the
splits -> build the model -> tokenize -> train (training/trainer.py: the loop, evaluation, the best-dev
checkpoint and the resumable state) -> summary.json. This module is that plan, top to bottom.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, parse_flag_from_env, set_seed
from torch import nn

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint
from ptuning.core.compilation import CompileStats, compile_backbone
from ptuning.core.config import ConfigError, Method, PrefixConfig
from ptuning.core.dropout import set_dropout
from ptuning.core.folders import RUN_LOCK, exclusive_lock, reason, write_text_whole
from ptuning.core.kinds import HeadKind
from ptuning.core.model import PromptModel
from ptuning.core.pooler import PRETRAINED_POOLER, PoolerNotFoundError, attach_pretrained_pooler, head_spec
from ptuning.core.precision import AUTO_DTYPE, emulated_bf16_note, resolve_auto
from ptuning.core.prefix import PrefixEncoder, PromptEmbedding
from ptuning.core.prefix_init import init_prefix_from_tokens
from ptuning.generation import check_generation_room, is_generative
from ptuning.tasks.base import DataError, DataReport, Task
from ptuning.tasks.registry import get_task, list_tasks
from ptuning.training.config import TrainConfig, flag_name
from ptuning.training.data import (
    DEV_FROM_TRAIN_SEED,
    DEV_SPLITS,
    NONE,
    Split,
    TaskData,
    TaskPlan,
    check_one_file_splits,
    check_train_file,
    choose_split,
    featurize_split,
    hold_out,
    keep_first,
    read_split,
)
from ptuning.training.predict import jsonable
from ptuning.training.preflight import check_run
from ptuning.training.report import CURVES_PNG, SUMMARY_MD, TENSORBOARD_DIR, read_summary
from ptuning.training.schedule import (
    shuffled_batches,  # noqa: F401 (re-exported: benchmarks and older callers import it from here)
)
from ptuning.training.sharding import shard_backbone
from ptuning.training.state import STATE_DIR, WORKING_DIR, check_resume_options, saved_progress
from ptuning.training.trainer import (
    BEST_DIR,
    Trainer,
    TrainingDivergedError,  # noqa: F401 (public here: the CLI and callers catch it from the engine)
    evaluate,  # noqa: F401 (public here: benchmarks score a split with engine.evaluate)
    mixing_record,
)

SHARED_PREFIX = "shared"  # the one prefix every task's head sits on in a multi-task run


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


# ============================================================================================ the whole run
def train(config: TrainConfig) -> RunResult:
    """Train, evaluate every epoch (or N updates), keep the best-dev checkpoint, report test at best dev.

    With ``config.tasks`` (MPT-2) one prefix is shared by every task, each with its own head, and the best
    checkpoint is the one with the best mean of the tasks' dev primary metrics.
    """
    started = time.perf_counter()
    plans = plan_tasks(config)
    check_run(config, {plan.name: plan.task.head for plan in plans})  # before anything heavy loads
    accelerator = _accelerator(config)
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    options = _run_config(config, plans)
    if config.resume:  # before config.json is rewritten: it records what the saved half was trained with
        check_resume_options(output_dir, options, accelerator.print)
    # the splits are read before the model is built: a task may learn its label set from train
    data = [read_task_data(plan, config, accelerator.print) for plan in plans]
    model, tokenizer = build_prompt_model(config, [item.task for item in data], data[0].train)
    if config.backbone_dtype == AUTO_DTYPE:
        accelerator.print(f"backbone dtype auto: {resolve_auto(AUTO_DTYPE)} on this machine")
    slow_autocast = emulated_bf16_note("--mixed-precision bf16", accelerator.device)
    if config.mixed_precision == "bf16" and slow_autocast is not None:
        accelerator.print(f"note: {slow_autocast}; --mixed-precision no trains in fp32")
    if config.pack_sequences:  # refuse before tokenizing what packing cannot reproduce (core/packing.py)
        for item in data:
            model.check_packable(item.task.name)
    if config.shard_backbone:  # before the optimizer is built (preflight checked processes and method)
        shard_backbone(model.to(accelerator.device))
        accelerator.print(f"backbone sharded layer by layer over {accelerator.num_processes} processes")
    for item in data:
        for split in item.splits:
            featurize_split(item.task, split, tokenizer, config.max_length)
        if is_generative(item.task):  # decoding's room in the position table, before any training
            for split in (item.dev, item.test):
                if split is not None:
                    check_generation_room(item.task, model, split.features)
    data_report = _data_report(config, data)
    for name, counts in data_report.items():
        accelerator.print(f"data {name}: {counts}")
    # only now that data and model have loaded: a command that fails before leaves the folder as it was
    output_dir.mkdir(parents=True, exist_ok=True)
    with claim_output_dir(output_dir, accelerator):  # before anything in it moves; released however it ends
        if accelerator.is_main_process:
            if not config.resume:
                forget_previous_run(output_dir, accelerator.print)
            elif saved_progress(output_dir) is None:  # nothing to continue: a new run; the old one is kept
                why = f"--resume found no saved {STATE_DIR} to continue"
                if not forget_previous_run(output_dir, accelerator.print, f"{why}, so a new run"):
                    accelerator.print(f"{output_dir}: {why}: training from the start")
            _write_run_file(output_dir / "config.json", json.dumps(options, indent=2) + "\n")
        trainer = Trainer(config, accelerator, model, tokenizer, data, output_dir)
        summary_path = output_dir / "summary.json"
        finished = (
            read_summary(summary_path, accelerator.print, "writing it anew") if trainer.finished else None
        )
        if finished is not None:  # --resume of a finished run: its summary (throughput, wall time) stands
            accelerator.print(f"{output_dir}: the saved run had finished; its summary.json is kept")
            trainer.close()
            return RunResult(finished, trainer.progress["history"])
        compiling = CompileStats.now()
        trainer.run()
        summary = trainer.summary(data_report, time.perf_counter() - started)
        if config.compile:
            compiled = CompileStats.now().since(compiling)
            accelerator.print(compiled)
            summary["compile"] = {"graphs": compiled.graphs, "seconds": round(compiled.seconds, 2)}
        summary["data_plan"] = _data_plan(config, data, scored=trainer.progress["best"] is not None)
        if accelerator.is_main_process:
            # strict JSON: an undefined metric (one-class stsb's correlation, nan) is null, as eval prints it
            _write_run_file(output_dir / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
        trainer.close()
    return RunResult(summary, trainer.progress["history"])


@contextlib.contextmanager
def claim_output_dir(output_dir: Path, accelerator: Accelerator) -> Iterator[None]:
    """Hold OUTPUT_DIR's lock (``RUN_LOCK``) for the run: a second run started into the same folder moved this
    one's checkpoint, state and config to previous-run while this one kept writing, so the folder ended a mix
    of both and --resume continued the wrong one. The second run is refused in one line instead.

    Rank 0 alone writes the folder, so rank 0 alone takes the lock (the ranks of one run never lock each
    other out); every rank learns from it whether it got the lock, so that all stop together rather than
    wait in a collective for a rank that raised."""
    with contextlib.ExitStack() as held:
        taken = True
        if accelerator.is_main_process:
            try:
                held.enter_context(exclusive_lock(output_dir / RUN_LOCK))
            except BlockingIOError:
                taken = False
        [taken] = broadcast_object_list([taken])
        if not taken:
            raise ConfigError(
                f"another ptuning process is training into {output_dir}; wait for it to end, or give another "
                "--output-dir"
            )
        yield


def _write_run_file(path: Path, text: str) -> None:
    """config.json or summary.json, whole; a failed write (a full disk) is one line naming the file."""
    try:
        write_text_whole(path, text)
    except OSError as error:
        raise ConfigError(f"{path}: not written ({reason(error)})") from None


# ============================================================================================ 1. plan
PREVIOUS_RUN = "previous-run"  # where a fresh run puts the files of the run that used its folder before


def forget_previous_run(output_dir: Path, say: Any = print, why: str = "a new run (not --resume)") -> bool:
    """A fresh run (no --resume, or --resume with no state to continue: ``why`` says which) in a folder that
    held another (returns whether it did): that run's config, checkpoint, resumable state, summary, report
    and loss log move to ``OUTPUT_DIR/previous-run`` (or ``previous-run-N`` beside a
    kept run: ``_previous_run_folder``), since config.json is about to describe this run. Left in place, a later --resume would continue the old
    run's weights and optimizer under this run's options, a sweep would take the old summary for this run's,
    and the report would show the old run's numbers as this one's; deleted, a new run that then failed (a
    diverging learning rate) would have destroyed a finished one."""
    names = (STATE_DIR, "summary.json", SUMMARY_MD, CURVES_PNG, TENSORBOARD_DIR, BEST_DIR, "config.json")
    stale = [output_dir / name for name in names if (output_dir / name).exists()]
    if not stale:
        return False
    kept = _previous_run_folder(output_dir)
    kept.mkdir()
    for path in stale:
        path.rename(kept / path.name)
    say(f"{output_dir}: {why}: the previous run's {', '.join(p.name for p in stale)} moved to {kept}")
    return True


def _previous_run_folder(output_dir: Path) -> Path:
    """``previous-run``, else ``previous-run-2``, ``-3``...: the first that is free or holds only an attempt that
    saved nothing (its config and logs), which is replaced. A kept run with a summary, checkpoint or state is
    never deleted: a failed retry would otherwise replace the finished run a second retry then lost."""
    for number in itertools.count(1):
        folder = output_dir / (PREVIOUS_RUN if number == 1 else f"{PREVIOUS_RUN}-{number}")
        if not folder.exists():
            return folder
        if not any((folder / name).exists() for name in ("summary.json", BEST_DIR, STATE_DIR)):
            shutil.rmtree(folder)
            return folder
    raise AssertionError("unreachable")


def plan_tasks(config: TrainConfig) -> list[TaskPlan]:
    """The run's tasks with their data folders and split names, checked; nothing is read yet."""
    names = config.task_names
    if config.is_multitask:
        _check_multitask(config, names)
    else:
        _check_single_task_maps(config)
    keyed = config.is_multitask and bool(config.task_options) and set(config.task_options) <= set(names)
    # keyed by task names, some or all of them not in this run (all: a registry task named by mistake)
    by_task = set(config.task_options) & (set(names) | set(list_tasks()))
    if config.is_multitask and not keyed and by_task:
        strays = sorted(set(config.task_options) - set(names))
        raise ConfigError(
            f"task_options is keyed by task, but {strays} {'is' if len(strays) == 1 else 'are'} not in --tasks "
            f"{names}; key every entry by one of them"
        )
    plans = []
    for name in names:
        options = config.task_options.get(name, {}) if keyed else config.task_options
        try:
            task = get_task(name, **options)  # options are the task's constructor keywords
        except (TypeError, ValueError) as error:  # an option the task does not take, or a value it refuses
            raise ConfigError(f"task_options {options} for task {name!r}: {error}") from None
        data_dir, notes = _data_dir(config, name), []
        train_name, dev_name = _own_splits(config, name)
        train_name = train_name or config.train_split or ("train" if "train" in task.splits else None)
        if train_name is None:
            raise ConfigError(f"task {name!r} has no train split; name one (splits: {sorted(task.splits)})")
        task.train_split = train_name  # its rows must be labelled; a label set is learned there
        check_train_file(task, data_dir, train_name)
        dev_name = dev_name or config.dev_split
        if config.dev_from_train is not None:
            if dev_name == NONE:  # "no dev" and "hold dev out of train" cannot both hold
                raise ConfigError(
                    f"task {name!r}: dev split 'none' (train without dev) and {flag_name('dev_from_train')} "
                    f"{config.dev_from_train} (hold out a dev share of train) contradict; pass one of them"
                )
            if dev_name is not None:
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
        check_one_file_splits(task, data_dir, train_name, {"dev": dev_name, "test": test_name})
        plans.append(TaskPlan(name, task, data_dir, train_name, dev_name, test_name, options, notes))
    return plans


def _check_single_task_maps(config: TrainConfig) -> None:
    """The multi-task options outside a --tasks run: --task-data was ignored there (the run reads --data), a
    --task-split naming another task was dropped, and --sampling / --temperature mix nothing; all said nothing."""
    mixing = [
        f"--{name} {getattr(config, name)}" for name in ("sampling", "temperature") if _set(config, name)
    ]
    if mixing:
        raise ConfigError(
            f"{' '.join(mixing)} mix the tasks of a --tasks run; a single-task run has none to mix"
        )
    if config.task_data:
        raise ConfigError(
            f"--task-data {config.task_data} names each task's folder in a --tasks run; a single-task run reads "
            "--data"
        )
    if strays := sorted(set(config.task_splits) - {config.task}):
        raise ConfigError(
            f"--task-split names tasks {strays} that this run (--task {config.task}) does not train"
        )


def _set(config: TrainConfig, name: str) -> bool:
    """Whether option ``name`` differs from its default (how a run can tell it was given)."""
    return getattr(config, name) != TrainConfig.model_fields[name].default


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
    if _set(config, "temperature") and config.sampling != "temperature":  # proportional ignores it
        raise ConfigError(
            f"--temperature {config.temperature} applies with --sampling temperature (now {config.sampling})"
        )
    method = Method(config.method)
    if not method.uses_prefix or not method.freezes_backbone:
        raise ConfigError(
            f"multi-task prompt pre-training shares a prefix; method must be ptuning-v2, prefix-mlp or "
            f"prompt-tuning, got {config.method!r}"
        )
    heads = {get_task(name).head for name in names}
    generative = heads & {HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM}
    if generative and len(heads) > 1:  # each needs its own model class (an LM head), the others none
        kind = " and ".join(sorted(generative))
        raise ConfigError(f"{kind} tasks cannot share a prefix with tasks of another kind in one run")
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
def _check_labelled(name: str, plan: TaskPlan, train: Split, dev: Split | None) -> None:
    """Refuse, before the model loads, what would fail only after training: unlabelled rows to train on (a
    task whose reader lets them through), or a dev split with no label to choose the checkpoint by."""
    if train.report.unlabelled:
        raise DataError(
            f"{name}: {train.report.unlabelled} of {len(train.examples)} examples of the train split "
            f"{plan.train_split!r} ({plan.data_dir}) have no label; a train split needs one on every row"
        )
    if dev is not None and dev.examples and dev.report.unlabelled == len(dev.examples):
        raise DataError(
            f"{name}: none of the {len(dev.examples)} examples of the dev split {dev.name!r} ({plan.data_dir}) "
            "has a label, so no checkpoint could be chosen by it; give a labelled dev split, hold one out "
            "of train (--dev-from-train 0.1), or train without one (--dev-split none)"
        )


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
    _check_labelled(task.name, plan, train, dev)
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


def build_prompt_model(
    config: TrainConfig, tasks: list[Task], train: Split | None = None
) -> tuple[PromptModel, Any]:
    """Backbone + prefix + a head per task; several tasks share one prefix (MPT-2). ``train`` (the first
    task's training split, read) gives ``--prefix-init activations`` its tokens."""
    if config.compile and config.shard_backbone:  # FSDP2's per-layer hooks are not what compile was tested on
        raise ConfigError("--compile and --shard-backbone cannot be combined; drop one of them")
    causal = all(task.head in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM) for task in tasks)  # an LM head
    backbone, tokenizer = load_backbone(
        config.model,
        causal_lm=causal,
        attn_implementation=config.attn_implementation,
        dtype=_loader_dtype(config.backbone_dtype),
        quantization=config.backbone_quantization,  # bitsandbytes on CUDA (checked before loading)
    )
    if config.backbone_dropout is not None:  # before PromptModel swaps in its dropout modules, at this rate
        set_dropout(backbone, config.backbone_dropout)
    model = PromptModel(backbone, Method(config.method), config.prefix_config(), config.head_dropout)
    shared = SHARED_PREFIX if config.is_multitask else None
    for task in tasks:
        model.add_task(task.name, head_spec(task.head, task.label_names, config.pooling), prefix_name=shared)
        if config.pooling == PRETRAINED_POOLER:
            read_through_pretrained_pooler(model, task.name, config.model)
    if config.init_prefix_from:
        init_prefix(model, tasks[0].name, config.init_prefix_from)
    if config.prefix_init == "activations":  # before compile: the capture runs the backbone eagerly
        start_prefix_from_training_tokens(model, tasks[0], train, tokenizer, config.max_length)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if config.compile:
        compile_backbone(model)
    return model, tokenizer


def _loader_dtype(name: str) -> str | None:
    """The ``load_backbone`` dtype for ``--backbone-dtype``: None for fp32, the loader's default (fp32, or the
    bf16 that a bitsandbytes-quantized backbone needs), else the resolved name."""
    resolved = resolve_auto(name)
    return None if resolved == "fp32" else resolved


def read_through_pretrained_pooler(model: PromptModel, task: str, model_name: str) -> None:
    try:
        attach_pretrained_pooler(model, task, model_name)
    except PoolerNotFoundError as error:
        raise ConfigError(f"--pooling pooler: {error}") from error


def start_prefix_from_training_tokens(
    model: PromptModel, task: Task, train: Split | None, tokenizer: Any, max_length: int
) -> None:
    """``--prefix-init activations``: the prefix starts as the backbone's keys and values for the first P
    tokens of the training examples, in file order (their inputs as the task tokenizes them, joined)."""
    flag = f"{flag_name('prefix_init')} activations"
    if train is None:
        raise ConfigError(f"{flag} needs the training split's tokens")
    wanted = model.prefix_config.prefix_length
    ids: list[int] = []
    for start in range(0, len(train.examples), 32):
        features, _ = task.featurize(train.examples[start : start + 32], tokenizer, max_length)
        for feature in features:  # a multiple-choice feature holds one row per choice: each is an input
            rows = feature["input_ids"]
            ids += [token for row in rows for token in row] if rows and isinstance(rows[0], list) else rows
        if len(ids) >= wanted:
            break
    if len(ids) < wanted:
        raise ConfigError(
            f"{flag} needs {wanted} training tokens (--prefix-length); the train split has {len(ids)}"
        )
    try:
        init_prefix_from_tokens(model, model.task_prefix[task.name], torch.tensor(ids[:wanted]))
    except ValueError as error:
        raise ConfigError(f"{flag}: {error}") from None


def init_prefix(model: PromptModel, task: str, checkpoint_dir: str) -> None:
    """Start from a trained prefix (e.g. multi-task pre-training); the head stays new.

    The donor must put its numbers where this run reads them: the same kind of prefix, length, layers and
    width; a prefix-mlp donor seeds a ptuning-v2 run through its collapsed table. Another position numbering
    (a PEFT adapter's shifted positions in a keep run) is a warning: training adapts a start. The donor model
    shares the backbone only while the prefix is copied, so that ``detach_backbone`` can still restore it.
    """
    source = load_checkpoint(checkpoint_dir, backbone=model.backbone, prefix_only=True)
    try:
        names = set(source.prefixes)
        if len(names) != 1:
            raise CheckpointError(
                f"{checkpoint_dir} holds prefixes {sorted(names)}; --init-prefix-from needs exactly one"
            )
        donor = source.prefixes[names.pop()]
        target = model.prefixes[model.task_prefix[task]]
        donor = _fitting_donor(donor, target, source.prefix_config, model.prefix_config, checkpoint_dir)
        target.load_state_dict(donor.state_dict())
    finally:
        source.detach_backbone()


def _fitting_donor(
    donor: nn.Module, target: nn.Module, given: PrefixConfig, wanted: PrefixConfig, where: str
) -> nn.Module:
    """``donor`` in the form ``target`` loads, or a CheckpointError naming what differs (there vs this run)."""
    kinds = {
        PrefixEncoder: "a deep prefix (ptuning-v2 / prefix-mlp)",
        PromptEmbedding: "input prompts (prompt-tuning)",
    }
    if type(donor) is not type(target):
        raise CheckpointError(
            f"--init-prefix-from {where}: it holds {kinds[type(donor)]}, this run trains {kinds[type(target)]}"
        )
    differences = []
    if donor.prefix_length != target.prefix_length:
        differences.append(f"prefix_length: {donor.prefix_length} there, {target.prefix_length} now")
    if isinstance(donor, PrefixEncoder):
        if donor.layer_indices != target.layer_indices:
            differences.append(
                f"prefix layers: {list(donor.layer_indices)} there, {list(target.layer_indices)} now"
            )
        if given.position_mode is not wanted.position_mode:  # a start that training adapts, so not refused
            warnings.warn(
                f"--init-prefix-from {where}: its prefix was trained with position_mode '{given.position_mode}', "
                f"this run uses '{wanted.position_mode}': it starts from keys and values learnt for other "
                f"positions (--position-mode {given.position_mode} would match them)",
                stacklevel=2,
            )
        if donor.width != target.width:
            differences.append(f"key/value width per position: {donor.width} there, {target.width} now")
        if donor.mlp is not None and target.mlp is None:
            donor = donor.collapse()  # the MLP's output is the table a ptuning-v2 run trains
        elif donor.mlp is None and target.mlp is not None:
            differences.append("reparameterization: a table there, an MLP now (a table cannot seed an MLP)")
        elif donor.mlp is not None and donor.config.mlp_hidden_size != target.config.mlp_hidden_size:
            differences.append(
                f"mlp_hidden_size: {donor.config.mlp_hidden_size} there, {target.config.mlp_hidden_size} now"
            )
    if differences:
        raise CheckpointError(
            f"--init-prefix-from {where}: its prefix does not fit this run's ({'; '.join(differences)})"
        )
    return donor


# ============================================================================================ helpers
_UNWIRED_LAUNCHES = {"ACCELERATE_USE_DEEPSPEED": "--use_deepspeed", "ACCELERATE_USE_FSDP": "--use_fsdp"}
# How long a process waits for the others in a collective: longer than any evaluation rank 0 runs alone.
PROCESS_GROUP_TIMEOUT = timedelta(hours=24)


def _accelerator(config: TrainConfig) -> Accelerator:
    """accelerate keeps one mixed-precision setting per process (``AcceleratorState`` is shared), so a second
    run in the same process with another setting (a sweep's cells, ``--seeds``, a notebook) was refused with
    "AcceleratorState has already been initialized". Each run starts from a fresh state; the process group
    (``PartialState``) is kept."""
    for variable, flag in _UNWIRED_LAUNCHES.items():
        if parse_flag_from_env(variable):  # on CPU accelerate ran it as plain DDP and said nothing
            raise ConfigError(
                f"accelerate launch {flag} is not wired into ptuning train; shard the frozen backbone with "
                "--shard-backbone (torchrun or accelerate launch --multi_gpu), or use DeepSpeed ZeRO-3 from the "
                "library (docs/CLI.md, Several processes (DDP))"
            )
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        cpu=_cpu_processes(),
        # rank 0 evaluates alone while the others wait in a barrier: torch's 30-minute default ended runs
        # whose evaluation (a large dev set, decoding on a CPU) took longer
        kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)],
    )


def _cpu_processes() -> bool:
    """True when launched as several processes (torchrun) on a machine without GPU: accelerate then forms a
    gloo group only if told cpu=True; otherwise every process would silently train alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _run_config(config: TrainConfig, plans: list[TaskPlan]) -> dict[str, Any]:
    """What config.json records: the options, and for MPT-2 the resolved folders and splits."""
    options = config.to_dict()
    # what --backbone-dtype auto stored on this machine: a --resume where it stores another dtype is refused
    options["backbone_dtype_stored"] = resolve_auto(config.backbone_dtype)
    options[WORKING_DIR] = os.getcwd()  # relative paths above are read from there when the run is resumed
    if config.is_multitask:
        options["multitask"] = {
            **mixing_record(config, plans),
            "splits": {plan.name: [plan.train_split, plan.dev_split] for plan in plans},
        }
    return options


def _data_plan(config: TrainConfig, data: list[TaskData], scored: bool) -> dict[str, Any]:
    """summary.json's data_plan: which splits each task read, dev held out of train, the checkpoint kept
    (``scored``: some evaluation's dev score was a number; with none the last one is kept).
    A single-task run has one plan; a multi-task run one per task."""
    if not any(item.dev is not None for item in data):
        kept = "last evaluation (no dev split)"
    elif not scored:
        kept = "last evaluation (no dev score was a number)"
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


def report_dict(report: DataReport) -> dict[str, Any]:
    return {
        "examples": report.examples,
        "skipped": report.skipped,
        "unlabelled": report.unlabelled,
        "truncated": report.truncated,
        **({} if report.cut_for_generation is None else {"cut_for_generation": report.cut_for_generation}),
        "notes": report.notes,
    }
