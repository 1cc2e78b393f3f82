"""A PEFT prefix-tuning adapter as a ptuning PromptModel: same table, same positions, same head.

PEFT treats the prefix as P past tokens, so real tokens get positions P..P+T-1: the import keeps that
(``position_mode="shift"``) and says so with a ``PeftPositionNote`` warning, because ptuning's default
(``keep``) would give other outputs. With the same table, shift-mode ptuning and PEFT 0.21.2 compute
bit-identical outputs (tests/interop). A PEFT adapter carries no fingerprint of its base model; the import
checks what it can: the layer count, KV-head count and head size the table was made for. An adapter written
by ``ptuning export`` also carries, in its sidecar file (``peft_format.read_sidecar``), the checkpoint's base
fingerprint, registry task, task options and max_length: the import then refuses another base as the
checkpoint did and rebuilds the task it was trained for.

PEFT 0.21.2's question answering never passes ``token_type_ids`` on under prefix tuning (its forward takes
them by name and drops them), so a QUESTION_ANS adapter was trained and runs with every token of type 0: the
import builds a ``PeftQuestionAnsweringModel``, which ignores token types the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ptuning import __version__
from ptuning.core.checkpoint import (
    FORMAT,
    IGNORES_TOKEN_TYPES,
    check_backbone_dtype,
    check_base,
    trained_dtype,
)
from ptuning.core.config import Method, PositionMode, PrefixConfig
from ptuning.core.geometry import PrefixGeometry
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.pooler import read_pretrained_pooler
from ptuning.core.prefix import PrefixEncoder
from ptuning.interop.peft_format import (
    ADAPTER_WEIGHTS,
    LABELS_FILE,
    PeftAdapter,
    PeftFormatError,
    read_adapter,
    read_labels,
    sliding_window_difference,
)
from ptuning.interop.peft_heads import (
    BASE_POOLER,
    HeadMapping,
    mapping_for_peft,
    reads_token_types,
    with_rows,
)

HEAD_NAME = "adapter"  # the one task of an imported adapter
HEAD_DROPOUT = 0.1  # transformers' classifier dropout default; inactive in eval
# The registry task that reads, decodes and scores each PEFT task type (``--task``-free predict/eval/serve).
REGISTRY_TASK = {
    HeadKind.CLASSIFICATION: "csv-classification",
    HeadKind.REGRESSION: "stsb",
    HeadKind.TOKEN_CLASSIFICATION: "ner-generic",
    HeadKind.QUESTION_ANSWERING: "squad",
    HeadKind.CAUSAL_LM: "causal-lm",
}


class PeftPositionNote(UserWarning):
    """An imported PEFT prefix keeps PEFT's shifted positions (position_mode='shift')."""


class PeftRevisionNote(UserWarning):
    """The adapter pins a hub revision of its base model, which ptuning does not load by revision."""


class PeftWindowNote(UserWarning):
    """An imported adapter's base has sliding-window layers, which see the prefix otherwise than in PEFT."""


class PeftTokenTypeNote(UserWarning):
    """An imported QUESTION_ANS adapter ignores token_type_ids, as PEFT 0.21.2 does."""


class PeftQuestionAnsweringModel(PromptModel):
    """An imported PEFT QUESTION_ANS adapter: every token is of type 0, whatever token types the task gives.

    Why: PEFT 0.21.2's ``PeftModelForQuestionAnswering.forward`` takes ``token_type_ids`` by name and never
    passes them on under prefix tuning, so the adapter was trained (and PEFT runs it) on type 0 only, while
    the squad task gives context tokens type 1. ``encode`` is where this model's forward reaches the backbone,
    so dropping them there reproduces PEFT for eval and predict."""

    saved_extra = {IGNORES_TOKEN_TYPES: True}  # save_checkpoint records it; load_checkpoint builds this class

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        prefix_names: Sequence[str],
        position_ids: torch.Tensor | None = None,
        first_token_only: bool = False,
    ) -> torch.Tensor:
        return super().encode(input_ids, attention_mask, None, prefix_names, position_ids, first_token_only)


def _given_base_path(adapter: PeftAdapter, base_config: dict[str, Any]) -> str:
    """The given backbone's own source (its config's path), else the adapter's base_model_name_or_path: the
    base the caller gave is the one read (its pooler), not the adapter's, which may be an unreachable hub id."""
    source = base_config.get("_name_or_path")
    if isinstance(source, str) and source:
        return source
    if adapter.config.get("base_model_name_or_path"):
        return base_model_path(adapter)  # which checks it
    raise PeftFormatError(
        f"{adapter.folder}: adapter_config.json has no base_model_name_or_path and the given base model "
        "does not say where it was loaded from; pass a base model loaded from its folder or hub id"
    )


