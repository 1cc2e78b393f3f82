"""Running a PromptModel over features and handing raw head outputs back in the task's format."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ptuning.core.kinds import HeadKind
from ptuning.core.model import PromptModel
from ptuning.core.packing import pack_features
from ptuning.tasks.base import Features
from ptuning.tasks.collate import collate


def feature_length(feature: dict[str, Any]) -> int:
    ids = feature["input_ids"]
    return max(len(choice) for choice in ids) if ids and isinstance(ids[0], list | tuple) else len(ids)


@torch.no_grad()
def predict_outputs(
    model: PromptModel,
    task_name: str,
    features: Features,
    pad_token_id: int,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    pack_length: int | None = None,
) -> list[Any]:
    """Raw head outputs, one per feature in feature order (see ``Task`` for the per-kind format).

    Features are run longest-first in batches of similar length, so padding costs almost nothing. With
    ``pack_length`` each batch's features are packed into rows of at most that many tokens (core/packing.py;
    encoder classification, regression and tagging only).
    """
    was_training = model.training
    model.eval()
    kind = model.head_specs[task_name].kind
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: -feature_length(features[i]))
    outputs: list[Any] = [None] * len(features)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        if pack_length is not None:  # outputs come back one per segment, in ``indices`` order
            rows = pack_features([features[i] for i in indices], pack_length, pad_token_id).to(device)
            batch = {"packed": rows}
            lengths = rows.length.tolist()
        else:
            batch = collate([features[i] for i in indices], pad_token_id)
            batch = {
                k: v.to(device)
                for k, v in batch.items()
                if k not in ("labels", "start_positions", "end_positions")
            }
            mask = batch["attention_mask"]
            lengths = mask.sum(-1).tolist() if mask.dim() == 2 else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(**batch, task=task_name)
        for row, index in enumerate(indices):
            if kind is HeadKind.QUESTION_ANSWERING:
                length = int(lengths[row])
                outputs[index] = {
                    "start_logits": out.start_logits[row, :length].float().cpu().numpy(),
                    "end_logits": out.end_logits[row, :length].float().cpu().numpy(),
                }
            elif kind is HeadKind.TOKEN_CLASSIFICATION:
                outputs[index] = out.logits[row, : int(lengths[row])].float().cpu().numpy()
            else:
                outputs[index] = np.asarray(out.logits[row].float().cpu().numpy())
    model.train(was_training)
    return outputs
