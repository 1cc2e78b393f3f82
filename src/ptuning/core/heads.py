"""Task heads: plain linear layers over the backbone's hidden states (no verbalizer).

A head sees hidden states (B, T, H) for real tokens only and never knows how the prefix reached them.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn
from torch.nn import functional as F

from ptuning.core.config import ConfigError
from ptuning.core.dropout import FastDropout
from ptuning.core.kinds import HeadKind


class Pooling(StrEnum):
    FIRST = "first"  # [CLS] / <s>: encoders
    LAST = "last"  # last real token: decoders
    MEAN = "mean"  # average of real tokens


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: Pooling) -> torch.Tensor:
    """(B, T, H) -> (B, H)."""
    if attention_mask is None:
        if pooling is Pooling.MEAN:
            return hidden.mean(dim=1)
        return hidden[:, 0] if pooling is Pooling.FIRST else hidden[:, -1]
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling is Pooling.FIRST:  # the first real token, wherever padding is: [CLS] after left padding too
        first = (attention_mask.cumsum(dim=1) == 0).sum(dim=1)
        # a row of padding only (collate pads an empty feature so) has no real token: it reads position 0
        return hidden[rows, first.clamp(max=hidden.shape[1] - 1)]
    mask = attention_mask.to(hidden.dtype)
    if pooling is Pooling.MEAN:
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    # Last real token, wherever padding is (left or right).
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * attention_mask.long()).argmax(dim=1)
    return hidden[rows, last]


# Activations of the optional dense layer in front of a pooled head (transformers' BERT pooler: tanh;
# RoBERTa's classification head: tanh; ELECTRA's: gelu). ptuning's own heads have no such layer.
DENSE_ACTIVATIONS = {"tanh": torch.tanh, "gelu": F.gelu}


class Head(nn.Module):
    """One linear layer per task; ``forward`` returns (logits, loss or None).

    ``dense_activation`` puts dense (H -> H) + that activation between pooling and the linear layer, the
    shape of transformers' encoder sequence classifiers, so that their weights can be imported exactly
    (ptuning.interop); pooled kinds only.
    """

    def __init__(
        self,
        kind: HeadKind,
        hidden_size: int,
        num_labels: int,
        dropout: float,
        pooling: Pooling,
        dense_activation: str | None = None,
    ):
        super().__init__()
        self.kind = HeadKind(kind)
        self.pooling = Pooling(pooling)
        self.num_labels = num_labels
        self.dropout = FastDropout(dropout)
        self.dense_activation = dense_activation
        if dense_activation is not None:
            if dense_activation not in DENSE_ACTIVATIONS:
                raise ValueError(
                    f"dense_activation must be one of {sorted(DENSE_ACTIVATIONS)}, got {dense_activation!r}"
                )
            if self.kind in (HeadKind.TOKEN_CLASSIFICATION, HeadKind.QUESTION_ANSWERING):
                raise ValueError(f"a {self.kind} head has no pooled vector for a dense layer")
            self.dense = nn.Linear(hidden_size, hidden_size)
        out_features = {
            HeadKind.REGRESSION: 1,
            HeadKind.QUESTION_ANSWERING: 2,
            HeadKind.MULTIPLE_CHOICE: 1,
        }.get(self.kind, num_labels)
        self.linear = nn.Linear(hidden_size, out_features)

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        num_choices: int | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        # fp32 master weights over a bf16/fp16 backbone: the head runs in its own dtype, outside autocast,
        # so logits and the loss are fp32 (core/precision.py).
        hidden = hidden.to(self.linear.weight.dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            return self._logits_and_loss(
                hidden, attention_mask, labels, num_choices, start_positions, end_positions
            )

    def _logits_and_loss(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        num_choices: int | None,
        start_positions: torch.Tensor | None,
        end_positions: torch.Tensor | None,
    ) -> dict[str, torch.Tensor | None]:
        kind = self.kind
        if kind is HeadKind.TOKEN_CLASSIFICATION:
            logits = self.linear(self.dropout(hidden))  # (B, T, C)
            loss = (
                None
                if labels is None
                else F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            )
            return {"logits": logits, "loss": loss}
        if kind is HeadKind.QUESTION_ANSWERING:
            start_logits, end_logits = self.linear(self.dropout(hidden)).unbind(dim=-1)  # (B, T) each
            if attention_mask is not None:
                blocked = torch.finfo(start_logits.dtype).min
                start_logits = start_logits.masked_fill(attention_mask == 0, blocked)
                end_logits = end_logits.masked_fill(attention_mask == 0, blocked)
            loss = None
            if start_positions is not None and end_positions is not None:
                loss = (
                    F.cross_entropy(start_logits, start_positions)
                    + F.cross_entropy(end_logits, end_positions)
                ) / 2
            return {"start_logits": start_logits, "end_logits": end_logits, "loss": loss}
        pooled = pool(hidden, attention_mask, self.pooling)
        if self.dense_activation is not None:
            pooled = DENSE_ACTIVATIONS[self.dense_activation](self.dense(pooled))
        pooled = self.dropout(pooled)
        logits = self.linear(pooled)
        if kind is HeadKind.MULTIPLE_CHOICE:
            logits = logits.view(-1, num_choices)  # (B, C)
        elif kind is HeadKind.REGRESSION:
            logits = logits.squeeze(-1)  # (B,)
        loss = None
        if labels is not None:
            if kind is HeadKind.REGRESSION:
                loss = F.mse_loss(logits, _regression_targets(labels, logits.shape[0]).to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
        return {"logits": logits, "loss": loss}


def _regression_targets(labels: torch.Tensor, rows: int) -> torch.Tensor:
    """One target per row, (B,): (B, 1) labels (what many collators give) flattened, since mse_loss would
    broadcast them against the (B,) predictions into a (B, B) difference and a wrong loss."""
    if labels.numel() != rows:
        raise ConfigError(
            f"labels for a regression head must have one value per row, shape ({rows},) or ({rows}, 1); "
            f"got {tuple(labels.shape)}"
        )
    return labels.reshape(rows)
