"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

Holds what an interrupted run needs to continue bit-for-bit: model trainables, optimizer and scheduler
state, RNG states (Python, NumPy, torch CPU and, where CUDA is present, CUDA; the torch states of every
process of a data-parallel run) and the position in the data order.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ptuning.core.config import ConfigError
from ptuning.core.folders import reason, recover_dir, replace_dir, staging_dir, sync_to_disk

STATE_DIR = "training_state"
# config.json's record of the directory a run was started in: its relative paths are read from there
WORKING_DIR = "working_dir"
# Options that change how a run computes or reports, not what it trains: a resumed run may set them anew.
RESUMABLE_WITH_OTHER = frozenset(
    {
        "resume",
        "output_dir",  # the folder resumed is the one the state is in, however it is spelled now
        "eval_batch_size",
        "save_every_steps",
        "log_tensorboard",
        "compile",
        "attn_implementation",
        "gradient_checkpointing",
        WORKING_DIR,
    }
)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    output_dir: Path,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: dict[str, Any],
    rng: dict[str, torch.Tensor] | None = None,
    grad_scaler: dict[str, Any] | None = None,
) -> None:
    """Atomically replace ``output_dir/training_state``; ``rng`` from ``rng_states`` (default: this
    process's); ``grad_scaler``, fp16 training's loss-scale state (its scale moves with overflows, so a
    resumed run that restarted it would skip other updates than the uninterrupted one)."""
    tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update({f"model.{k}": v.detach().contiguous().clone() for k, v in model_state.items()})
    tensors.update(rng if rng is not None else rng_states())
    meta = {
        "progress": progress,
        "optimizer": optimizer_meta,
        "scheduler": scheduler.state_dict(),
        "rng_python": _jsonable(random.getstate()),
        "rng_numpy": _jsonable(np.random.get_state()),
    }
    if grad_scaler is not None:
        meta["grad_scaler"] = grad_scaler
    staging = staging_dir(output_dir / STATE_DIR)  # swept by recover_dir if this process dies mid-write
    try:
        save_file(tensors, str(staging / "state.safetensors"))
        (staging / "state.json").write_text(json.dumps(meta))
        for path in (staging / "state.safetensors", staging / "state.json", staging):
            sync_to_disk(path)  # on disk before the swap: a power loss cannot swap in empty files
        replace_dir(staging, output_dir / STATE_DIR)
        sync_to_disk(output_dir)
    except (OSError, SafetensorError) as error:  # a full disk: one line; the state saved before stays whole
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(
            f"{output_dir / STATE_DIR}: the resumable state was not saved ({reason(error)}); the one saved "
            "before is left as it was"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def saved_options(output_dir: Path) -> dict[str, Any] | None:
    """The options the run in ``output_dir`` was started with (its config.json), or None if it has none."""
    path = output_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path}: not valid JSON ({error}); it records the options of the run there"
        ) from None


# options naming files: compared as the files they name, whatever the spelling
PATH_OPTIONS = frozenset({"model", "data_dir", "init_prefix_from", "task_data"})


