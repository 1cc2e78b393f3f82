"""The data of one task in a training run: which splits it reads, a dev split held out of train, sample limits.

Every split is read before the model is built (training/engine.py): tasks that learn their label set from the
train split (csv-classification, pair-classification, ner-generic) know the head's classes only after reading
it, and a dev or test label unseen in train is then an error naming its file and line, never a new class.
Splits are featurized once the tokenizer is loaded.

Which splits: train is the task's train split (or ``train_split``). Dev is ``dev_split``, else a seeded share
of train when ``dev_from_train`` is set, else the task's dev file; a folder without one is an error that
names the ways forward. ``none`` turns dev or test off. ``data_dir`` may be one file: it is the train split,
and dev and test are read from it only when named explicitly (e.g. SQuAD's ``eval-articles``).

Sample limits and the dev share held out of train take whole groups (``Task.group_key``: a MultiRC question
with all its answer options), never part of one.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptuning.tasks.base import DataError, DataReport, Features, Task
from ptuning.tasks.readers import DEV_FILE_STEMS, SPLIT_ALIASES, check_file, split_file

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
    task: Task | None = None  # the task that read it: its ``group_key`` says which examples stay together


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


def check_one_file_splits(task: Task, data_dir: str, train: str, named: dict[str, str | None]) -> None:
    """With one data file every split name reads that file: a dev or test split that a folder would read from
    another file than train's would score the training rows. Refused; split names that select parts of one
    file (SQuAD's article splits, BoolQ's train-from-val / eval-from-val) pass with a matching train split."""
    if not data_dir or not Path(data_dir).expanduser().is_file():
        return
    train_file = task.splits.get(SPLIT_ALIASES.get(train, train))
    for role, name in named.items():
        own_file = None if name is None else task.splits.get(SPLIT_ALIASES.get(name, name))
        if own_file is None or own_file == train_file:
            continue
        raise DataError(
            f"{data_dir} is one file, which --{role}-split {name} would read too (in a folder it reads "
            f"{own_file}, train {train_file}): it would score the training rows. Give a folder with both files, "
            f"hold part of train out with --dev-from-train 0.1, or pass --{role}-split none"
        )


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


def check_train_file(task: Task, data_dir: str, train_name: str) -> None:
    """A folder's train file is looked for before its dev file: a folder in another layout (JSONL where the
    task reads TSV) is then named by its missing train file and the files it holds, not by a missing dev file
    whose suggested remedies (--dev-from-train, --dev-split none) would fail on train next."""
    source = Path(data_dir).expanduser()
    if not (data_dir and source.is_dir() and train_name in task.splits):
        return
    try:
        check_file(split_file(source, task.splits[train_name]))
    except DataError as error:  # BoolQ, WiC and SQuAD part 1 ship no train file: name the splits that work
        present = [
            name
            for name, file_name in task.splits.items()
            if "train" in name and name != train_name and split_file(source, file_name).is_file()
        ]
        hint = f"; this folder holds the train splits {present} (--train-split NAME)" if present else ""
        raise DataError(f"{error}{hint}") from None


def read_split(task: Task, data_dir: str, name: str, limit: int | None = None) -> Split:
    """One split as read (not featurized), cut to its first ``limit`` examples."""
    examples, report = task.read(data_dir, name)
    report.examples = len(examples)
    return keep_first(Split(name, examples, [], report, task), limit)


def whole_groups(task: Task | None, examples: list[dict[str, Any]]) -> list[list[int]]:
    """The positions of ``examples`` by group (``Task.group_key``), groups in the order they first appear; an
    example without a group is a group of its own."""
    groups: dict[Hashable, list[int]] = {}
    for position, example in enumerate(examples):
        key = task.group_key(example) if task is not None else None
        groups.setdefault(("alone", position) if key is None else ("group", key), []).append(position)
    return list(groups.values())


def first_whole_groups(task: Task | None, examples: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first examples up to ``limit``, cut between groups: whole groups while they fit, and at least the
    first group (larger than ``limit`` or not), so a limit never empties a split. In file order."""
    kept: list[int] = []
    for group in whole_groups(task, examples):
        if kept and len(kept) + len(group) > limit:
            break
        kept.extend(group)
    return [examples[position] for position in sorted(kept)]


def limit_note(name: str, task: Task | None, kept: int, total: int, limit: int) -> str:
    """What a sample limit kept; for a task with groups, the limit it was cut near and that groups stayed whole."""
    if task is None or not task.group_name:
        return f"{name}: kept the first {kept} of {total} examples (max samples)"
    return f"{name}: kept the first {kept} of {total} examples (max samples {limit}, whole {task.group_name})"


def keep_first(split: Split, limit: int | None) -> Split:
    """The first ``limit`` examples (max_train_samples / max_eval_samples), whole groups only
    (``first_whole_groups``), with a note; unlabelled counts follow (a wholly unlabelled split, e.g. a GLUE test
    file, stays wholly unlabelled). Done before featurizing: the result has no features."""
    report = split.report
    if limit is None or len(split.examples) <= limit:
        return split
    examples = first_whole_groups(split.task, split.examples, limit)
    report.notes.append(limit_note(split.name, split.task, len(examples), len(split.examples), limit))
    if report.unlabelled == len(split.examples):
        report.unlabelled = len(examples)
    elif report.unlabelled:
        report.notes.append(f"{split.name}: {report.unlabelled} unlabelled examples in the whole file")
    report.examples = len(examples)
    return Split(split.name, examples, [], report, split.task)


def hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split, dict[str, Any]]:
    """Move a seeded ``fraction`` of train's groups (``whole_groups``: its examples, where the task has no
    groups) into a dev split, so that no group has examples on both sides; both keep the file order."""
    total = len(train.examples)
    groups = whole_groups(train.task, train.examples)
    unit = (train.task.group_name if train.task is not None else "") or "examples"
    dev_groups = round(len(groups) * fraction)
    if dev_groups < 1 or dev_groups >= len(groups):
        raise DataError(
            f"{train.name}: dev_from_train {fraction} of {len(groups)} train {unit} leaves {dev_groups} for dev "
            f"and {len(groups) - dev_groups} for train; each needs at least one"
        )
    drawn = np.random.default_rng(seed).permutation(len(groups))[:dev_groups].tolist()
    chosen = {position for group in drawn for position in groups[group]}
    kept = [example for i, example in enumerate(train.examples) if i not in chosen]
    dev = [example for i, example in enumerate(train.examples) if i in chosen]
    whole = f" ({dev_groups} of {len(groups)} whole {unit})" if unit != "examples" else ""
    note = f"{train.name}: {len(dev)} of {total} examples{whole} held out as dev (fraction {fraction}, seed {seed})"
    train_report = DataReport(len(kept), train.report.skipped, 0, 0, [*train.report.notes, note])
    dev_report = DataReport(len(dev), 0, 0, 0, [note])
    summary = {
        "fraction": fraction,
        "seed": seed,
        "train_examples": len(kept),
        "dev_examples": len(dev),
        "source_examples": total,
    }
    held_out = Split(f"dev-from-{train.name}", dev, [], dev_report, train.task)
    return Split(train.name, kept, [], train_report, train.task), held_out, summary


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
