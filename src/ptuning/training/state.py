"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

Holds what an interrupted run needs to continue bit-for-bit: model trainables, optimizer and scheduler
state, RNG states and the position in the data order (epoch, batch within the epoch).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ptuning.core.checkpoint import recover_dir, replace_dir

STATE_DIR = "training_state"


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
) -> None:
    """Atomically replace ``output_dir/training_state``."""
    tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update({f"model.{k}": v.detach().contiguous().clone() for k, v in model_state.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "progress": progress,
        "optimizer": optimizer_meta,
        "scheduler": scheduler.state_dict(),
        "rng_python": _jsonable(random.getstate()),
        "rng_numpy": _jsonable(np.random.get_state()),
    }
    staging = Path(tempfile.mkdtemp(prefix=".state.", dir=output_dir))
    try:
        save_file(tensors, str(staging / "state.safetensors"))
        (staging / "state.json").write_text(json.dumps(meta))
        replace_dir(staging, output_dir / STATE_DIR)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_training_state(
    output_dir: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]] | None:
    """(model_state, optimizer_state, meta) or None when there is nothing to resume."""
    folder = output_dir / STATE_DIR
    recover_dir(folder)  # a save that crashed mid-swap: its previous state comes back
    if not (folder / "state.json").is_file():
        return None
    tensors = load_file(str(folder / "state.safetensors"))
    meta = json.loads((folder / "state.json").read_text())
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = _unflatten_optimizer(tensors, meta["optimizer"])
    meta["rng_torch"] = tensors["rng.torch"]
    return model_state, optimizer_state, meta


def restore_rng(meta: dict[str, Any]) -> None:
    torch.set_rng_state(meta["rng_torch"])
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