def base_model_path(adapter: PeftAdapter) -> str:
    """``base_model_name_or_path``; a relative path that exists next to the adapter is taken from there."""
    name = adapter.config.get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        raise PeftFormatError(
            f"{adapter.folder}: adapter_config.json has no base_model_name_or_path; pass the base model"
        )
    local = adapter.folder / name
    if not Path(name).is_absolute() and not Path(name).exists() and local.exists():
        return str(local.resolve())
    revision = adapter.config.get("revision")
    if revision and not Path(name).expanduser().exists():  # a hub name: a folder has no revisions
        warnings.warn(
            f"{adapter.folder}: the adapter was trained on revision {revision!r} of {name}, but ptuning loads "
            f"{name} as the hub (or its cache) serves it by default; if that revision differs, pass a folder "
            "holding that revision as the base model",
            PeftRevisionNote,
            stacklevel=2,
        )
    return name


def _base_config(adapter: PeftAdapter, path: str) -> dict[str, Any]:
    """The base model's config (its architecture decides which heads map; it also names the labels)."""
    from transformers import AutoConfig

    from ptuning.core.backbones import resolve_model_path

    try:
        return AutoConfig.from_pretrained(resolve_model_path(path)).to_dict()
    except (OSError, ValueError) as error:
        raise PeftFormatError(
            f"{adapter.folder}: cannot read the config of its base model {path!r} "
            f"({error.__class__.__name__}); the head mapping depends on the base's architecture"
        ) from None


def _head_rows(adapter: PeftAdapter, mapping: HeadMapping) -> int:
    if mapping.module is None:
        return 0
    weight = adapter.modules.get(f"{mapping.linear_prefix}.weight")
    if weight is None:
        raise PeftFormatError(
            f"{adapter.folder}: task_type {adapter.task_type} needs the head {mapping.module!r} in "
            f"modules_to_save; the weights file has {sorted(adapter.modules) or 'no head tensors'}"
        )
    return weight.shape[0]


def _head_mapping(adapter: PeftAdapter, model_type: str) -> HeadMapping:
    """The ptuning head for this adapter; unknown extra modules are refused (they would be dropped), and a
    head whose tensors are not the base's (an adapter made for another family) is named as such."""
    try:
        mapping = mapping_for_peft(adapter.task_type, model_type)
    except PeftFormatError as error:
        raise PeftFormatError(f"{adapter.folder / 'adapter_config.json'}: {error}") from None
    expected, needed = set(), set()
    for prefix in (mapping.linear_prefix, mapping.dense):
        if prefix is not None and prefix != BASE_POOLER:
            expected |= {f"{prefix}.weight", f"{prefix}.bias"}
            needed.add(f"{prefix}.weight")
    found = set(adapter.modules)
    if found and not needed <= found and found - expected:
        raise PeftFormatError(
            f"{adapter.folder}: the {model_type} base's {mapping.task_type} head {mapping.module!r} holds "
            f"{sorted(expected)}, but {ADAPTER_WEIGHTS} has {sorted(found)}; was the adapter made for another "
            "base model? Load it on the base it was trained on"
        )
    if not mapping.has_bias and f"{mapping.linear_prefix}.bias" in adapter.modules:
        raise PeftFormatError(
            f"{adapter.folder}: it holds {mapping.linear_prefix}.bias, but transformers' {mapping.module!r} layer "
            "has no bias: PEFT drops the tensor, ptuning would add it, and the logits would differ; remove it"
        )
    extra = sorted(set(adapter.modules) - expected)
    if extra:
        raise PeftFormatError(
            f"{adapter.folder}: the adapter also trained {extra}; ptuning keeps the base model frozen "
            f"apart from the prefix and one {mapping.kind} head, so these weights cannot be kept"
        )
    return with_rows(mapping, _head_rows(adapter, mapping))


def _label_names(
    adapter: PeftAdapter, mapping: HeadMapping, rows: int, base: dict[str, Any]
) -> list[str] | None:
    """The head's classes: those ptuning's export stored beside the adapter, else the base config's id2label
    when it has as many, else LABEL_0.."""
    if mapping.kind not in (HeadKind.CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION):
        return None
    stored = read_labels(adapter.folder)
    if stored is not None:
        if len(stored) != rows:
            raise PeftFormatError(
                f"{adapter.folder / LABELS_FILE}: {len(stored)} label names for a head of {rows} rows"
            )
        return stored
    id2label = base.get("id2label") or {}
    names = [id2label.get(str(i), id2label.get(i)) for i in range(rows)]
    return names if all(names) and len(id2label) == rows else [f"LABEL_{i}" for i in range(rows)]


