"""A ptuning prompt checkpoint written as a PEFT 0.21.2 prefix-tuning adapter folder.

The table is copied as it is (the layouts agree, see ``peft_format``). A prefix-mlp checkpoint is collapsed
into the table its MLP produces: PEFT's file has no place for the MLP (PEFT itself saves the MLP's output
table), so ``prefix_projection`` is written as false, which says what the file holds. Only a shift-mode
prefix means the same thing to PEFT; a keep-mode prefix is refused unless the caller accepts that PEFT
will number positions differently. A base PEFT cannot run prefix tuning on (its forward takes no cache, or
its layers share weights) is refused here rather than at PEFT's first forward.
scripts/check_peft_export.py loads the exports in real PEFT 0.21.2.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from ptuning.core.backbones import resolve_model_path
from ptuning.core.checkpoint import (
    is_peft_adapter,
    read_checkpoint_config,
    read_weights,
    stored_as_table,
    weights_file,
)
from ptuning.core.config import Method, PositionMode, PrefixConfig
from ptuning.core.folders import check_replaceable
from ptuning.core.geometry import PrefixGeometry
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.pooler import read_pretrained_pooler
from ptuning.core.prefix import PrefixEncoder
from ptuning.interop.peft_format import (
    ADAPTER_CONFIG,
    MODULE_PREFIX,
    PEFT_VERSION,
    TABLE_KEY,
    PeftFormatError,
    sliding_window_difference,
    write_adapter,
)
from ptuning.interop.peft_heads import (
    BASE_POOLER,
    PEFT_TASK_TYPES,
    HeadMapping,
    is_decoder_family,
    mapping_for_ptuning,
    reads_token_types,
    task_class,
)

# PeftModelFor{SequenceClassification,TokenClassification,QuestionAnswering} fall back to the base model inside
# the task class when the task class's forward takes no cache (GPT-2's question answering, BERT's classifiers)
FALLS_BACK_TO_BASE_MODEL = ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS")


class PeftExportNote(UserWarning):
    """The written adapter computes differently in PEFT than the checkpoint in ptuning, for some inputs or all."""


def _check_out_dir(out_dir: Path, checkpoint_dir: Path) -> None:
    """The adapter folder is replaced whole, so it may only be new, empty or an adapter already: never a file,
    the checkpoint or a folder holding it, or a folder of other files (a run folder lost everything); and it
    must be writable. Checked before the checkpoint and its base load, which a bad path threw away."""
    out, source = out_dir.resolve(), checkpoint_dir.resolve()
    if out == source or out in source.parents:
        raise PeftFormatError(
            f"{out_dir} holds the checkpoint {checkpoint_dir} that is being exported; give another folder"
        )
    check_replaceable(out_dir, ADAPTER_CONFIG, "a PEFT adapter", PeftFormatError)


def export_peft(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    task: str | None = None,
    prefix_only: bool = False,
    allow_position_change: bool = False,
) -> Path:
    """Write ``checkpoint_dir``'s prefix (and head, unless ``prefix_only``) as a PEFT adapter in ``out_dir``.

    ``task`` picks one task of a multi-task checkpoint (a PEFT adapter holds one prefix and one head).
    ``prefix_only`` writes a FEATURE_EXTRACTION adapter: the prefix alone, for heads PEFT cannot hold.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if is_peft_adapter(checkpoint_dir):
        raise PeftFormatError(f"{checkpoint_dir} is already a PEFT adapter folder")
    _check_out_dir(Path(out_dir), checkpoint_dir)
    config = read_checkpoint_config(checkpoint_dir)
    method = Method(config["method"])
    if not method.is_deep:
        raise PeftFormatError(
            f"{checkpoint_dir}: method {method} has no per-layer prefix; PEFT's PREFIX_TUNING holds deep prefixes "
            f"({Method.PTUNING_V2}, {Method.PREFIX_MLP})"
        )
    prefix_config = PrefixConfig.from_dict(config["prefix"])
    if prefix_config.position_mode is not PositionMode.SHIFT and not allow_position_change:
        raise PeftFormatError(
            f"{checkpoint_dir}: the prefix was trained with position_mode '{prefix_config.position_mode}' (real "
            f"tokens at 0..T-1); PEFT always numbers them P..P+T-1, so its outputs would differ. Train with "
            f"--position-mode shift for an exact export, or accept the change (--allow-position-change)"
        )
    task = _choose_task(config, task, checkpoint_dir)
    entry = config["tasks"][task]
    base_name = config["base_model"]["name_or_path"]
    base_path = resolve_model_path(base_name)
    try:
        base_config = AutoConfig.from_pretrained(base_path)
        geometry = PrefixGeometry.from_config(base_config)
    except OSError as error:
        raise PeftFormatError(
            f"{checkpoint_dir}: cannot read the config of its base model {base_name!r} ({error.__class__.__name__}); "
            f"the adapter records the base's layer and head counts"
        ) from None
    if (
        geometry.is_encoder_decoder
    ):  # ptuning's table holds E + 2D slots; PEFT lays encoder-decoders out its own way
        raise PeftFormatError(
            f"{checkpoint_dir}: its base {geometry.model_type!r} is an encoder-decoder; exporting encoder-decoder "
            f"prefixes to PEFT is not supported"
        )
    config_layers = getattr(base_config, "num_hidden_layers", geometry.num_layers)
    if geometry.num_layers != config_layers:  # ALBERT: one shared layer, one prefix for every depth
        raise PeftFormatError(
            f"{checkpoint_dir}: its base {geometry.model_type!r} has {config_layers} layers (num_hidden_layers) "
            f"but its prefix {geometry.num_layers} (layers that share weights share a prefix); PEFT gives each of "
            f"the {config_layers} layers its own prefix, so its adapter cannot hold this one"
        )
    if prefix_config.resolved_layers(geometry.num_layers) != tuple(range(geometry.num_layers)):
        raise PeftFormatError(
            f"{checkpoint_dir}: the prefix covers layers {list(prefix_config.layers)} only; PEFT's prefix covers "
            f"every one of the {geometry.num_layers} layers"
        )
    head_kind = HeadKind(entry["head"]["kind"])
    task_type = "FEATURE_EXTRACTION" if prefix_only else PEFT_TASK_TYPES.get(head_kind)
    if task_type is not None:  # else the head mapping below refuses it, with its reason
        _check_peft_runs(task_type, geometry.model_type, checkpoint_dir)
    weights = weights_file(checkpoint_dir, config)
    state = read_weights(weights)  # missing, truncated or pickled: one line naming the file
    tensors = {TABLE_KEY: _table(state, entry["prefix"], config, prefix_config, geometry, weights)}
    if prefix_only:
        modules = None
    else:
        pooling = entry["head"].get("pooling")
        try:
            mapping = mapping_for_ptuning(
                head_kind,
                Pooling(pooling) if pooling else None,
                entry["head"].get("dense_activation"),
                geometry.model_type,
            )
        except PeftFormatError as error:
            raise PeftFormatError(f"{checkpoint_dir}, task {task!r}: {error}") from None
        task_type, modules = mapping.task_type, ([mapping.module] if mapping.module else None)
        if mapping.module is not None:
            tensors.update(_head_tensors(state, task, mapping, base_path, checkpoint_dir))
        if task_type == "SEQ_CLS" and is_decoder_family(geometry.model_type):
            _warn_if_pad_is_eos(base_config, checkpoint_dir)
        if task_type == "QUESTION_ANS":
            _warn_if_token_types_matter(base_config, checkpoint_dir)
    token_dim = geometry.num_kv_heads * geometry.head_dim
    peft_config: dict[str, Any] = {
        "auto_mapping": None,
        "base_model_name_or_path": base_path,
        "encoder_hidden_size": token_dim,
        "inference_mode": True,
        "init_weights": None,
        "modules_to_save": modules,
        "num_attention_heads": geometry.num_kv_heads,  # PEFT's field holds the KV-head count (GQA)
        "num_layers": geometry.num_layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": prefix_config.prefix_length,
        "peft_type": "PREFIX_TUNING",
        "peft_version": PEFT_VERSION,
        "prefix_projection": False,  # the table below is the MLP's output when there was one
        "revision": None,
        "task_type": task_type,
        "token_dim": token_dim,
    }
    if (window := sliding_window_difference(geometry, prefix_config.prefix_length)) is not None:
        warnings.warn(f"{checkpoint_dir}: {window}", PeftExportNote, stacklevel=2)
    if prefix_config.position_mode is not PositionMode.SHIFT:  # accepted above: say what it costs
        warnings.warn(
            f"{checkpoint_dir}: position_mode '{prefix_config.position_mode}' exported anyway "
            f"(--allow-position-change): PEFT numbers real tokens P..P+T-1, not 0..T-1 as in training, so the "
            f"adapter computes other outputs in PEFT than the checkpoint does in ptuning",
            PeftExportNote,
            stacklevel=2,
        )
    labels = None if prefix_only else entry["head"].get("label_names")
    return write_adapter(out_dir, peft_config, tensors, labels, _sidecar(config, task, prefix_only))


