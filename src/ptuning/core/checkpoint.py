"""Prompt-only checkpoints: the trained prefix + heads in safetensors, everything else in JSON.

A checkpoint is a folder holding the weights and ``prompt_config.json`` (method, prefix config, tasks with
their label names, task options and input length, base model name and fingerprint). The weights file is
named by what it holds: ``prompt.safetensors`` (prefix, MLP, heads) for the prompt methods and linear
probing, a few hundred KB for a P-tuning v2 task; ``model.safetensors`` (the whole model) for fine-tuning.
A checkpoint never executes code when loaded, and refuses a base model other than the one it was trained
on. Every way a folder can be damaged (truncated or pickled weights, a config of the wrong shape) is a
``CheckpointError`` naming the file and what is wrong, so callers (CLI, server) report it in one line
instead of a traceback.

Folders are swapped in whole (``replace_dir``), so a crash never leaves a half-written checkpoint where a
good one was; ``recover_dir`` (run by every load and save) finishes or undoes a swap that a crash cut short.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ptuning import __version__
from ptuning.core.config import ConfigError, Method, PositionMode, PrefixConfig
from ptuning.core.fingerprint import FINGERPRINT_VERSION, FINGERPRINT_VERSIONS, base_fingerprint, dtype_hint
from ptuning.core.folders import (
    check_replaceable,
    reason,
    recover_dir,
    replace_dir,
    staging_dir,
    sync_to_disk,
)
from ptuning.core.geometry import PrefixGeometry
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.precision import BACKBONE_DTYPES, dtype_name, floating_dtype
from ptuning.core.prefix import PrefixEncoder

FORMAT = "ptuning-prompt-checkpoint/1"
WEIGHTS_FILE = "prompt.safetensors"  # methods with a frozen backbone: only the trained prefix and heads
MODEL_WEIGHTS_FILE = "model.safetensors"  # fine-tuning: every weight of the model
WEIGHTS_FILES = (WEIGHTS_FILE, MODEL_WEIGHTS_FILE)
CONFIG_FILE = "prompt_config.json"
# extra's flag of a model that runs every token as type 0 (an imported PEFT question-answering adapter)
IGNORES_TOKEN_TYPES = "ignores_token_type_ids"
# How a prefix is stored: "table" (an embedding table: ptuning-v2, or a collapsed prefix-mlp) or "mlp".
PREFIX_FORMS = ("table", "mlp")
# A PEFT prefix-tuning adapter folder is accepted wherever a checkpoint is: ptuning.interop converts it.
PEFT_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed, or does not fit the model it is loaded onto."""


def weights_file_name(method: Method) -> str:
    """The weights file's name says what it holds: the prompt (and heads), or the whole fine-tuned model."""
    return WEIGHTS_FILE if method.freezes_backbone else MODEL_WEIGHTS_FILE


def _trainable_state(model: PromptModel) -> dict[str, torch.Tensor]:
    keep = ("prefixes.", "heads.") if model.method.freezes_backbone else ("",)
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k.startswith(keep)}


