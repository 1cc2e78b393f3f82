"""A ptuning prompt checkpoint written as a PEFT 0.21.2 prefix-tuning adapter folder.

The table is copied as it is (the layouts agree, see ``peft_format``). A prefix-mlp checkpoint is collapsed
into the table its MLP produces: PEFT's file has no place for the MLP (PEFT itself saves the MLP's output
table), so ``prefix_projection`` is written as false, which says what the file holds. Only a shift-mode
prefix means the same thing to PEFT; a keep-mode prefix is refused unless the caller accepts that PEFT
will number positions differently. scripts/check_peft_export.py loads the exports in real PEFT 0.21.2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from ptuning.core.backbones import resolve_model_path
from ptuning.core.checkpoint import is_peft_adapter, read_checkpoint_config, read_weights, weights_file
from ptuning.core.config import Method, PositionMode, PrefixConfig
from ptuning.core.geometry import PrefixGeometry
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.pooler import read_pretrained_pooler
from ptuning.core.prefix import PrefixEncoder
from ptuning.interop.peft_format import MODULE_PREFIX, PEFT_VERSION, TABLE_KEY, PeftFormatError, write_adapter
from ptuning.interop.peft_heads import BASE_POOLER, HeadMapping, mapping_for_ptuning


def _check_out_dir(out_dir: Path, checkpoint_dir: Path) -> None:
    """The adapter folder is replaced whole, so it may only be new, empty or an adapter already: never a file,
    the checkpoint or a folder holding it, or a folder of other files (a run folder lost everything)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PeftFormatError(f"{out_dir} is a file; the adapter is a folder: give a new folder's path")
    out, source = out_dir.resolve(), checkpoint_dir.resolve()
    if out == source or out in source.parents:
        raise PeftFormatError(
            f"{out_dir} holds the checkpoint {checkpoint_dir} that is being exported; give another folder"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_peft_adapter(out_dir):
        raise PeftFormatError(
            f"{out_dir} holds other files and no adapter_config.json; the adapter replaces its folder whole, so "
            "give a new (or empty) folder, or an adapter folder to replace"
        )


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
        geometry = PrefixGeometry.from_config(AutoConfig.from_pretrained(base_path))
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
    if prefix_config.resolved_layers(geometry.num_layers) != tuple(range(geometry.num_layers)):
        raise PeftFormatError(
            f"{checkpoint_dir}: the prefix covers layers {list(prefix_config.layers)} only; PEFT's prefix covers "
            f"every one of the {geometry.num_layers} layers"
        )
    weights = weights_file(checkpoint_dir, config)
    state = read_weights(weights)  # missing, truncated or pickled: one line naming the file
    tensors = {TABLE_KEY: _table(state, entry["prefix"], prefix_config, geometry, weights)}
    head_kind = HeadKind(entry["head"]["kind"])
    if prefix_only:
        task_type, modules = "FEATURE_EXTRACTION", None
    else:
        pooling = entry["head"].get("pooling")
        mapping = mapping_for_ptuning(
            head_kind,
            Pooling(pooling) if pooling else None,
            entry["head"].get("dense_activation"),
            geometry.model_type,
        )
        task_type, modules = mapping.task_type, ([mapping.module] if mapping.module else None)
        if mapping.module is not None:
            tensors.update(_head_tensors(state, task, mapping, base_path, checkpoint_dir))
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
    labels = None if prefix_only else entry["head"].get("label_names")
    return write_adapter(out_dir, peft_config, tensors, labels)


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
    prefix_config: PrefixConfig,
    geometry: PrefixGeometry,
    weights: Path,
) -> torch.Tensor:
    """(P, L*2*kv*d): the stored table, or the one the MLP produces (the same function ptuning runs)."""
    encoder = PrefixEncoder(prefix_config, geometry)
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
