"""Prompt-only checkpoints: the trained prefix + heads in safetensors, everything else in JSON.

A checkpoint is a folder holding the weights and ``prompt_config.json`` (method, prefix config, tasks with
their label names, base model name and fingerprint). The weights file is named by what it holds:
``prompt.safetensors`` (prefix, MLP, heads) for the prompt methods and linear probing, a few hundred KB for
a P-tuning v2 task; ``model.safetensors`` (the whole model) for fine-tuning. A checkpoint never executes
code when loaded, and refuses a base model other than the one it was trained on. Folders are replaced
atomically, so a crash never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ptuning import __version__
from ptuning.core.config import Method, PrefixConfig
from ptuning.core.fingerprint import base_fingerprint
from ptuning.core.model import HeadSpec, PromptModel

FORMAT = "ptuning-prompt-checkpoint/1"
WEIGHTS_FILE = "prompt.safetensors"  # methods with a frozen backbone: only the trained prefix and heads
MODEL_WEIGHTS_FILE = "model.safetensors"  # fine-tuning: every weight of the model
WEIGHTS_FILES = (WEIGHTS_FILE, MODEL_WEIGHTS_FILE)
CONFIG_FILE = "prompt_config.json"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed, or does not fit the model it is loaded onto."""


def weights_file_name(method: Method) -> str:
    """The weights file's name says what it holds: the prompt (and heads), or the whole fine-tuned model."""
    return WEIGHTS_FILE if method.freezes_backbone else MODEL_WEIGHTS_FILE


def _trainable_state(model: PromptModel) -> dict[str, torch.Tensor]:
    keep = ("prefixes.", "heads.") if model.method.freezes_backbone else ("",)
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k.startswith(keep)}


def save_checkpoint(
    model: PromptModel,
    directory: str | Path,
    task_names: dict[str, str] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the prompt checkpoint to ``directory``, replacing any previous one atomically.

    ``task_names`` maps each head to the registry task that decodes its outputs (e.g. {"sst2": "sst2"}).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    source = getattr(model.backbone, "ptuning_source", None) or model.backbone.config.name_or_path
    config: dict[str, Any] = {
        "format": FORMAT,
        "ptuning_version": __version__,
        "method": str(model.method),
        "prefix": model.prefix_config.to_dict(),
        "head_dropout": model.head_dropout,
        "tasks": {
            task: {
                "head": spec.to_dict(),
                "prefix": model.task_prefix[task],
                "task": (task_names or {}).get(task, task),
            }
            for task, spec in model.head_specs.items()
        },
        "base_model": {
            "name_or_path": source,
            "model_type": model.geometry.model_type,
            "causal_lm": any(s.kind == "causal-lm" for s in model.head_specs.values()),
            "fingerprint": model.base_fingerprint,
        },
        "weights_file": weights_file_name(model.method),
        "extra": extra or {},
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = staging / config["weights_file"]
        save_file(_trainable_state(model), str(weights), metadata={"format": FORMAT})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        replace_dir(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` into ``target``: at every instant either the old or the new folder is complete."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a prompt checkpoint: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_checkpoint(directory: str | Path, backbone: torch.nn.Module | None = None) -> PromptModel:
    """Rebuild the PromptModel saved in ``directory`` on ``backbone`` (loaded from the saved name if None)."""
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    missing_fields = [
        key for key in ("method", "prefix", "head_dropout", "tasks", "base_model") if key not in config
    ]
    if missing_fields:
        raise CheckpointError(f"{directory / CONFIG_FILE}: missing fields {missing_fields}")
    base = config["base_model"]
    if backbone is None:
        from ptuning.core.backbones import load_backbone

        backbone, _ = load_backbone(base["name_or_path"], causal_lm=base.get("causal_lm", False))
    check_base(config, backbone, directory)
    model = PromptModel(
        backbone, Method(config["method"]), PrefixConfig.from_dict(config["prefix"]), config["head_dropout"]
    )
    for task, entry in config["tasks"].items():
        model.add_task(task, HeadSpec.from_dict(entry["head"]), prefix_name=entry["prefix"])
    weights_path = directory / _weights_file(config, directory)
    if not weights_path.is_file():
        raise CheckpointError(f"{directory}: {weights_path.name} is missing")
    state = load_file(str(weights_path))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that do not fit the saved config
        raise CheckpointError(f"{weights_path} does not fit {directory / CONFIG_FILE}: {error}") from None
    expected = _trainable_state(model).keys()
    missing = [k for k in missing if k in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    model.eval()
    return model


def _weights_file(config: dict[str, Any], directory: Path) -> str:
    """The name the config records, or (folders written before it did) the one of WEIGHTS_FILES present."""
    name = config.get("weights_file")
    if name is None:
        name = next((n for n in WEIGHTS_FILES if (directory / n).is_file()), WEIGHTS_FILE)
    if name not in WEIGHTS_FILES:
        raise CheckpointError(
            f"{directory / CONFIG_FILE}: weights_file {name!r} is not one of {list(WEIGHTS_FILES)}"
        )
    return name


def check_base(config: dict[str, Any], backbone: torch.nn.Module, directory: Path | str = "") -> None:
    """Refuse to put a prompt on a backbone other than the one it was trained with."""
    base = config["base_model"]
    actual = base_fingerprint(backbone)
    if actual != base["fingerprint"]:
        source = getattr(backbone, "ptuning_source", None) or backbone.config.name_or_path
        raise CheckpointError(
            f"checkpoint {directory} was trained on {base['name_or_path']!r} ({base['model_type']}, fingerprint "
            f"{base['fingerprint']}) but the given base model is {source!r} ({backbone.config.model_type}, "
            f"fingerprint {actual})"
        )
