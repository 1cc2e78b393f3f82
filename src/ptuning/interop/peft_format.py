"""The files of a PEFT prefix-tuning adapter (PEFT 0.21.2; 0.22.0 reads and writes the same), without PEFT.

A PEFT adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors``. For
``peft_type: PREFIX_TUNING`` the weights file has one table, ``prompt_embeddings`` (P, L*2*kv*d), where
row p holds every layer's key and value for virtual token p, in the same order as ptuning's table
(``core.prefix.split_table``: view (P, 2L, kv, d), keys at 2l, values at 2l+1). PEFT computes the table
through its ``prefix_projection`` MLP before saving, so the MLP itself never reaches the file. Task heads
(``modules_to_save``) are stored as ``base_model.<module>.<weight|bias>``. For grouped-query attention PEFT
writes the KV-head count as ``num_attention_heads`` and ``token_dim = kv_heads * head_dim``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ptuning.core.checkpoint import SAVED_DTYPE_NAMES, CheckpointError, is_pickle_file
from ptuning.core.fingerprint import FINGERPRINT_VERSIONS
from ptuning.core.folders import RUN_LOCK, reason, replace_dir, staging_dir, sync_to_disk
from ptuning.core.geometry import PrefixGeometry

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# written by ptuning's export beside PEFT's files: what PEFT's format has no place for (the head's classes,
# the base's fingerprint, the registry task, its options and max_length; see read_sidecar)
LABELS_FILE = "ptuning_labels.json"
PICKLED_WEIGHTS = "adapter_model.bin"
TABLE_KEY = "prompt_embeddings"
MODULE_PREFIX = "base_model."  # how PEFT names modules_to_save tensors in the file
PEFT_VERSION = "0.21.2"  # the PEFT release whose format is written here and checked by tests/interop
TASK_TYPES = ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS", "CAUSAL_LM", "FEATURE_EXTRACTION")


class PeftFormatError(CheckpointError):
    """A PEFT adapter folder is malformed, or holds something ptuning cannot represent exactly."""


def sliding_window_difference(geometry: PrefixGeometry, prefix_length: int) -> str | None:
    """What PEFT computes otherwise on a base with sliding-window layers (Mistral, Gemma 2/3), or None.

    ptuning's sliding-window layers see the whole prefix beside their window (docs/ARCHITECTURES.md); PEFT's
    cache holds the prefix at positions 0..P-1, which a window of W leaves behind from the (W - P + 1)-th token
    on: the first W - P tokens get the same outputs, every later one others."""
    window = geometry.sliding_window
    if window is None:
        return None
    return (
        f"its base has sliding-window layers (window {window}), which in ptuning see the {prefix_length}-slot "
        f"prefix beside the window but in PEFT leave it behind: past the first {max(window - prefix_length, 0)} "
        "tokens of an input the two compute other outputs (docs/INTEROP.md)"
    )


@dataclass
class PeftAdapter:
    """One PEFT prefix-tuning adapter: its config and tensors, validated against each other."""

    folder: Path
    config: dict[str, Any]
    table: torch.Tensor  # (P, num_layers * 2 * token_dim)
    modules: dict[str, torch.Tensor]  # modules_to_save tensors, e.g. {"score.weight": ...}
    # LABELS_FILE, checked (read_sidecar); {} when absent
    sidecar: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_virtual_tokens(self) -> int:
        return self.config["num_virtual_tokens"]

    @property
    def num_layers(self) -> int:
        return self.config["num_layers"]

    @property
    def num_kv_heads(self) -> int:
        return self.config["num_attention_heads"]  # PEFT stores the KV-head count here for GQA models

    @property
    def head_dim(self) -> int:
        return self.config["token_dim"] // self.config["num_attention_heads"]

    @property
    def task_type(self) -> str | None:
        return self.config.get("task_type")


def is_peft_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def read_adapter(folder: str | Path) -> PeftAdapter:
    """Read and check a PEFT prefix-tuning adapter folder; errors name the file and the field."""
    folder = Path(folder)
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise PeftFormatError(f"{folder} is not a PEFT adapter: {ADAPTER_CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise PeftFormatError(f"{config_path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    if not isinstance(config, dict):
        raise PeftFormatError(f"{config_path}: expected a JSON object")
    _check_config(config, config_path)
    weights_path = folder / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        if (folder / PICKLED_WEIGHTS).is_file():
            raise PeftFormatError(
                f"{folder}: only {PICKLED_WEIGHTS} (a pickle) is present; ptuning never unpickles. Re-save the "
                f"adapter with PEFT's save_pretrained(safe_serialization=True) to get {ADAPTER_WEIGHTS}"
            )
        raise PeftFormatError(f"{folder}: {ADAPTER_WEIGHTS} is missing")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        if is_pickle_file(weights_path):  # as ptuning's own reader says (core.checkpoint.read_weights)
            raise PeftFormatError(
                f"{weights_path}: a pickle/torch.save file, not safetensors; it is not loaded, since unpickling "
                "can run code"
            ) from None
        raise PeftFormatError(f"{weights_path}: not a readable safetensors file ({error})") from None
    if TABLE_KEY not in tensors:
        raise PeftFormatError(f"{weights_path}: no {TABLE_KEY!r} tensor; found {sorted(tensors)[:5]}")
    table = tensors.pop(TABLE_KEY)
    width = config["num_layers"] * 2 * config["token_dim"]
    expected = (config["num_virtual_tokens"], width)
    if tuple(table.shape) != expected:
        raise PeftFormatError(
            f"{weights_path}: {TABLE_KEY} has shape {tuple(table.shape)}; {ADAPTER_CONFIG} says "
            f"{expected} (num_virtual_tokens, num_layers * 2 * token_dim)"
        )
    stray = [key for key in tensors if not key.startswith(MODULE_PREFIX)]
    if stray:
        raise PeftFormatError(f"{weights_path}: unexpected tensors {stray[:5]} beside {TABLE_KEY!r}")
    modules = {key.removeprefix(MODULE_PREFIX): value for key, value in tensors.items()}
    if not table.is_floating_point():  # .float() would turn a damaged integer table into a silent prefix
        raise PeftFormatError(
            f"{weights_path}: {TABLE_KEY!r} is {table.dtype}; expected a floating-point table"
        )
    for name, tensor in ((TABLE_KEY, table), *((MODULE_PREFIX + k, v) for k, v in modules.items())):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():  # as ptuning's own loader refuses
            raise PeftFormatError(
                f"{weights_path}: NaN or Inf values in tensor {name!r}; expected finite weights"
            )
    return PeftAdapter(folder, config, table.float(), modules, read_sidecar(folder))


def _check_config(config: dict[str, Any], path: Path) -> None:
    if config.get("peft_type") != "PREFIX_TUNING":
        raise PeftFormatError(
            f"{path}: peft_type is {config.get('peft_type')!r}; only PREFIX_TUNING adapters hold a prefix"
        )
    for field in ("num_virtual_tokens", "num_layers", "num_attention_heads", "token_dim"):
        value = config.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise PeftFormatError(f"{path}: {field} must be a positive integer, got {value!r}")
    if config["token_dim"] % config["num_attention_heads"]:
        raise PeftFormatError(
            f"{path}: token_dim {config['token_dim']} is not a multiple of num_attention_heads "
            f"{config['num_attention_heads']}"
        )
    submodules = config.get("num_transformer_submodules")
    submodules = 1 if submodules is None else submodules  # absent or null: PEFT's default, one
    if submodules != 1:
        raise PeftFormatError(
            f"{path}: num_transformer_submodules is {submodules}: an encoder-decoder adapter; ptuning "
            f"supports encoders and decoders only"
        )
    task_type = config.get("task_type")
    if task_type is not None and task_type not in TASK_TYPES:
        raise PeftFormatError(
            f"{path}: task_type {task_type!r} has no ptuning equivalent; expected one of {', '.join(TASK_TYPES)}"
        )


def read_sidecar(folder: str | Path) -> dict[str, Any]:
    """``LABELS_FILE`` checked key by key, or {} when there is none (an adapter PEFT wrote).

    Every key is optional; sidecars written before the others existed hold ``label_names`` only.
    ``label_names``: the head's classes. ``base_model``: ``fingerprint``, ``fingerprint_version``, ``dtype``
    and ``model_type`` of the checkpoint's base, so the import refuses another base as the checkpoint did.
    ``task``, ``task_options``, ``max_length``: the registry task the head was trained for, as the checkpoint
    recorded them, so predict, eval and serve rebuild that task rather than a generic one."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PeftFormatError(f"{path}: not a readable JSON object ({error.__class__.__name__})") from None
    if not isinstance(sidecar, dict):
        raise PeftFormatError(f"{path}: expected a JSON object, found {type(sidecar).__name__}")
    names = sidecar.get("label_names")
    if "label_names" in sidecar and (
        not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
    ):
        raise PeftFormatError(f"{path}: label_names should be a list of non-empty strings, got {names!r}")
    task = sidecar.get("task")
    if "task" in sidecar and (not isinstance(task, str) or not task):
        raise PeftFormatError(f"{path}: task should be a registry task name, got {task!r}")
    if not isinstance(sidecar.get("task_options", {}), dict):
        raise PeftFormatError(f"{path}: task_options should be an object, got {sidecar['task_options']!r}")
    length = sidecar.get("max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise PeftFormatError(f"{path}: max_length should be a positive integer or null, got {length!r}")
    if "base_model" in sidecar:
        _check_sidecar_base(sidecar["base_model"], path)
    return sidecar


def _check_sidecar_base(base: Any, path: Path) -> None:
    if not isinstance(base, dict) or not isinstance(base.get("fingerprint"), str):
        raise PeftFormatError(
            f"{path}: base_model should be an object with the base's fingerprint, got {base!r}"
        )
    version = base.get("fingerprint_version")
    if isinstance(version, bool) or version not in FINGERPRINT_VERSIONS:
        raise PeftFormatError(
            f"{path}: base_model.fingerprint_version should be one of {FINGERPRINT_VERSIONS}, got {version!r}"
        )
    if base.get("dtype") is not None and base["dtype"] not in SAVED_DTYPE_NAMES:
        raise PeftFormatError(
            f"{path}: base_model.dtype should be one of {', '.join(SAVED_DTYPE_NAMES)}, got {base['dtype']!r}"
        )
    if not isinstance(base.get("model_type", ""), str):
        raise PeftFormatError(f"{path}: base_model.model_type should be a string, got {base['model_type']!r}")


def read_labels(folder: str | Path) -> list[str] | None:
    """The label names ``write_adapter`` stored beside the adapter, or None when there is no such file; a
    sidecar without them is refused (only a head without classes is exported without them)."""
    path = Path(folder) / LABELS_FILE
    sidecar = read_sidecar(folder)
    if sidecar and "label_names" not in sidecar:
        raise PeftFormatError(f"{path}: label_names is missing; expected the head's classes")
    return sidecar.get("label_names")


class KeptFilesNote(UserWarning):
    """Files of a replaced adapter folder that an export does not write (PEFT's README.md, a tokenizer) were
    carried into the new folder."""


ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, LABELS_FILE, PICKLED_WEIGHTS)  # what a new export replaces