def _sidecar(config: dict[str, Any], task: str, prefix_only: bool) -> dict[str, Any]:
    """What the checkpoint knows and PEFT's format cannot hold, for ptuning's import (``read_sidecar``): the
    base's fingerprint, so the adapter is refused on another base as the checkpoint is, and (with the head)
    the registry task, its options and max_length, so predict, eval and serve rebuild the same task."""
    base = config["base_model"]
    recorded = {"fingerprint": base["fingerprint"], "fingerprint_version": base.get("fingerprint_version", 1)}
    recorded.update({key: base[key] for key in ("dtype", "model_type") if key in base})
    sidecar: dict[str, Any] = {"base_model": recorded}
    if not prefix_only:
        entry = config["tasks"][task]
        sidecar["task"] = entry.get("task", task)
        if "task_options" in entry:  # checkpoints written before it was stored: rebuild_task's fallback
            sidecar.update(task_options=entry["task_options"] or {}, max_length=entry.get("max_length"))
    return sidecar


def _check_peft_runs(task_type: str, model_type: str, checkpoint_dir: Path) -> None:
    """Refuse a base PEFT 0.21.2 cannot run prefix tuning on, as its ``_prefix_tuning_forward`` decides: it
    passes the prefix as ``past_key_values`` (``cache`` from transformers 5.24) to the loaded class's forward
    or, for the classifier task types, to the base model inside it; DeBERTa-v2, MPNet, ALBERT, DistilBERT and
    ModernBERT take neither, and PEFT would fail only at the adapter's first forward."""
    loaded = task_class(task_type, model_type)
    if loaded is None:
        raise PeftFormatError(
            f"{checkpoint_dir}: transformers has no {task_type} model class for {model_type!r}, so PEFT cannot "
            f"load the base this adapter needs"
        )
    candidates = [loaded]
    if task_type in FALLS_BACK_TO_BASE_MODEL and (base := task_class("FEATURE_EXTRACTION", model_type)):
        candidates.append(base)
    if not any(_takes_cache(candidate) for candidate in candidates):
        names = " or ".join(f"{candidate.__name__}.forward" for candidate in candidates)
        raise PeftFormatError(
            f"{checkpoint_dir}: PEFT cannot run prefix tuning on its base {model_type!r}: {names} takes no "
            f"past_key_values (or cache), which is how PEFT passes the prefix in"
        )


