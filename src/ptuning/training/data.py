"""The data of one task in a training run: which splits it reads, a dev split held out of train, sample limits.

Every split is read before the model is built (training/engine.py): tasks that learn their label set from the
train split (csv-classification, pair-classification, ner-generic) know the head's classes only after reading
it, and a dev or test label unseen in train is then an error naming its file and line, never a new class.
Splits are featurized once the tokenizer is loaded.

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

from ptuning.tasks.base import DataError, DataReport, Features, Task
from ptuning.tasks.readers import DEV_FILE_STEMS, split_file

NONE = "none"  # dev_split / test_split value that turns the split off
DEV_SPLITS = ("dev", "validation", "val")
DEV_FROM_TRAIN_SEED = 0  # fixed, not the run's seed: runs with different seeds are scored on the same dev


@dataclass
class Split:
    """One split's examples; ``features`` stays empty until featurize_split (the tokenizer loads later)."""

    name: str
    examples: list[dict[str, Any]]
    features: Features
    report: DataReport


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
    """One task's splits as read (engine.read_task_data): what the trainer trains on and scores."""

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


def choose_split(
    task: Task, data_dir: str, requested: str | None, candidates: tuple[str, ...], notes: list[str]
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
    source = Path(data_dir).expanduser()
    if data_dir and source.is_file():
        hint = " (pass --dev-from-train FRACTION to hold out part of it)" if role == "dev" else ""
        notes.append(f"{data_dir} is one file, read as the train split: no {role} split{hint}")
        return None
    default = next((name for name in candidates if name in task.splits), None)
    if default is None:
        return None
    if data_dir and source.is_dir() and not split_file(source, task.splits[default]).exists():
        if role == "dev":
            raise DataError(
                f"{source}: no dev file (looked for {task.splits[default]}, also named with "
                f"{'/'.join(DEV_FILE_STEMS)}); hold out part of train with --dev-from-train 0.1, name a split with "
                "--dev-split, or train without dev (last checkpoint kept) with --dev-split none"
            )
        notes.append(f"{source}: no {task.splits[default]}: no test split")
        return None
    return default


def read_split(task: Task, data_dir: str, name: str, limit: int | None = None) -> Split:
    """One split as read (not featurized), cut to its first ``limit`` examples."""
    examples, report = task.read(data_dir, name)
    report.examples = len(examples)
    return keep_first(Split(name, examples, [], report), limit)


def keep_first(split: Split, limit: int | None) -> Split:
    """The first ``limit`` examples (max_train_samples / max_eval_samples), with a note; unlabelled counts
    follow (a wholly unlabelled split, e.g. a GLUE test file, stays wholly unlabelled)."""
    report = split.report
    if limit is None or len(split.examples) <= limit:
        return split
    report.notes.append(
        f"{split.name}: kept the first {limit} of {len(split.examples)} examples (max samples)"
    )
    if report.unlabelled == len(split.examples):
        report.unlabelled = limit
    elif report.unlabelled:
        report.notes.append(f"{split.name}: {report.unlabelled} unlabelled examples in the whole file")
    report.examples = limit
    return Split(split.name, split.examples[:limit], split.features[:limit], report)


def hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split, dict[str, Any]]:
    """Move a seeded ``fraction`` of train into a dev split; both keep the file order of their examples."""
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
    held_out = Split(f"dev-from-{train.name}", dev, [], dev_report)
    return Split(train.name, kept, [], train_report), held_out, summary


def featurize_split(task: Task, split: Split, tokenizer: Any, max_length: int) -> Split:
    """Fill ``split.features``; the report adds what featurization skipped and truncated."""
    features, feature_report = task.featurize(split.examples, tokenizer, max_length)
    split.features = features
    split.report = DataReport(
        examples=len(split.examples),
        skipped=split.report.skipped + feature_report.skipped,
        unlabelled=split.report.unlabelled,
        truncated=feature_report.truncated,
        notes=split.report.notes + feature_report.notes,
        cut_for_generation=feature_report.cut_for_generation,
    )
    return split
