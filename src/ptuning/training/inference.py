"""Running a PromptModel over features and handing raw head outputs back in the task's format."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

from ptuning.core.kinds import HeadKind
from ptuning.core.model import PromptModel
from ptuning.core.packing import pack_features
from ptuning.tasks.base import Features
from ptuning.tasks.collate import collate

# A batch of ``batch_size`` rows holds about this many padded tokens per row: short inputs then fill more
# rows and long ones fewer, so every batch is a GEMM of similar size (docs/BENCHMARKS.md, Inference batches).
TOKENS_PER_ROW = 32
# Never more than this many times ``batch_size`` rows, however short the inputs.
MAX_ROWS_FACTOR = 4
# A batch is also cut before padding would exceed this share of its tokens: where sorted lengths fall
# steeply, a budget-sized batch spans many lengths and pads much (docs/BENCHMARKS.md, Inference batches).
MAX_PADDING_SHARE = 0.1
TARGET_KEYS = ("labels", "start_positions", "end_positions")  # what training reads, inference never


def feature_length(feature: dict[str, Any]) -> int:
    ids = feature["input_ids"]
    return max(len(choice) for choice in ids) if ids and isinstance(ids[0], list | tuple) else len(ids)


def feature_rows(feature: dict[str, Any]) -> int:
    """Rows a feature takes in the backbone: its number of choices for multiple choice, else one."""
    ids = feature["input_ids"]
    return len(ids) if ids and isinstance(ids[0], list | tuple) else 1


def token_budget_batches(
    lengths: Sequence[int],
    rows: Sequence[int],
    max_tokens: int,
    max_rows: int,
    max_padding_share: float = 1.0,
) -> list[list[int]]:
    """Indices longest first, cut into batches of at most ``max_tokens`` padded tokens (the batch's rows
    times its longest input, which comes first), at most ``max_rows`` rows and at most ``max_padding_share``
    of padding among its tokens; a batch holds at least one feature. Sorting keeps padding small; the token
    budget keeps each batch's matrix products a similar size instead of tiny ones for short inputs and huge
    ones for long inputs (both slower per token on CPU, docs/BENCHMARKS.md). Memory: no batch holds more
    tokens than ``max_tokens``.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    current_rows = current_real = 0
    for index in order:
        grown = current_rows + rows[index]
        real = current_real + rows[index] * lengths[index]
        if current:
            padded = grown * lengths[current[0]]
            if grown > max_rows or padded > max_tokens or padded - real > max_padding_share * padded:
                batches.append(current)
                current, grown, real = [], rows[index], rows[index] * lengths[index]
        current.append(index)
        current_rows, current_real = grown, real
    if current:
        batches.append(current)
    return batches


def inference_batches(features: Features, batch_size: int, device_type: str = "cpu") -> list[list[int]]:
    """The batches ``predict_outputs`` runs, longest first. On CPU: about ``batch_size * TOKENS_PER_ROW``
    padded tokens each, at most ``batch_size * MAX_ROWS_FACTOR`` rows and ``MAX_PADDING_SHARE`` padding
    (measured on CPU only). Elsewhere:
    ``batch_size`` rows each, as asked — an accelerator wants its batches large, not cut by a CPU budget."""
    lengths = [feature_length(f) for f in features]
    rows = [feature_rows(f) for f in features]
    if device_type != "cpu":
        return token_budget_batches(lengths, rows, max_tokens=sys.maxsize, max_rows=batch_size)
    return token_budget_batches(
        lengths,
        rows,
        max_tokens=batch_size * TOKENS_PER_ROW,
        max_rows=batch_size * MAX_ROWS_FACTOR,
        max_padding_share=MAX_PADDING_SHARE,
    )


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

    Features are run longest-first in batches of similar length, so padding costs almost nothing; a batch
    holds about ``batch_size * TOKENS_PER_ROW`` padded tokens on CPU (``inference_batches``). With
    ``pack_length`` each batch's features are packed into rows of at most that many tokens (core/packing.py;
    encoder classification, regression and tagging only).
    """
    was_training = model.training
    model.eval()
    kind = model.head_specs[task_name].kind
    device = next(model.parameters()).device
    batches = inference_batches(features, batch_size, device.type)
    outputs: list[Any] = [None] * len(features)
    for indices in batches:
        # targets are never read here, and inputs with and without a label may share a batch
        inputs = [{k: v for k, v in features[i].items() if k not in TARGET_KEYS} for i in indices]
        if pack_length is not None:  # outputs come back one per segment, in ``indices`` order
            rows = pack_features(inputs, pack_length, pad_token_id).to(device)
            batch = {"packed": rows}
            lengths = rows.length.tolist()
        else:
            batch = {k: v.to(device) for k, v in collate(inputs, pad_token_id).items()}
            mask = batch["attention_mask"]
            lengths = mask.sum(-1).tolist() if mask.dim() == 2 else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(**batch, task=task_name)
        if kind is HeadKind.QUESTION_ANSWERING:
            starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for row, index in enumerate(indices):
                length = int(lengths[row])
                outputs[index] = {"start_logits": starts[row, :length], "end_logits": ends[row, :length]}
            continue
        logits = out.logits.float().cpu().numpy()  # one conversion per batch, rows are views of it
        for row, index in enumerate(indices):
            if kind is HeadKind.TOKEN_CLASSIFICATION:
                outputs[index] = logits[row, : int(lengths[row])]
            else:
                outputs[index] = logits[row]
    model.train(was_training)
    return outputs