def _load_state(model: PromptModel, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load ``state`` into ``model``: (missing keys, unexpected keys). A frozen backbone is left out, as
    ``_trainable_state`` left it out: a quantized one (torch's dynamic int8 Linear) cannot even be visited
    by ``load_state_dict`` with its keys absent."""
    if not model.method.freezes_backbone:
        return model.load_state_dict(state, strict=False)
    parts = ("prefixes", "heads")
    missing, unexpected = [], [k for k in state if not k.startswith(tuple(f"{p}." for p in parts))]
    for name in parts:
        part = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
        result = getattr(model, name).load_state_dict(part, strict=False)
        missing += [f"{name}.{k}" for k in result.missing_keys]
        unexpected += [f"{name}.{k}" for k in result.unexpected_keys]
    return missing, unexpected


def _prefix_form(prefix: torch.nn.Module) -> str:
    return "mlp" if isinstance(prefix, PrefixEncoder) and prefix.mlp is not None else "table"


def recorded_base_dtype(model: PromptModel) -> str:
    """The backbone dtype a checkpoint records: the one its prompt was trained on (bf16 rounding moves scores,
    so a loader loads that), unless that copy is another base than the fingerprint's (an fp16 copy rounds other
    values: ``model.half()`` after building, or ``.float()`` after an fp16 load), where a loader must load the
    dtype the fingerprint was taken on to find the base at all."""
    current = dtype_name(floating_dtype(model.backbone))
    return current if (current == "fp16") == (model.base_dtype == "fp16") else model.base_dtype


def _check_one_prefix_length(model: PromptModel) -> None:
    """A checkpoint records one prefix length for all its prefixes; a model holding prefixes of other lengths
    (put into ``model.prefixes`` by hand, as a server's mixed batches hold them) would save and not load."""
    expected = model.prefix_config.prefix_length
    other = {name: p.prefix_length for name, p in model.prefixes.items() if p.prefix_length != expected}
    if other:
        raise CheckpointError(
            f"prefixes {other} differ from the model's prefix_length {expected}; a checkpoint holds prefixes "
            "of one length: save each length from a model of its own"
        )


def save_checkpoint(
    model: PromptModel,
    directory: str | Path,
    task_names: dict[str, str] | None = None,
    extra: dict | None = None,
    *,
    task_options: dict[str, dict[str, Any]] | None = None,
    max_length: int | dict[str, int] | None = None,
) -> Path:
    """Write the prompt checkpoint to ``directory``, replacing any previous one atomically.

    ``directory`` must be new, empty or a checkpoint already: it is replaced whole, so a file or a folder of
    other files (a run folder) is refused, as is a folder that cannot be written in. A write that fails (a
    full disk) is a ``CheckpointError`` naming the folder and leaves the previous checkpoint as it was.

    ``task_names`` maps each head to the registry task that decodes its outputs (e.g. {"sst2": "sst2"});
    ``task_options`` (head -> the task's constructor options) and ``max_length`` (one for all heads, or
    per head) are what the training run built its tasks and features with, so that eval, predict and serve
    rebuild them identically (``ptuning.tasks.rebuild``).
    """
    directory = Path(directory)
    _check_one_prefix_length(model)
    check_replaceable(directory, CONFIG_FILE, "a prompt checkpoint", CheckpointError)
    source = getattr(model.backbone, "ptuning_source", None) or model.backbone.config.name_or_path
    lengths = max_length if isinstance(max_length, dict) else dict.fromkeys(model.head_specs, max_length)
    config: dict[str, Any] = {
        "format": FORMAT,
        "ptuning_version": __version__,
        "method": str(model.method),
        "prefix": model.prefix_config.to_dict(),
        "prefix_forms": {name: _prefix_form(prefix) for name, prefix in model.prefixes.items()},
        "head_dropout": model.head_dropout,
        "tasks": {
            task: {
                "head": spec.to_dict(),
                "prefix": model.task_prefix[task],
                "task": (task_names or {}).get(task, task),
                "task_options": dict((task_options or {}).get(task) or {}),
                "max_length": lengths.get(task),
            }
            for task, spec in model.head_specs.items()
        },
        "base_model": {
            "name_or_path": source,
            "model_type": model.geometry.model_type,
            "causal_lm": any(s.kind in ("causal-lm", "seq2seq-lm") for s in model.head_specs.values()),
            "fingerprint": model.base_fingerprint,
            "fingerprint_version": FINGERPRINT_VERSION,
            "dtype": recorded_base_dtype(model),
        },
        "weights_file": weights_file_name(model.method),
        # what a PromptModel subclass computes otherwise (an imported PEFT QA adapter: no token types)
        "extra": {**getattr(model, "saved_extra", {}), **(extra or {})},
    }
    try:
        text = json.dumps(config, indent=2) + "\n"  # NaN scores (a constant prediction's correlation) stay
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{directory}: the checkpoint config is not plain JSON: {error}") from None
    try:  # the loader's own checks, before the swap: a good checkpoint is never replaced by one it refuses
        validate_config(json.loads(text), directory / CONFIG_FILE)
    except CheckpointError as error:
        raise CheckpointError(f"not saved ({directory} left as it was): {error}") from None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(directory)
        staging = staging_dir(directory)
    except OSError as error:
        raise CheckpointError(f"{directory}: not saved ({reason(error)})") from None
    try:
        weights = staging / config["weights_file"]
        save_file(_trainable_state(model), str(weights), metadata={"format": FORMAT})
        (staging / CONFIG_FILE).write_text(text)
        for path in (weights, staging / CONFIG_FILE, staging):
            sync_to_disk(path)  # on disk before the swap: a power loss cannot swap in empty files
        replace_dir(staging, directory)
        sync_to_disk(directory.parent)
    except (OSError, SafetensorError) as error:  # a full disk: one line, the previous checkpoint intact
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(
            f"{directory}: not saved ({reason(error)}); a checkpoint saved there before is left as it was"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


# --- reading and checking --------------------------------------------------------------------------------------


def is_peft_adapter(directory: str | Path) -> bool:
    """A PEFT adapter folder (and not a ptuning checkpoint)."""
    directory = Path(directory)
    return not (directory / CONFIG_FILE).is_file() and (directory / PEFT_ADAPTER_FILES[0]).is_file()


def read_checkpoint_config(directory: str | Path, base_model: str | None = None) -> dict[str, Any]:
    """``prompt_config.json`` checked field by field (``CheckpointError`` otherwise), or the equivalent of a
    PEFT adapter's config (its fingerprint is None).

    ``base_model`` (``--model``): a PEFT adapter's base config is read from it instead of the adapter's
    ``base_model_name_or_path`` (often a hub id, unreachable offline); a ptuning checkpoint ignores it."""
    directory = Path(directory)
    recover_dir(directory)
    if is_peft_adapter(directory):
        # Imported here, not at the top: core does not depend on interop; interop depends on core.
        from ptuning.interop.peft_import import peft_checkpoint_config

        return peft_checkpoint_config(directory, base_model=base_model)
    path = directory / CONFIG_FILE
    if not path.is_file():
        if not directory.exists():
            raise CheckpointError(f"{directory}: no such checkpoint folder")
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is a file; a prompt checkpoint is a folder")
        # a training run's folder: its best checkpoint is inside
        inner = directory / "checkpoint" / CONFIG_FILE
        hint = f"; did you mean {directory / 'checkpoint'}?" if inner.is_file() else ""
        raise CheckpointError(f"{directory} is not a prompt checkpoint: {CONFIG_FILE} is missing{hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: cannot be read: {error}") from None
    validate_config(config, path)
    return config


def validate_config(config: Any, path: Path | str) -> None:
    """Refuse a ``prompt_config.json`` that does not have the shape ``save_checkpoint`` writes.

    The message names the file, the field (dotted path) and what was expected, e.g.
    ``.../prompt_config.json: field 'base_model.name_or_path' is missing (expected a model name or folder)``.
    """
    check = _Checker(path)
    check.type(config, "", dict, "a JSON object")
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    missing = [
        key for key in ("method", "prefix", "head_dropout", "tasks", "base_model") if key not in config
    ]
    if missing:
        raise CheckpointError(f"{path}: missing fields {missing}")
    check.choice(config["method"], "method", [m.value for m in Method])
    check.type(config["prefix"], "prefix", dict, "an object of prefix settings")
    try:
        PrefixConfig.from_dict(config["prefix"])
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: field 'prefix': {error}") from None
    dropout = config["head_dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        check.fail("head_dropout", "a number in [0, 1)", dropout)
    tasks = config["tasks"]
    check.type(tasks, "tasks", dict, "an object of task name -> task entry")
    if not tasks:
        check.fail("tasks", "at least one task", tasks)
    for name, entry in tasks.items():
        where = f"tasks.{name}"
        check.type(entry, where, dict, "an object with 'head' and 'prefix'")
        check.required(entry, where, "head", dict, "an object with the head's kind and labels")
        head = entry["head"]
        check.required(head, f"{where}.head", "kind", str, "a head kind")
        check.choice(head["kind"], f"{where}.head.kind", [k.value for k in HeadKind])
        labels = head.get("label_names")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(label, str) for label in labels)
        ):
            check.fail(f"{where}.head.label_names", "a list of strings or null", labels)
        if head.get("pooling") is not None:
            check.choice(head["pooling"], f"{where}.head.pooling", [p.value for p in Pooling])
        check.type(head.get("frozen_dense", False), f"{where}.head.frozen_dense", bool, "true or false")
        check.required(entry, where, "prefix", str, "the name of the prefix it uses")
        check.type(entry.get("task", name), f"{where}.task", str, "a registry task name")
        if entry.get("task_options") is not None:
            check.type(entry["task_options"], f"{where}.task_options", dict, "an object of task options")
        length = entry.get("max_length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            check.fail(f"{where}.max_length", "a positive integer or null", length)
    forms = config.get("prefix_forms", {})
    check.type(forms, "prefix_forms", dict, "an object of prefix name -> 'table' or 'mlp'")
    prefixes = sorted({entry["prefix"] for entry in tasks.values()})
    for name, form in forms.items():
        if name not in prefixes:  # a typo would leave the real prefix's form to be guessed from its tensors
            check.fail("prefix_forms", f"keyed by the tasks' prefixes ({', '.join(prefixes)})", name)
        check.choice(form, f"prefix_forms.{name}", list(PREFIX_FORMS))
    base = config["base_model"]
    check.type(base, "base_model", dict, "an object naming the base model")
    check.required(base, "base_model", "name_or_path", str, "the base model's name or folder")
    check.required(base, "base_model", "fingerprint", str, "the base model's fingerprint")
    check.type(base.get("model_type", ""), "base_model.model_type", str, "a model type")
    check.type(base.get("causal_lm", False), "base_model.causal_lm", bool, "true or false")
    if "dtype" in base:
        check.choice(base["dtype"], "base_model.dtype", SAVED_DTYPE_NAMES)
    version = base.get("fingerprint_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in FINGERPRINT_VERSIONS:
        check.fail("base_model.fingerprint_version", f"one of the integers {FINGERPRINT_VERSIONS}", version)
    if config.get("weights_file") is not None:
        check.choice(config["weights_file"], "weights_file", list(WEIGHTS_FILES))
    check.type(config.get("extra", {}), "extra", dict, "an object")


def _saved_dtype_names() -> list[str]:
    """What ``save_checkpoint`` writes as ``base_model.dtype``: ``dtype_name`` of a floating dtype, i.e. the
    backbone dtypes' short names, else torch's own name (``"float64"``)."""
    floating = {v for v in vars(torch).values() if isinstance(v, torch.dtype) and v.is_floating_point}
    return [*BACKBONE_DTYPES, *sorted({dtype_name(d) for d in floating} - set(BACKBONE_DTYPES))]


SAVED_DTYPE_NAMES = _saved_dtype_names()


class _Checker:
    """Type checks that end in one ``CheckpointError`` naming the file and the dotted field."""

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def fail(self, field: str, expected: str, found: Any) -> None:
        shown = json.dumps(found)[:80] if _is_json(found) else repr(found)[:80]
        where = f"field {field!r}" if field else "the top level"
        raise CheckpointError(f"{self.path}: {where} should be {expected}, found {shown}")

    def type(self, value: Any, field: str, kind: type, expected: str) -> None:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(field, expected, value)

    def required(self, parent: dict, where: str, key: str, kind: type, expected: str) -> None:
        if key not in parent:
            raise CheckpointError(f"{self.path}: field '{where}.{key}' is missing (expected {expected})")
        self.type(parent[key], f"{where}.{key}", kind, expected)

    def choice(self, value: Any, field: str, allowed: list[str]) -> None:
        if not isinstance(value, str) or value not in allowed:
            self.fail(field, f"one of {', '.join(allowed)}", value)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def weights_file(directory: str | Path, config: dict[str, Any]) -> Path:
    """The checkpoint's weights file: the name its config records, or (folders written before it did) the
    one of WEIGHTS_FILES present."""
    directory = Path(directory)
    name = config.get("weights_file")
    if name is None:
        name = next((n for n in WEIGHTS_FILES if (directory / n).is_file()), WEIGHTS_FILE)
    return directory / name


def is_pickle_file(path: Path) -> bool:
    """Whether a weights file that safetensors cannot read is torch.save's zip or a pickle (protocol 2+): said
    as such, since its name promised safetensors and it is never unpickled."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or a ``CheckpointError`` saying why not (never unpickles)."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {path.name} is missing")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError (truncated, corrupt header)
        if is_pickle_file(path):
            raise CheckpointError(
                f"{path}: a pickle/torch.save file, not safetensors; it is not loaded, since unpickling can "
                "run code"
            ) from None
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None
    # A NaN or Inf weight loads without complaint and then makes every prediction NaN (a label picked from
    # NaN scores, chance accuracy): refuse it here, one check per tensor.
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: NaN or Inf values in tensor {name!r}; expected finite weights")
    return state


def trained_dtype(config: dict[str, Any]) -> str | None:
    """The backbone dtype a checkpoint's prompt was trained on when it was not fp32 (``base_model.dtype``):
    bf16 rounding moves scores and an fp16 copy is another base (its fingerprint), so a loader that loads
    the base itself loads it so by default."""
    recorded = config["base_model"].get("dtype")
    return recorded if recorded in ("bf16", "fp16") else None


def check_backbone_dtype(backbone: torch.nn.Module | None, backbone_dtype: str | None) -> None:
    """``backbone_dtype`` says how to load the base; a given backbone is already loaded, so both is refused
    rather than one silently ignored."""
    if backbone is not None and backbone_dtype is not None:
        raise ConfigError(
            f"backbone_dtype={backbone_dtype!r} applies only when load_checkpoint loads the base model itself; "
            f"the given backbone is stored in {dtype_name(floating_dtype(backbone))}: convert it, or give no backbone"
        )


def load_checkpoint(
    directory: str | Path,
    backbone: torch.nn.Module | None = None,
    prefix_only: bool = False,
    *,
    backbone_dtype: str | None = None,
) -> PromptModel:
    """Rebuild the PromptModel saved in ``directory`` on ``backbone`` (loaded from the saved name if None).

    ``backbone_dtype`` (``"fp32" | "bf16" | "fp16" | "auto"``, only without ``backbone``): the dtype the base
    is loaded in; None loads it in the dtype the prompt was trained on (``base_model.dtype``, as
    ``ptuning predict`` does), since a bf16 prompt's scores move on fp32 and an fp16 one fits no other copy.
    ``prefix_only``: the caller takes the prefix alone (``--init-prefix-from``). A ptuning checkpoint still
    loads whole, but its heads are not checked against ``backbone`` (a classification prompt trained on a
    decoder seeds a causal-LM run on the same folder, loaded with its LM head); a PEFT prefix-tuning adapter
    (see ptuning.interop.peft_import) imports its prefix, also when its head has no ptuning equivalent.
    """
    directory = Path(directory)
    if is_peft_adapter(directory):
        from ptuning.interop.peft_import import load_peft_adapter

        return load_peft_adapter(directory, backbone, prefix_only=prefix_only, backbone_dtype=backbone_dtype)
    check_backbone_dtype(backbone, backbone_dtype)
    config = read_checkpoint_config(directory)
    config_path = directory / CONFIG_FILE
    weights_path = weights_file(directory, config)
    state = read_weights(weights_path)  # before the (slow) base model: a damaged file fails fast
    base = config["base_model"]
    if backbone is None:
        from ptuning.core.backbones import load_backbone

        if not base["name_or_path"]:
            raise CheckpointError(f"{config_path}: 'base_model.name_or_path' is empty; give the base model")
        backbone, _ = load_backbone(
            base["name_or_path"],
            causal_lm=base.get("causal_lm", False),
            dtype=backbone_dtype or trained_dtype(config),
        )
    check_base(config, backbone, directory)
    try:
        method = Method(config["method"])
        prefix = _saved_prefix(config, method, PrefixGeometry.from_model(backbone))
        model = _model_class(config)(backbone, method, prefix, config["head_dropout"])
    except (ConfigError, ValueError, KeyError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    try:
        _fill(model, config, state, config_path, weights_path, check_heads=not prefix_only)
    except BaseException:
        model.detach_backbone()  # no model reaches the caller: give its backbone back as found
        raise
    model.eval()
    return model


def _model_class(config: dict[str, Any]) -> type[PromptModel]:
    """PromptModel, or the subclass whose quirk the checkpoint records (``extra``): a PEFT question-answering
    adapter saved again after its import still drops token types, as PEFT trained it."""
    if config.get("extra", {}).get(IGNORES_TOKEN_TYPES):
        from ptuning.interop.peft_import import PeftQuestionAnsweringModel

        return PeftQuestionAnsweringModel
    return PromptModel


def _saved_prefix(config: dict[str, Any], method: Method, geometry: PrefixGeometry) -> PrefixConfig:
    """The saved prefix config, without the fields ``method`` never reads (``PrefixConfig.unread_fields``):
    checkpoints written before models refused them hold them, and they had no effect on what was trained.
    Likewise position_mode 'shift' on a backbone that numbers its own positions (``check_shift_numbering``):
    such a prefix was trained with the positions of 'keep', and loads as that."""
    prefix = PrefixConfig.from_dict(config["prefix"])
    defaults = PrefixConfig()
    prefix = dataclasses.replace(prefix, **{f: getattr(defaults, f) for f in prefix.unread_fields(method)})
    if prefix.position_mode is PositionMode.SHIFT and not geometry.takes_position_ids:
        prefix = dataclasses.replace(prefix, position_mode=PositionMode.KEEP)
    return prefix


def _fill(
    model: PromptModel,
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    config_path: Path,
    weights_path: Path,
    check_heads: bool = True,
) -> None:
    """The checkpoint's tasks and prefixes on ``model``, with the saved weights."""
    try:
        for task, entry in config["tasks"].items():
            spec = HeadSpec.from_dict(entry["head"])
            model.add_task(task, spec, prefix_name=entry["prefix"], check_head=check_heads)
    except (ConfigError, ValueError, KeyError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    _collapse_stored_tables(model, config, state)
    try:
        missing, unexpected = _load_state(model, state)
    except RuntimeError as error:  # shapes that do not fit the saved config
        raise CheckpointError(f"{weights_path} does not fit {config_path}: {error}") from None
    expected = _trainable_state(model).keys()
    missing = [k for k in missing if k in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )


def _collapse_stored_tables(
    model: PromptModel, config: dict[str, Any], state: dict[str, torch.Tensor]
) -> None:
    """Prefix-mlp prefixes saved after ``collapse_prefixes()`` are tables: build them as tables.

    ``prefix_forms`` says so; checkpoints written before it existed are recognised by their tensors (an
    MLP prefix without any ``mlp.`` tensor was collapsed), so those load too.
    """
    for name, prefix in list(model.prefixes.items()):
        if _prefix_form(prefix) == "mlp" and stored_as_table(config, state, name):
            model.prefixes[name] = prefix.collapse()


def stored_as_table(config: dict[str, Any], state: dict[str, torch.Tensor], name: str) -> bool:
    """Whether prefix ``name`` of a prefix-mlp checkpoint was saved collapsed into its table: ``prefix_forms``
    says so, or (checkpoints written before it existed) no ``mlp.`` tensor of it was stored."""
    forms = config.get("prefix_forms") or {}
    if name in forms:
        return forms[name] == "table"
    return not any(key.startswith(f"prefixes.{name}.mlp.") for key in state)


def check_base(config: dict[str, Any], backbone: torch.nn.Module, directory: Path | str = "") -> None:
    """Refuse to put a prompt on a backbone other than the one it was trained with."""
    base = config["base_model"]
    version = base.get("fingerprint_version", 1)
    actual = base_fingerprint(backbone, version=version)
    if actual != base["fingerprint"]:
        source = getattr(backbone, "ptuning_source", None) or backbone.config.name_or_path
        hint = dtype_hint(backbone, base.get("dtype"))
        if not hint and source == base["name_or_path"] and config.get("method") == Method.FINETUNE:
            # the README's pattern after fine-tuning: the backbone object that was trained in place
            hint = (
                "; same name, other weights: was it fine-tuned in place? Load a fine-tuning checkpoint onto a "
                "fresh copy of the base model (or with no backbone, to load it by name)"
            )
        raise CheckpointError(
            f"checkpoint {directory} was trained on {base['name_or_path']!r} ({base.get('model_type')}, "
            f"fingerprint {base['fingerprint']}) but the given base model is {source!r} "
            f"({backbone.config.model_type}, fingerprint {actual}){hint}"
        )