def _carry_over(folder: Path, staging: Path) -> list[str]:
    """Copy into ``staging`` what ``folder`` holds besides an adapter's own files: the swap replaces the folder
    whole, and PEFT's save_pretrained writes a README.md there (a user adds a tokenizer, a model card)."""
    kept = []
    if not folder.is_dir():
        return kept
    for entry in sorted(folder.iterdir()):
        if entry.name in ADAPTER_FILES or entry.name == RUN_LOCK or (staging / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, staging / entry.name, follow_symlinks=False)
        kept.append(entry.name)
    return kept


def write_adapter(
    folder: str | Path,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    label_names: list[str] | None = None,
    ptuning: dict[str, Any] | None = None,
) -> Path:
    """Write an adapter folder atomically: staged in a sibling, on disk (fsync), then swapped in whole. A
    write that fails (a full disk, a read-only folder) is a ``PeftFormatError`` naming the folder, and leaves
    an adapter written there before as it was.

    ``label_names``: the head's classes, in ``LABELS_FILE`` beside PEFT's files. PEFT keeps labels in the base
    model's config, which an export does not write, and a key of ours in adapter_config.json would make PEFT
    warn about an unknown option; PEFT ignores a file it does not know. ``ptuning``: the other keys of that
    file (``read_sidecar``), which ptuning's import reads back."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(folder)
    except OSError as error:
        raise PeftFormatError(f"{folder}: the adapter was not written ({reason(error)})") from None
    try:
        tensors = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
        save_file(tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        sidecar = {**({"label_names": label_names} if label_names else {}), **(ptuning or {})}
        if sidecar:
            (staging / LABELS_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")
        kept = _carry_over(folder, staging)
        for path in (*staging.iterdir(), staging):
            sync_to_disk(path)  # on disk before the swap: a power loss cannot swap in empty files
        replace_dir(staging, folder)
        sync_to_disk(folder.parent)
    except (OSError, SafetensorError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise PeftFormatError(
            f"{folder}: the adapter was not written ({reason(error)}); an adapter written there before is left "
            "as it was"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if kept:
        warnings.warn(
            f"{folder}: kept {', '.join(kept)} of the adapter folder it replaced (an export does not write them)",
            KeptFilesNote,
            stacklevel=2,
        )
    return folder
