"""Tasks: files -> examples -> model features, and model outputs -> scores and predictions.

Use ``get_task(name)`` for a task, ``collate`` to batch its features; see docs/TASKS.md.
"""

from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.tasks.registry import get_task, list_tasks

__all__ = [
    "DataError",
    "DataReport",
    "Features",
    "HeadKind",
    "Task",
    "collate",
    "get_task",
    "length_grouped_batches",
    "list_tasks",
]