def peft_checkpoint_config(
    folder: str | Path, base_config: dict[str, Any] | None = None, base_model: str | None = None
) -> dict[str, Any]:
    """The adapter described as ptuning's ``prompt_config.json`` (what ``read_checkpoint_config`` returns).

    ``base_config`` (a loaded backbone's config) or ``base_model`` (a folder or hub id, e.g. ``--model``)
    stands for the adapter's ``base_model_name_or_path``, which is then never read. The base fingerprint is
    None unless ptuning's export recorded it (PEFT stores none, so only the prefix's shape is checked on
    load); the task is the one the export recorded, else the generic one for the head (``REGISTRY_TASK``).
    """
    adapter = read_adapter(folder)
    if base_config is not None:  # the adapter's own field may be missing (PEFT does not require it)
        base, base_path = base_config, _given_base_path(adapter, base_config)
    else:
        base_path = base_model or base_model_path(adapter)
        base = _base_config(adapter, base_path)
    model_type = base.get("model_type", "unknown")
    mapping = _head_mapping(adapter, model_type)
    task = {"task": adapter.sidecar.get("task", REGISTRY_TASK[mapping.kind])}
    if "task_options" in adapter.sidecar:  # as the checkpoint recorded it; else rebuild_task's fallback
        task.update(
            task_options=adapter.sidecar["task_options"], max_length=adapter.sidecar.get("max_length")
        )
    rows = _head_rows(adapter, mapping)
    prefix = PrefixConfig(
        prefix_length=adapter.num_virtual_tokens,
        dropout=0.0,  # PEFT has no dropout on the prefix
        position_mode=PositionMode.SHIFT,
    )
    head = HeadSpec(
        mapping.kind,
        _label_names(adapter, mapping, rows, base),
        mapping.pooling,
        mapping.activation,
        frozen_dense=mapping.dense
        == BASE_POOLER,  # a base weight, frozen in PEFT as under `--pooling pooler`
    )
    return {
        "format": FORMAT,
        "ptuning_version": __version__,
        "method": str(Method.PTUNING_V2),
        "prefix": prefix.to_dict(),
        "head_dropout": HEAD_DROPOUT,
        "tasks": {HEAD_NAME: {"head": head.to_dict(), "prefix": HEAD_NAME, **task}},
        "base_model": {
            "name_or_path": base_path,
            "model_type": model_type,
            "causal_lm": mapping.kind is HeadKind.CAUSAL_LM,
            "fingerprint": None,
            **_recorded_base(adapter),
        },
        "extra": {
            "imported_from": "peft",
            "peft_version": adapter.config.get("peft_version"),
            "peft_task_type": adapter.task_type,
            "prefix_projection": bool(adapter.config.get("prefix_projection")),
            IGNORES_TOKEN_TYPES: mapping.kind is HeadKind.QUESTION_ANSWERING,  # PEFT's, see the module
        },
    }


def _recorded_base(adapter: PeftAdapter) -> dict[str, Any]:
    """The base fields ptuning's export recorded (fingerprint, its version, dtype), or {} (PEFT's own)."""
    recorded = adapter.sidecar.get("base_model") or {}
    return {key: recorded[key] for key in ("fingerprint", "fingerprint_version", "dtype") if key in recorded}


def check_recorded_base(adapter: PeftAdapter, backbone: torch.nn.Module) -> None:
    """Refuse, as for the checkpoint it was exported from, a backbone other than the recorded base (a base
    of the same shape passes ``check_geometry``, and its outputs would be silently wrong)."""
    recorded = adapter.sidecar.get("base_model")
    if recorded:
        name = adapter.config.get("base_model_name_or_path") or ""
        check_base({"base_model": {"name_or_path": name, **recorded}}, backbone, adapter.folder)


def check_geometry(adapter: PeftAdapter, geometry: PrefixGeometry) -> None:
    """Refuse a base model whose layers / KV heads / head size differ from the ones the table was made for."""
    made_for = (adapter.num_layers, adapter.num_kv_heads, adapter.head_dim)
    given = (geometry.num_layers, geometry.num_kv_heads, geometry.head_dim)
    if made_for != given:
        raise PeftFormatError(
            f"{adapter.folder}: the adapter's prefix was made for {made_for[0]} layers x {made_for[1]} KV heads "
            f"x head size {made_for[2]}, but the given {geometry.model_type} base has {given[0]} x {given[1]} x "
            f"{given[2]}"
        )


