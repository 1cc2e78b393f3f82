"""A checkpoint's task, rebuilt exactly as its training run built it: the one function eval, predict and
serve share, so that the same input gives the same answer everywhere.

The checkpoint's ``prompt_config.json`` names each head's registry task, the task's constructor options
(``text_field``, ``doc_stride``, ``label_map``...) and the ``max_length`` features were cut to. Checkpoints
written before those were stored fall back to the training run's ``config.json`` beside the checkpoint
(``OUTPUT_DIR/config.json`` for ``OUTPUT_DIR/checkpoint``), as ``ptuning predict`` always did.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptuning.core.checkpoint import CONFIG_FILE, CheckpointError
from ptuning.core.kinds import HeadKind
from ptuning.tasks.base import Task
from ptuning.tasks.registry import get_task
from ptuning.tasks.tag_schemes import split_tag
from ptuning.tasks.tagging import TaggingTask

# For checkpoints that do not record the max_length they were trained with.
DEFAULT_MAX_LENGTH = 128


@dataclass
class RebuiltTask:
    task: Task
    max_length: int | None  # what training used; None if the checkpoint does not say

    def length(self, override: int | None = None) -> int:
        """Tokens per input at inference: ``override`` (a --max-length), else what training used, else
        ``DEFAULT_MAX_LENGTH`` (checkpoints written before max_length was stored)."""
        return override or self.max_length or DEFAULT_MAX_LENGTH


def rebuild_task(checkpoint_dir: str | Path, config: dict[str, Any], head: str) -> RebuiltTask:
    """The task that decodes head ``head`` of the checkpoint whose (validated) config is ``config``.

    Raises ``CheckpointError`` naming the file when the task is unknown, its options do not fit it, or its
    head kind or labels differ from the saved head's.
    """
    where = Path(checkpoint_dir) / CONFIG_FILE
    entry = config["tasks"][head]
    if "task_options" in entry:
        options, max_length = entry.get("task_options") or {}, entry.get("max_length")
    else:
        run = training_run_config(Path(checkpoint_dir))
        options, max_length = run.get("task_options") or {}, run.get("max_length")
    name = entry.get("task", head)
    if (
        isinstance(options, dict)
        and isinstance(options.get(name), dict)
        and set(options) <= set(config["tasks"])
    ):
        options = options[name]  # a multi-task run's options, keyed by task
    try:
        task = get_task(name, **options)
    except (ValueError, TypeError) as error:  # unknown task, options it does not take or refuses
        raise CheckpointError(f"{where}: task {name!r} of head {head!r} cannot be built: {error}") from None
    spec = entry["head"]
    kind = HeadKind(spec["kind"])
    if task.head is not kind:
        raise CheckpointError(f"{where}: head {head!r} is {kind}, but task {task.name!r} is {task.head}")
    labels = spec.get("label_names")
    if labels and getattr(task, "label_names", None) is None:
        try:
            bind_labels(task, labels)  # label sets learned from data (generic CSV, NER)
        except ValueError as error:  # e.g. an imported token classifier's LABEL_0.. are no tags
            raise CheckpointError(
                f"{where}: head {head!r}'s labels {labels} cannot be task {task.name!r}'s: {error}"
            ) from None
    elif labels and list(task.label_names) != list(labels):
        raise CheckpointError(
            f"{where}: head {head!r} has labels {labels}, but task {task.name!r} has {task.label_names}"
        )
    if isinstance(max_length, bool) or not (max_length is None or isinstance(max_length, int)):
        max_length = None
    return RebuiltTask(task, max_length)


def bind_labels(task: Task, label_names: list[str]) -> None:
    """Give a task that learns its label set from training data (csv-classification, ner-generic) the
    checkpoint's labels, so that predictions use exactly the trained head's classes."""
    if isinstance(task, TaggingTask):
        task.entity_types = sorted({split_tag(label)[1] for label in label_names if label != "O"})
    task.label_names = list(label_names)


class RunConfigNote(UserWarning):
    """The training run's config.json beside a checkpoint could not be read: eval and predict use their own
    defaults where they would have used the run's (its dev split, sample limit, batch size)."""


def training_run_config(checkpoint_dir: Path) -> dict[str, Any]:
    """The engine's config.json of the run that wrote this checkpoint (output_dir/checkpoint), if any. A
    damaged one is said (``RunConfigNote``) and read as none: the checkpoint itself holds what loading needs."""
    path = checkpoint_dir.parent / "config.json"
    if not path.is_file():
        return {}
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        why = f"not valid JSON ({error.msg})" if isinstance(error, json.JSONDecodeError) else str(error)
        return _unread(path, why)
    return run if isinstance(run, dict) else _unread(path, f"a JSON {type(run).__name__}, not an object")


def _unread(path: Path, why: str) -> dict[str, Any]:
    warnings.warn(
        f"{path}: the training run's options could not be read ({why}); using the defaults for its dev "
        "split, sample limit and batch size",
        RunConfigNote,
        stacklevel=3,
    )
    return {}