def _takes_cache(model_class: type) -> bool:
    parameters = inspect.signature(model_class.forward).parameters
    return "past_key_values" in parameters or "cache" in parameters


def _warn_if_pad_is_eos(base_config: PretrainedConfig, checkpoint_dir: Path) -> None:
    """transformers' decoder classifiers pool the last token that is not ``pad_token_id``; where padding is the
    end-of-sequence token (SmolLM2), an input ending in it is pooled at an earlier token than ptuning pools."""
    eos = base_config.eos_token_id
    eos_ids = set(eos) if isinstance(eos, list) else {eos}
    pad = base_config.pad_token_id
    if pad is not None and pad in eos_ids:
        warnings.warn(
            f"{checkpoint_dir}: its base's pad_token_id {pad} is its end-of-sequence token; transformers' "
            f"sequence classifier in PEFT reads the last token that is not {pad}, so an input ending in that "
            f"token gets other logits in PEFT than in ptuning (docs/INTEROP.md)",
            PeftExportNote,
            stacklevel=3,
        )


def _warn_if_token_types_matter(base_config: PretrainedConfig, checkpoint_dir: Path) -> None:
    """PEFT 0.21.2's question answering never passes ``token_type_ids`` on under prefix tuning: on a base with
    token types (BERT: the squad task gives context tokens type 1), PEFT runs every token as type 0."""
    if reads_token_types(base_config):
        warnings.warn(
            f"{checkpoint_dir}: PEFT 0.21.2's question answering ignores token_type_ids under prefix tuning, but "
            f"its base has {base_config.type_vocab_size} token types, which ptuning's QA features use (context tokens are "
            "type 1); the adapter computes other logits in PEFT than the checkpoint does in ptuning "
            "(docs/INTEROP.md)",
            PeftExportNote,
            stacklevel=3,
        )