def load_peft_adapter(
    folder: str | Path,
    backbone: torch.nn.Module | None = None,
    prefix_only: bool = False,
    *,
    backbone_dtype: str | None = None,
) -> PromptModel:
    """A PromptModel equal to the PEFT adapter in ``folder`` on ``backbone`` (loaded from the adapter's
    ``base_model_name_or_path`` if None, in ``backbone_dtype``, else the dtype ptuning's export recorded).

    ``prefix_only`` imports the prefix without a task (for ``--init-prefix-from``), which also works for
    adapters whose head has no ptuning equivalent.
    """
    check_backbone_dtype(backbone, backbone_dtype)
    adapter = read_adapter(folder)
    if backbone is None:
        from ptuning.core.backbones import load_backbone

        causal = adapter.task_type == "CAUSAL_LM"
        dtype = backbone_dtype or trained_dtype({"base_model": _recorded_base(adapter)})
        backbone, _ = load_backbone(base_model_path(adapter), causal_lm=causal, dtype=dtype)
    check_recorded_base(adapter, backbone)
    geometry = PrefixGeometry.from_config(backbone.config)
    check_geometry(adapter, geometry)
    prefix = PrefixConfig(
        prefix_length=adapter.num_virtual_tokens, dropout=0.0, position_mode=PositionMode.SHIFT
    )
    warnings.warn(
        f"{adapter.folder}: PEFT numbers real tokens after its {adapter.num_virtual_tokens} prefix slots; "
        f"the imported prefix keeps that (position_mode='shift')",
        PeftPositionNote,
        stacklevel=2,
    )
    if (window := sliding_window_difference(geometry, adapter.num_virtual_tokens)) is not None:
        warnings.warn(f"{adapter.folder}: {window}", PeftWindowNote, stacklevel=2)
    question_answering = adapter.task_type == "QUESTION_ANS" and not prefix_only
    model_class = PeftQuestionAnsweringModel if question_answering else PromptModel
    model = model_class(backbone, Method.PTUNING_V2, prefix, HEAD_DROPOUT)
    if question_answering and reads_token_types(backbone.config):
        warnings.warn(
            f"{adapter.folder}: PEFT 0.21.2's question answering never passes token_type_ids to the model under "
            "prefix tuning, so the adapter was trained with every token of type 0; the imported model ignores "
            "token types the same way",
            PeftTokenTypeNote,
            stacklevel=2,
        )
    if prefix_only:
        model.prefixes[HEAD_NAME] = PrefixEncoder(prefix, geometry).to(next(backbone.parameters()).device)
    else:
        config = peft_checkpoint_config(folder, backbone.config.to_dict())
        head = HeadSpec.from_dict(config["tasks"][HEAD_NAME]["head"])
        model.add_task(HEAD_NAME, head)
        _copy_head(
            model, adapter, _head_mapping(adapter, geometry.model_type), config["base_model"]["name_or_path"]
        )
    encoder = model.prefixes[HEAD_NAME]
    with torch.no_grad():
        encoder.embedding.weight.copy_(adapter.table)
    return model.eval()


@torch.no_grad()
def _copy_head(model: PromptModel, adapter: PeftAdapter, mapping: HeadMapping, base_path: str) -> None:
    if mapping.module is None:
        return
    head = model.heads[HEAD_NAME]
    _copy_linear(head.linear, _linear_tensors(adapter, mapping.linear_prefix), adapter, mapping)
    if mapping.dense == BASE_POOLER:
        pooler = read_pretrained_pooler(base_path)
        if pooler is None:
            raise PeftFormatError(
                f"{adapter.folder}: its {mapping.module!r} reads the base model's pooler, but the base checkpoint "
                f"{base_path!r} holds no local pooler weights (transformers would start them "
                f"at random, so PEFT's logits cannot be reproduced); import the prefix alone (prefix_only=True)"
            )
        _copy_linear(head.dense, pooler, adapter, mapping)  # frozen by add_task (HeadSpec.frozen_dense)
    elif mapping.dense is not None:
        _copy_linear(head.dense, _linear_tensors(adapter, mapping.dense), adapter, mapping)


def _linear_tensors(adapter: PeftAdapter, prefix: str) -> dict[str, torch.Tensor]:
    return {
        part: adapter.modules[f"{prefix}.{part}"]
        for part in ("weight", "bias")
        if f"{prefix}.{part}" in adapter.modules
    }


def _copy_linear(
    linear: torch.nn.Linear, tensors: dict[str, torch.Tensor], adapter: PeftAdapter, mapping: HeadMapping
) -> None:
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if weight is None:
        raise PeftFormatError(
            f"{adapter.folder}: {ADAPTER_WEIGHTS} lacks a weight of its {mapping.module} head (it has "
            f"{sorted(tensors)}); the head cannot be rebuilt"
        )
    for part, tensor, wanted in (("weight", weight, linear.weight), ("bias", bias, linear.bias)):
        if tensor is not None and tuple(tensor.shape) != tuple(wanted.shape):
            raise PeftFormatError(
                f"{adapter.folder}: a {mapping.module} {part} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(wanted.shape)} for a {mapping.kind} head on this base"
            )
    linear.weight.copy_(weight)
    linear.bias.copy_(bias if bias is not None else torch.zeros_like(linear.bias))