def option_changes(saved: dict[str, Any], options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(options ``saved`` set otherwise, options it does not record), leaving out ``RESUMABLE_WITH_OTHER`` and
    prefix options the method never reads (``unread_prefix_options``: they did not shape the run).
    Paths are compared as the files they name (``data/sst2/`` is ``./data/sst2``), or a sweep would retrain a
    finished cell, and --resume refuse, over a spelling."""
    from ptuning.training.config import unread_prefix_options

    wanted = json.loads(json.dumps(options))  # the types config.json holds (lists, not tuples)
    # a preset's prefix option that the method never read was recorded by older runs, and is dropped now
    unread = set(unread_prefix_options(saved)) | set(unread_prefix_options(wanted))
    compared = sorted(set(wanted) - RESUMABLE_WITH_OTHER - unread)
    started_in = saved.get(WORKING_DIR)  # older runs did not record it: their paths read from here
    differ = [
        key
        for key in compared
        if key in saved and _compared(key, saved[key], started_in) != _compared(key, wanted[key], None)
    ]
    return differ, [key for key in compared if key not in saved]


def _compared(key: str, value: Any, base: str | None) -> Any:
    """An option's value as compared: a path option's strings (a dict's values too) as the files they name,
    relative ones read from ``base`` (the saved run's working directory; None: this one), and so the folders in
    the ``multitask`` record a multi-task run's config.json derives from --task-data. A string naming no file
    (a hub id, a packaged model's name) is compared as spelled."""
    if key == "multitask" and isinstance(value, dict) and "data_dirs" in value:
        return {**value, "data_dirs": _compared("task_data", value["data_dirs"], base)}
    if key not in PATH_OPTIONS:
        return value
    if isinstance(value, dict):
        return {name: _compared(key, item, base) for name, item in value.items()}
    if not isinstance(value, str) or not value:
        return value
    path = os.path.realpath(os.path.join(base or os.getcwd(), os.path.expanduser(value)))
    return path if os.path.exists(path) else os.path.normpath(value)


def check_resume_options(output_dir: Path, options: dict[str, Any], log: Any = print) -> None:
    """Refuse to continue a saved run under other training options than the ones it started with.

    Why: the resumed half would follow another recipe (learning rate, clipping, data...) while the run's
    config.json, rewritten at start, recorded only the new one. Options an older ptuning did not record are
    printed, not refused, since their value then is unknown. A folder with no saved state trains afresh.
    """
    state = output_dir / STATE_DIR
    recover_dir(state)
    saved = saved_options(output_dir) if (state / "state.json").is_file() else None
    if saved is None:
        return
    differ, unrecorded = option_changes(saved, options)
    path = output_dir / "config.json"
    if differ:
        changes = "; ".join(
            f"{key}: {json.dumps(saved[key])} there, {json.dumps(options[key])} now" for key in differ
        )
        raise ConfigError(
            f"{path}: --resume would continue the run saved in {state} under other options ({changes}); "
            "pass the options it was started with, or train in a new --output-dir"
        )
    if unrecorded:
        now = ", ".join(f"{key} = {json.dumps(options[key])}" for key in unrecorded)
        log(
            f"resuming a run whose {path.name} predates {len(unrecorded)} option(s): the rest of it runs with {now}"
        )


def saved_progress(output_dir: Path) -> dict[str, Any] | None:
    """Where the state saved in ``output_dir`` had got to (its ``progress``: micro-batch, update, epoch...),
    without loading its tensors; None when there is nothing to resume."""
    folder = output_dir / STATE_DIR
    recover_dir(folder)
    if not (folder / "state.json").is_file():
        return None
    with _damage_reported(folder / "state.json"):
        return json.loads((folder / "state.json").read_text())["progress"]


def load_training_state(
    output_dir: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]] | None:
    """(model_state, optimizer_state, meta) or None when there is nothing to resume."""
    folder = output_dir / STATE_DIR
    recover_dir(folder)  # a save that crashed mid-swap: its previous state comes back
    if not (folder / "state.json").is_file():
        return None
    with _damage_reported(folder / "state.safetensors"):
        tensors = load_file(str(folder / "state.safetensors"))
        rng_torch = tensors["rng.torch"]
    with _damage_reported(folder / "state.json"):
        meta = json.loads((folder / "state.json").read_text())
        optimizer_state = _unflatten_optimizer(tensors, meta["optimizer"])
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    meta["rng_torch"] = rng_torch
    meta["rng_torch_ranks"] = tensors.get("rng.torch.ranks")
    meta["rng_cuda_ranks"] = tensors.get("rng.cuda.ranks")
    return model_state, optimizer_state, meta


@contextlib.contextmanager
def _damage_reported(path: Path) -> Iterator[None]:
    """A file of the saved state that cannot be read (cut by a crash or a full disk, edited): one line naming
    it and the way out, instead of a traceback from safetensors or json."""
    try:
        yield
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"{path}: the resumable state is damaged ({error.__class__.__name__}: {reason(error)}); delete "
            f"{path.parent} to train from the start"
        ) from None


def rng_states(accelerator: Any = None) -> dict[str, torch.Tensor]:
    """The torch RNG states to save: rank 0's CPU state, every rank's CPU state (one row per process) and,
    with CUDA, every rank's state of its own device. Collective under several processes: all must call it."""
    cpu = torch.get_rng_state()
    states = {"rng.torch": cpu, "rng.torch.ranks": _per_rank(cpu, accelerator)}
    if torch.cuda.is_available():
        states["rng.cuda.ranks"] = _per_rank(torch.cuda.get_rng_state(), accelerator)
    states["rng.torch"] = states["rng.torch.ranks"][0].clone()
    return states


def _per_rank(state: torch.Tensor, accelerator: Any) -> torch.Tensor:
    """(processes, state bytes): every process's ``state``, gathered."""
    if accelerator is None or accelerator.num_processes == 1:
        return state.clone()[None]
    gathered = accelerator.gather(state.to(accelerator.device)[None])
    return gathered.cpu()


def restore_rng(meta: dict[str, Any], rank: int = 0, world: int = 1) -> None:
    """Set this process's random states from a saved state; another process count reuses rank 0's rows."""
    per_rank = meta.get("rng_torch_ranks")
    row = rank if per_rank is not None and len(per_rank) == world else 0
    torch.set_rng_state(per_rank[row].clone() if per_rank is not None else meta["rng_torch"])
    cuda = meta.get("rng_cuda_ranks")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda[rank if len(cuda) == world else 0].clone())
    random.setstate(_tuples(meta["rng_python"]))
    kind, keys, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
