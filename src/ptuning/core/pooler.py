"""The checkpoint's own pooler as a head's dense layer: [CLS] -> dense -> tanh, frozen.

Why: BERT-family checkpoints ship a pooler (dense + tanh over [CLS]) that transformers'
``*ForSequenceClassification``, and so PEFT's prefix tuning, reads through. ptuning's encoders load without it
(``add_pooling_layer=False``), so its weights are read from the checkpoint's safetensors here. Frozen, as PEFT
keeps it, the trainable parameters stay a plain [CLS] head's; saved with the head, a checkpoint loads without
the base model's file. BERT's pooler was trained (next-sentence prediction); many derived checkpoints carry one
that never was (both packaged ones: biases exactly 0), a fixed random projection, which is what PEFT reads
there too; a note says so. On SST-2 with prefix dropout 0 such a head reached 80 % dev accuracy in 200 steps
against a plain [CLS] head's 250 (docs/BENCHMARKS.md, time to a target score).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

from ptuning.core.backbones import resolve_model_path
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

PRETRAINED_POOLER = "pooler"  # the value of --pooling that asks for it
POOLER_KEY = "pooler.dense"
POOLER_ACTIVATION = "tanh"  # BertPooler, MPNetPooler, ErniePooler...

logger = logging.getLogger(__name__)


class PoolerNotFoundError(ValueError):
    """The base checkpoint holds no pooler weights to read [CLS] through."""


def head_spec(kind: HeadKind, label_names: list[str] | None, pooling: str | None) -> HeadSpec:
    """The head for ``--pooling``: the pretrained pooler is a [CLS] head with a dense + tanh layer."""
    if pooling == PRETRAINED_POOLER:
        # frozen_dense: saved with the head, so that a loaded checkpoint freezes the pooler again
        return HeadSpec(
            kind, label_names, Pooling.FIRST, dense_activation=POOLER_ACTIVATION, frozen_dense=True
        )
    return HeadSpec(kind, label_names, pooling)


def attach_pretrained_pooler(model: PromptModel, task: str, name_or_path: str) -> None:
    """Fill ``task``'s dense layer with the pooler of ``name_or_path``. The pooler is part of the backbone:
    frozen with it, and trained with it when fine-tuning (as transformers' classifiers train it)."""
    activation = getattr(model.backbone.config, "pooler_hidden_act", POOLER_ACTIVATION)
    if activation != POOLER_ACTIVATION:  # DeBERTa's ContextPooler: gelu (and its own dropout)
        raise PoolerNotFoundError(
            f"{name_or_path!r}: its pooler applies {activation} (pooler_hidden_act); --pooling pooler reads "
            f"{POOLER_ACTIVATION} poolers (BERT, RoBERTa, MPNet, ALBERT...): use --pooling first or mean"
        )
    trainable = not model.method.freezes_backbone
    load_pretrained_pooler(model.heads[task].dense, name_or_path, trainable=trainable)


def read_pretrained_pooler(name_or_path: str) -> dict[str, torch.Tensor] | None:
    """``{"weight", "bias"}`` of the pooler in a model's safetensors, or None if it has none.

    Keys are ``pooler.dense.*`` in a BertModel checkpoint and ``bert.pooler.dense.*`` in a
    BertFor*-checkpoint; sharded checkpoints are found through their index. A hub id is read from the local
    hub cache only (``load_backbone`` has put it there); nothing is downloaded here.
    """
    folder = _local_folder(name_or_path)
    if folder is None:
        return None
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = [folder / "model.safetensors"]
    found: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            return None
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                for part in ("weight", "bias"):
                    if key == f"{POOLER_KEY}.{part}" or key.endswith(f".{POOLER_KEY}.{part}"):
                        found[part] = weights.get_tensor(key)
                    elif key in (f"pooler.{part}", f"albert.pooler.{part}"):  # ALBERT's: a Linear, no .dense
                        found.setdefault(part, weights.get_tensor(key))
    return found if set(found) == {"weight", "bias"} else None


def load_pretrained_pooler(dense: torch.nn.Linear, name_or_path: str, trainable: bool = False) -> None:
    """Copy the pooler of ``name_or_path`` into ``dense`` (a head's dense layer); frozen unless
    ``trainable`` (fine-tuning trains it with the rest of the backbone, as transformers' classifiers do)."""
    pooler = read_pretrained_pooler(name_or_path)
    if pooler is None:
        raise PoolerNotFoundError(
            f"{name_or_path!r} has no pooler weights ({POOLER_KEY}.weight/.bias) in its local safetensors "
            "to read [CLS] through; use --pooling first (a plain [CLS] head) or mean"
        )
    if tuple(pooler["weight"].shape) != tuple(dense.weight.shape):
        raise PoolerNotFoundError(
            f"{name_or_path!r}: its pooler weight has shape {tuple(pooler['weight'].shape)}, expected "
            f"{tuple(dense.weight.shape)} (hidden size x hidden size)"
        )
    if not bool(pooler["bias"].any()):
        logger.warning(
            "note: %s's pooler has an all-zero bias: it looks never trained (a fixed random projection + tanh, "
            "what transformers' classifiers and PEFT read too); --pooling first or mean reads [CLS] or the "
            "tokens directly",
            name_or_path,
        )
    with torch.no_grad():
        dense.weight.copy_(pooler["weight"])
        dense.bias.copy_(pooler["bias"])
    dense.requires_grad_(trainable)


def _local_folder(name_or_path: str) -> Path | None:
    path = Path(resolve_model_path(name_or_path))
    if path.is_dir():
        return path
    try:  # a hub id: its cached snapshot, if the backbone was loaded from the hub before
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, not a repo id: there is no local pooler to read
        return None
