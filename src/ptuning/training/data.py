"""The data of one training run: which splits it reads, in which order, and a dev split held out of train.

Every split is read before the model is built: tasks that learn their label set from the train split
(csv-classification, pair-classification, ner-generic) know the head's classes only after reading it, and a
dev or test label unseen in train is then an error naming its file and line, never a new class. Splits are
featurized once the tokenizer is loaded.

Which splits: train is the task's train split (or ``train_split``). Dev is ``dev_split``, else a seeded share
of train when ``dev_from_train`` is set, else the task's dev file; a folder without one is an error that
names the ways forward. ``none`` turns dev or test off. ``data_dir`` may be one file: it is the train split,
and dev and test are read from it only when named explicitly (e.g. SQuAD's ``eval-articles``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptuning.core.config import ConfigError
from ptuning.tasks.base import DataError, DataReport, Features, Task
from ptuning.tasks.readers import DEV_FILE_STEMS, split_file

NONE = "none"  # dev_split / test_split value that turns the split off
DEV_CANDIDATES = ("dev", "validation", "val")
DEV_FROM_TRAIN_SEED = 0  # fixed, not the run's seed: runs with different seeds are scored on the same dev


@dataclass
class ReadSplit:
    """Examples of one split as read, before featurization."""

    name: str
    examples: list[dict[str, Any]]
    report: DataReport


@dataclass
class Split:
    """A featurized split, ready for training or evaluation."""

    name: str
    examples: list[dict[str, Any]]
    features: Features
    report: DataReport


@dataclass
class RunData:
    """The splits of a run and ``plan``: how they were chosen (stored in summary.json as ``data_plan``)."""

    train: ReadSplit
    dev: ReadSplit | None
    test: ReadSplit | None
    plan: dict[str, Any] = field(default_factory=dict)


def read_run_data(task: Task, config: Any) -> RunData:
    """Read train first (it may fix the task's label set), then dev and test; apply the sample limits.

    ``config`` is a TrainConfig (data_dir, train_split, dev_split, test_split, dev_from_train,
    max_train_samples, max_eval_samples).
    """
    one_file = Path(config.data_dir).expanduser().is_file()
    notes: list[str] = []
    train_name = config.train_split or ("train" if "train" in task.splits else None)
    if train_name is None:
        raise ConfigError(
            f"task {task.name!r} has no 'train' split; pass --train-split (splits: {sorted(task.splits)})"
        )
    train = read_split(task, config.data_dir, train_name)
    dev: ReadSplit | None = None
    held_out: dict[str, Any] | None = None
    dev_from_train = getattr(config, "dev_from_train", None)
    if dev_from_train is not None:
        if config.dev_split not in (None, NONE):
            raise ConfigError(
                f"dev_split {config.dev_split!r} and dev_from_train {dev_from_train} both name a dev split; "
                "pass one of them"
            )
        train, dev, held_out = hold_out(train, dev_from_train, DEV_FROM_TRAIN_SEED)
    else:
        dev_name = choose_split(task, config.data_dir, config.dev_split, DEV_CANDIDATES, one_file, notes)
        dev = read_split(task, config.data_dir, dev_name) if dev_name else None
    test_name = choose_split(task, config.data_dir, config.test_split, ("test",), one_file, notes)
    test = read_split(task, config.data_dir, test_name) if test_name else None
    train = keep_first(train, config.max_train_samples)
    dev = keep_first(dev, config.max_eval_samples) if dev else None
    test = keep_first(test, config.max_eval_samples) if test else None
    plan = {
        "data": config.data_dir,
        "train": train.name,
        "dev": dev.name if dev else None,
        "test": test.name if test else None,
        "dev_from_train": held_out,
        "checkpoint": f"best dev {task.primary_metric}" if dev else "last evaluation (no dev split)",
        "notes": notes,
    }
    return RunData(train, dev, test, plan)


def choose_split(
    task: Task,
    data_dir: str,
    requested: str | None,
    candidates: tuple[str, ...],
    one_file: bool,
    notes: list[str],
) -> str | None:
    """The split to read for dev (or test), or None for no split; ``notes`` say why a split is absent.

    A split named explicitly is read (and fails loudly if missing); ``none`` turns it off. By default one data
    file holds only train; in a folder, a missing dev file is an error that names the ways forward, a missing
    test file only a note.
    """
    role = candidates[0]
    if requested == NONE:
        notes.append(f"no {role} split ({role}_split none)")
        return None
    if requested:
        return requested
    if one_file:
        hint = " (pass --dev-from-train FRACTION to hold out part of it)" if role == "dev" else ""
        notes.append(f"{data_dir} is one file, read as the train split: no {role} split{hint}")
        return None
    default = next((name for name in candidates if name in task.splits), None)
    if default is None:
        return None
    folder = Path(data_dir).expanduser()
    if folder.is_dir() and not split_file(folder, task.splits[default]).exists():
        if role == "dev":
            raise DataError(
                f"{folder}: no dev file (looked for {task.splits[default]}, also named with "
                f"{'/'.join(DEV_FILE_STEMS)}); hold out part of train with --dev-from-train 0.1, name a split with "
                "--dev-split, or train without dev (last checkpoint kept) with --dev-split none"
            )
        notes.append(f"{folder}: no {task.splits[default]}: no test split")
        return None
    return default


def read_split(task: Task, data_dir: str, name: str) -> ReadSplit:
    examples, report = task.read(data_dir, name)
    return ReadSplit(name, examples, report)


def hold_out(train: ReadSplit, fraction: float, seed: int) -> tuple[ReadSplit, ReadSplit, dict[str, Any]]:
    """Move a seeded ``fraction`` of train into a dev split; both keep the file order of their examples."""
    if not 0 < fraction < 1:
        raise ConfigError(f"dev_from_train must be a fraction in (0, 1); got {fraction!r}")
    total = len(train.examples)
    dev_count = round(total * fraction)
    if dev_count < 1 or dev_count >= total:
        raise DataError(
            f"{train.name}: dev_from_train {fraction} of {total} train examples leaves {dev_count} for dev and "
            f"{total - dev_count} for train; each needs at least one"
        )
    chosen = set(np.random.default_rng(seed).permutation(total)[:dev_count].tolist())
    kept = [example for i, example in enumerate(train.examples) if i not in chosen]
    dev = [example for i, example in enumerate(train.examples) if i in chosen]
    note = f"{train.name}: {dev_count} of {total} examples held out as dev (fraction {fraction}, seed {seed})"
    train_report = DataReport(len(kept), train.report.skipped, 0, 0, [*train.report.notes, note])
    dev_report = DataReport(len(dev), 0, 0, 0, [note])
    summary = {
        "fraction": fraction,
        "seed": seed,
        "train_examples": len(kept),
        "dev_examples": len(dev),
        "source_examples": total,
    }
    name = f"dev-from-{train.name}"
    return ReadSplit(train.name, kept, train_report), ReadSplit(name, dev, dev_report), summary


def keep_first(split: ReadSplit, limit: int | None) -> ReadSplit:
    """The first ``limit`` examples (max_train_samples / max_eval_samples), with a note; unlabelled counts
    follow (a wholly unlabelled split, e.g. a GLUE test file, stays wholly unlabelled)."""
    report = split.report
    if limit is None or len(split.examples) <= limit:
        return split
    report.notes.append(
        f"{split.name}: kept the first {limit} of {len(split.examples)} examples (max samples)"
    )
    examples = split.examples[:limit]
    if report.unlabelled == len(split.examples):
        report.unlabelled = limit
    elif report.unlabelled:
        report.notes.append(f"{split.name}: {report.unlabelled} unlabelled examples in the whole file")
    report.examples = len(examples)
    return ReadSplit(split.name, examples, report)


def featurize_split(task: Task, split: ReadSplit, tokenizer: Any, max_length: int) -> Split:
    features, feature_report = task.featurize(split.examples, tokenizer, max_length)
    report = DataReport(
        examples=len(split.examples),
        skipped=split.report.skipped + feature_report.skipped,
        unlabelled=split.report.unlabelled,
        truncated=feature_report.truncated,
        notes=split.report.notes + feature_report.notes,
    )
    return Split(split.name, split.examples, features, report)