def _choose_task(config: dict[str, Any], task: str | None, checkpoint_dir: Path) -> str:
    tasks = config["tasks"]
    if task is None:
        if len(tasks) != 1:
            raise PeftFormatError(
                f"{checkpoint_dir} holds tasks {sorted(tasks)}; a PEFT adapter holds one: choose it with --task"
            )
        return next(iter(tasks))
    if task not in tasks:
        raise PeftFormatError(f"{checkpoint_dir} has no task {task!r}; it holds {sorted(tasks)}")
    return task


@torch.no_grad()
def _table(
    state: dict[str, torch.Tensor],
    name: str,
    config: dict[str, Any],
    prefix_config: PrefixConfig,
    geometry: PrefixGeometry,
    weights: Path,
) -> torch.Tensor:
    """(P, L*2*kv*d): the stored table, or the one the MLP produces (the same function ptuning runs)."""
    encoder = PrefixEncoder(prefix_config, geometry)
    if encoder.mlp is not None and stored_as_table(config, state, name):  # saved after collapse_prefixes()
        encoder = encoder.collapse()
    key = f"prefixes.{name}."
    stored = {k.removeprefix(key): v for k, v in state.items() if k.startswith(key)}
    wanted = encoder.state_dict()
    missing = sorted(key + k for k in wanted.keys() - stored.keys())
    misshapen = sorted(key + k for k in wanted.keys() & stored.keys() if wanted[k].shape != stored[k].shape)
    if missing or misshapen:
        raise PeftFormatError(
            f"{weights}: the prefix {name!r} that prompt_config.json describes is not what the file holds "
            f"(missing {missing}, other shapes {misshapen})"
        )
    encoder.load_state_dict(stored)
    return encoder.eval().table().detach().float().contiguous()


def _head_tensors(
    state: dict[str, torch.Tensor], task: str, mapping: HeadMapping, base_path: str, checkpoint_dir: Path
) -> dict[str, torch.Tensor]:
    names = (f"heads.{task}.linear.weight", f"heads.{task}.linear.bias")
    if missing := [name for name in names if name not in state]:
        raise PeftFormatError(
            f"{checkpoint_dir}: its weights file lacks the head of task {task!r} ({missing})"
        )
    weight, bias = (state[name] for name in names)
    tensors = {f"{MODULE_PREFIX}{mapping.linear_prefix}.weight": weight}
    if mapping.has_bias:
        tensors[f"{MODULE_PREFIX}{mapping.linear_prefix}.bias"] = bias
    elif bool(bias.ne(0).any()):
        raise PeftFormatError(
            f"{checkpoint_dir}: head {task!r} has a bias, but transformers' {mapping.module!r} layer has none; "
            f"its logits would differ by the bias (max {float(bias.abs().max()):.3g})"
        )
    dense = (
        {part: state[f"heads.{task}.dense.{part}"] for part in ("weight", "bias")} if mapping.dense else {}
    )
    if mapping.dense == BASE_POOLER:
        pooler = read_pretrained_pooler(base_path)
        if pooler is None or any(not torch.equal(dense[part], pooler[part]) for part in dense):
            raise PeftFormatError(
                f"{checkpoint_dir}: head {task!r} has its own dense layer, but transformers' {mapping.module!r} "
                f"reads the base model's pooler, which a PEFT adapter does not hold (it equals the pooler when "
                f"trained with --pooling pooler or imported unchanged); export the prefix alone with --prefix-only"
            )
    elif mapping.dense is not None:
        tensors.update({f"{MODULE_PREFIX}{mapping.dense}.{part}": value for part, value in dense.items()})
    return tensors
