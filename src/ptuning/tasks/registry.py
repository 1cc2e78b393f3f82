"""Task lookup by name: the one place that knows which task modules exist.

Each task module exposes ``TASKS``: a list of Task subclasses (built fresh per ``get_task`` call, with
its options) or ready instances. Modules are imported on first use, so that importing
``ptuning.tasks`` stays cheap and task modules may import ``ptuning.tasks.base`` freely.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from typing import Any

from ptuning.tasks.base import Task

TASK_MODULES = ("glue", "superglue", "csv_tasks", "tagging", "srl", "qa")
OPTIONAL_TASK_MODULES = ("generative",)  # imported only when the module exists

_registry: dict[str, type[Task] | Task] | None = None


def _load() -> dict[str, type[Task] | Task]:
    global _registry
    if _registry is None:
        registry: dict[str, type[Task] | Task] = {}
        names = [*TASK_MODULES]
        names += [name for name in OPTIONAL_TASK_MODULES if importlib.util.find_spec(f"ptuning.tasks.{name}")]
        for module_name in names:
            module = importlib.import_module(f"ptuning.tasks.{module_name}")
            for entry in getattr(module, "TASKS", []):
                task_name = entry.name
                if task_name in registry:
                    raise RuntimeError(f"task name {task_name!r} is defined twice (again in {module_name})")
                registry[task_name] = entry
        _registry = registry
    return _registry


def list_tasks() -> list[str]:
    """The names get_task() accepts, sorted."""
    return sorted(_load())


def get_task(name: str, **options: Any) -> Task:
    """The task called ``name``, built with ``options`` (e.g. label_map, text_field, splits).

    An unknown name is an error that lists the known ones and suggests the closest.
    """
    registry = _load()
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(sorted(registry))}")
    entry = registry[name]
    if isinstance(entry, type):
        return entry(**options)
    if options:
        raise ValueError(f"task {name!r} is a ready instance and takes no options (got {sorted(options)})")
    return entry
