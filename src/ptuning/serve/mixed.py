"""One backbone pass for requests of many tasks: every row runs with its own prefix, then its task's head.

This is what makes one frozen backbone serve many prompt checkpoints at the cost of one: the backbone
forward (nearly all the compute) is shared by the whole batch, and only the linear heads run per task.
Outputs come back in ``predict_outputs``' format, so a task decodes them exactly as after evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ptuning.core.kinds import HeadKind
from ptuning.core.model import PromptModel
from ptuning.tasks.base import Features
from ptuning.tasks.collate import collate

_SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Group:
    """The features of one request: all use the head ``head`` and the prefix ``prefix`` of the model."""

    head: str
    prefix: str
    kind: HeadKind
    features: Features

    @property
    def rows(self) -> int:
        """Backbone rows this group needs: one per feature, or one per choice for multiple choice."""
        return sum(feature_rows(feature, self.kind) for feature in self.features)


def feature_rows(feature: dict[str, Any], kind: HeadKind) -> int:
    return len(feature["input_ids"]) if kind is HeadKind.MULTIPLE_CHOICE else 1


def _sequences(feature: dict[str, Any], kind: HeadKind) -> list[dict[str, Any]]:
    """A feature as backbone rows; a multiple-choice feature (C, T) becomes C rows."""
    keys = [key for key in _SEQUENCE_KEYS if key in feature]
    if kind is HeadKind.MULTIPLE_CHOICE:
        return [{key: feature[key][c] for key in keys} for c in range(len(feature["input_ids"]))]
    return [{key: feature[key] for key in keys}]


@torch.inference_mode()
def mixed_outputs(model: PromptModel, groups: list[Group], pad_token_id: int) -> list[list[Any]]:
    """Raw head outputs of every group (one per feature, as ``predict_outputs`` gives them)."""
    rows: list[dict[str, Any]] = []
    prefix_names: list[str] = []
    spans: list[tuple[int, int]] = []
    for group in groups:
        start = len(rows)
        for feature in group.features:
            rows.extend(_sequences(feature, group.kind))
        prefix_names.extend([group.prefix] * (len(rows) - start))
        spans.append((start, len(rows)))
    if any("token_type_ids" in row for row in rows):  # tasks from one tokenizer agree; be safe anyway
        for row in rows:
            row.setdefault("token_type_ids", [0] * len(row["input_ids"]))
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in collate(rows, pad_token_id).items()}  # (R, T) each
    first_token_only = all(model.reads_first_token(group.head) for group in groups)
    hidden = model.encode(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("token_type_ids"),
        prefix_names,
        first_token_only=first_token_only,
    )  # (R, T, H), or (R, 1, H) when every head reads the first token only
    mask = batch["attention_mask"]
    results = []
    for group, (start, stop) in zip(groups, spans, strict=True):
        head = model.heads[group.head]
        if group.kind is HeadKind.MULTIPLE_CHOICE:
            results.append(_choice_outputs(head, group, hidden[start:stop], mask[start:stop]))
            continue
        out = head(hidden[start:stop], mask[start:stop])
        lengths = mask[start:stop].sum(-1).tolist()
        results.append([_row_output(group.kind, out, row, int(lengths[row])) for row in range(stop - start)])
    return results


def _choice_outputs(head, group: Group, hidden: torch.Tensor, mask: torch.Tensor) -> list[Any]:
    """Choice scores (C,) per feature; each run of features with the same choice count is one head call."""
    features, outputs, row, index = group.features, [], 0, 0
    while index < len(features):
        choices = len(features[index]["input_ids"])
        run = 1
        while index + run < len(features) and len(features[index + run]["input_ids"]) == choices:
            run += 1
        span = slice(row, row + run * choices)
        logits = head(hidden[span], mask[span], num_choices=choices)["logits"]  # (run, C)
        outputs.extend(np.asarray(logits[i].float().cpu().numpy()) for i in range(run))
        row, index = row + run * choices, index + run
    return outputs


def _row_output(kind: HeadKind, out: dict[str, torch.Tensor], row: int, length: int) -> Any:
    if kind is HeadKind.QUESTION_ANSWERING:
        return {
            "start_logits": out["start_logits"][row, :length].float().cpu().numpy(),
            "end_logits": out["end_logits"][row, :length].float().cpu().numpy(),
        }
    if kind is HeadKind.TOKEN_CLASSIFICATION:
        return out["logits"][row, :length].float().cpu().numpy()
    return np.asarray(out["logits"][row].float().cpu().numpy())
