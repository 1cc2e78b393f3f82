"""Packing several short inputs into one row: block-diagonal attention, positions restarting per input.

Why: a batch padded to its longest input spends compute on padding; packed rows carry (almost) only real
tokens. Each packed input (a *segment*) must compute exactly what it computes alone, so

- every query sees the prefix columns (the injector prepends them to the mask, as for any batch) and only
  the tokens of its own segment — a 4-D (rows, 1, L, L) mask that transformers' encoders take as-is;
- positions restart at 0 in every segment (plus the family's table offset, e.g. RoBERTa's padding_idx + 1,
  and P in ``position_mode="shift"``);
- heads read each segment's hidden states unpacked into a (segments, T, H) batch with a 2-D mask, so pooling
  (first token, mean) and tagging are the unchanged head code.

All segments of a row use the same prefix (one task per forward): mixed-prefix rows are not supported.
What cannot be packed is refused by ``check_packable``: prompt tuning (its prompts are input tokens),
decoders (causal masks), encoder-decoders, families with their own attention patch or relative positions,
QA, multiple-choice and generative heads, and every family not in ``PACKABLE_FAMILIES``: a mask keeps
attention inside a segment, but some families mix tokens outside attention (MobileBERT's trigram input,
ConvBERT's span convolution, FNet's Fourier transform) or shape the mask their own way (LayoutLM,
Longformer...), so only families whose packed outputs tests/core/test_packing.py proves equal are taken.

A mask still makes sdpa compute every query against every key of the row, so a packed row of length L
costs L^2 attention where its segments alone cost sum(n_i^2): packing pays only where padding was large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ptuning.core.config import ConfigError, Method
from ptuning.core.geometry import PositionKind, PrefixGeometry
from ptuning.core.injection import REGISTERED_INJECTORS
from ptuning.core.kinds import HeadKind

PACKABLE_KINDS = (HeadKind.CLASSIFICATION, HeadKind.REGRESSION, HeadKind.TOKEN_CLASSIFICATION)
# model types whose tokens meet only in attention, each proven packed == unpacked by tests/core/test_packing.py
PACKABLE_FAMILIES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "roberta-prelayernorm",
    "xlm-roberta-xl",
    "data2vec-text",
    "electra",
    "ernie",
    "distilbert",
    "albert",
)
# attention implementations whose 4-D mask we can build: boolean "may attend" (sdpa) or additive float (eager)
_BOOLEAN_MASK = ("sdpa", "ptuning_sdpa")
_ADDITIVE_MASK = ("eager", "ptuning_eager")
IGNORE_INDEX = -100


@dataclass
class PackedRows:
    """Inputs laid out several to a row; segment n is ``input_ids[row[n], start[n] : start[n] + length[n]]``."""

    input_ids: torch.Tensor  # (R, L), right-padded
    token_type_ids: torch.Tensor | None  # (R, L)
    segment_ids: torch.Tensor  # (R, L): segment number within its row, -1 on padding
    local_positions: torch.Tensor  # (R, L): 0..n-1 within each segment, 0 on padding
    row: torch.Tensor  # (N,) in the order the inputs were given
    start: torch.Tensor  # (N,)
    length: torch.Tensor  # (N,)

    @property
    def num_segments(self) -> int:
        return int(self.row.shape[0])

    @property
    def padding_fraction(self) -> float:
        """Share of the rows' token slots that are padding."""
        return float((self.segment_ids < 0).float().mean()) if self.segment_ids.numel() else 0.0

    def to(self, device: torch.device | str) -> PackedRows:
        moved = {
            name: getattr(self, name).to(device) if getattr(self, name) is not None else None
            for name in (
                "input_ids",
                "token_type_ids",
                "segment_ids",
                "local_positions",
                "row",
                "start",
                "length",
            )
        }
        return replace(self, **moved)

    def attention_mask(self, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
        """(R, 1, L, L): a query sees the keys of its own segment; a padding query sees itself only (so no row
        of the mask is empty, which would give NaN). Boolean, or additive (0 / dtype min) for eager attention."""
        segments = self.segment_ids
        same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
        length = segments.shape[1]
        same = same | torch.eye(length, dtype=torch.bool, device=segments.device)
        same = same[:, None]  # (R, 1, L, L)
        if additive_dtype is None:
            return same
        return torch.zeros(same.shape, dtype=additive_dtype, device=same.device).masked_fill(
            ~same, torch.finfo(additive_dtype).min
        )

    def position_ids(self, geometry: PrefixGeometry, shift: int = 0) -> torch.Tensor:
        """Positions the backbone's table takes: 0..n-1 (+ shift) per segment, the family's offset applied."""
        real = self.segment_ids >= 0
        positions = self.local_positions + shift
        highest = int(positions[real].max()) + 1 if bool(real.any()) else 0
        limit = geometry.usable_positions
        if limit is not None and highest > limit:
            raise ConfigError(
                f"a packed segment needs {highest} positions but {geometry.model_type} has {limit}; "
                f"shorten max_length or the prefix, or use position_mode='keep'"
            )
        padding_idx = geometry.position_padding_idx
        if padding_idx is None:
            return positions * real
        return torch.where(real, positions + padding_idx + 1, torch.full_like(positions, padding_idx))

    def unpack(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, L, H) -> (N, T, H) and its (N, T) mask, T the longest segment: each segment right-padded
        with zeros, as if it had been run in an ordinary batch."""
        longest = int(self.length.max()) if self.num_segments else 0
        offsets = torch.arange(longest, device=hidden.device)
        mask = offsets[None, :] < self.length[:, None]  # (N, T)
        columns = (self.start[:, None] + offsets[None, :]).clamp(max=hidden.shape[1] - 1)
        gathered = hidden[self.row[:, None].expand(-1, longest), columns]  # (N, T, H)
        return gathered.masked_fill(~mask[..., None], 0.0), mask.long()


def pack_features(features: Sequence[dict[str, Any]], max_length: int, pad_token_id: int) -> PackedRows:
    """Pack tokenized single-input features (``input_ids``, optional ``token_type_ids``) into rows of at most
    ``max_length`` tokens, longest first into the first row with room (first-fit decreasing); rows are
    padded to the fullest row. A feature longer than ``max_length`` gets a row of its own (the first rows),
    so the other rows still hold at most ``max_length`` tokens."""
    if not features:
        raise ValueError("pack_features() needs at least one feature")
    lengths = []
    for index, feature in enumerate(features):
        ids = feature["input_ids"]
        if ids and isinstance(ids[0], list | tuple):
            raise ConfigError(f"feature {index} has several sequences (multiple choice): it cannot be packed")
        if not ids:
            raise ValueError(f"feature {index} has no tokens")
        if "attention_mask" in feature and 0 in feature["attention_mask"]:
            raise ValueError(f"feature {index} carries padding; pack unpadded features")
        lengths.append(len(ids))
    with_types = "token_type_ids" in features[0]
    order = sorted(range(len(features)), key=lambda i: -lengths[i])
    too_long = [index for index in order if lengths[index] > max_length]
    placement = {index: (row, 0) for row, index in enumerate(too_long)}
    fill = [lengths[index] for index in too_long]
    rest, rest_fill = _place(lengths, order[len(too_long) :], capacity=max_length)
    placement.update({index: (row + len(too_long), start) for index, (row, start) in rest.items()})
    fill += rest_fill
    rows, width = len(fill), max(fill)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((rows, width), dtype=torch.long) if with_types else None
    segment_ids = torch.full((rows, width), -1, dtype=torch.long)
    local_positions = torch.zeros((rows, width), dtype=torch.long)
    segments_in_row = [0] * rows
    for index in order:  # row by row, segments numbered in the order they were placed
        row, start = placement[index]
        stop = start + lengths[index]
        input_ids[row, start:stop] = torch.tensor(features[index]["input_ids"], dtype=torch.long)
        if token_type_ids is not None:
            token_type_ids[row, start:stop] = torch.tensor(
                features[index]["token_type_ids"], dtype=torch.long
            )
        segment_ids[row, start:stop] = segments_in_row[row]
        segments_in_row[row] += 1
        local_positions[row, start:stop] = torch.arange(lengths[index])
    return PackedRows(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        segment_ids=segment_ids,
        local_positions=local_positions,
        row=torch.tensor([placement[i][0] for i in range(len(features))], dtype=torch.long),
        start=torch.tensor([placement[i][1] for i in range(len(features))], dtype=torch.long),
        length=torch.tensor(lengths, dtype=torch.long),
    )


def _place(
    lengths: list[int], order: list[int], capacity: int
) -> tuple[dict[int, tuple[int, int]], list[int]]:
    """(feature -> (row, start), tokens per row). First-fit decreasing finds how many rows are needed; the
    same number of rows filled longest-first into the emptiest row (LPT) is used instead when it fits, since
    it evens the rows out: rows are padded to the fullest, and attention costs length^2 per row."""
    fill: list[int] = []
    placement: dict[int, tuple[int, int]] = {}
    if not order:
        return placement, fill
    for index in order:
        row = next((r for r, used in enumerate(fill) if used + lengths[index] <= capacity), len(fill))
        if row == len(fill):
            fill.append(0)
        placement[index] = (row, fill[row])
        fill[row] += lengths[index]
    even_fill = [0] * len(fill)
    even: dict[int, tuple[int, int]] = {}
    for index in order:
        row = min(range(len(even_fill)), key=even_fill.__getitem__)
        even[index] = (row, even_fill[row])
        even_fill[row] += lengths[index]
    if max(even_fill) <= capacity and max(even_fill) < max(fill):
        return even, even_fill
    return placement, fill


def segment_labels(features: Sequence[dict[str, Any]], kind: HeadKind) -> torch.Tensor:
    """Labels in the segments' order: (N,) for pooled heads, (N, T) padded with -100 for tagging, where T is
    the longest input (the width of ``PackedRows.unpack``)."""
    values = [feature["labels"] for feature in features]
    if kind is not HeadKind.TOKEN_CLASSIFICATION:
        is_float = kind is HeadKind.REGRESSION or any(isinstance(v, float) for v in values)
        return torch.tensor(values, dtype=torch.float32 if is_float else torch.long)
    longest = max(len(feature["input_ids"]) for feature in features)
    labels = torch.full((len(values), longest), IGNORE_INDEX, dtype=torch.long)
    for index, value in enumerate(values):
        labels[index, : len(value)] = torch.tensor(list(value), dtype=torch.long)
    return labels


def check_packable(
    method: Method, geometry: PrefixGeometry, kind: HeadKind, attn_implementation: str
) -> None:
    """Refuse, naming the reason, what packing cannot reproduce exactly."""
    problem = None
    if kind not in PACKABLE_KINDS:
        problem = f"a {kind} head (packing takes {', '.join(str(k) for k in PACKABLE_KINDS)})"
    elif method is Method.PROMPT_TUNING:
        problem = "prompt-tuning (its prompts are input tokens, one set per row)"
    elif geometry.is_decoder or geometry.is_encoder_decoder:
        problem = f"{geometry.model_type}, a decoder or encoder-decoder (packing covers encoders)"
    elif geometry.model_type in REGISTERED_INJECTORS:  # DeBERTa-v2 and MPNet: their own attention patch
        problem = f"{geometry.model_type}, whose attention ptuning patches itself (its mask is not packing's)"
    elif geometry.position_kind is not PositionKind.ABSOLUTE or not geometry.takes_position_ids:
        problem = (
            f"{geometry.model_type}, whose positions are {geometry.position_kind} or not given as position_ids "
            "(packing restarts absolute positions per segment)"
        )
    elif geometry.model_type not in PACKABLE_FAMILIES:
        problem = (
            f"{geometry.model_type}: packing is proven to reproduce unpacked outputs only for "
            f"{', '.join(PACKABLE_FAMILIES)}; other families may mix tokens outside attention (MobileBERT's "
            "trigram input, ConvBERT's convolution, FNet's Fourier transform) or build their own mask"
        )
    elif attn_implementation not in (*_BOOLEAN_MASK, *_ADDITIVE_MASK):
        problem = f"attention implementation {attn_implementation!r} (packing needs sdpa or eager)"
    if problem is not None:
        raise ConfigError(f"pack_sequences cannot pack {problem}; run without --pack-sequences")


def mask_dtype_for(attn_implementation: str, hidden_dtype: torch.dtype) -> torch.dtype | None:
    """None (boolean mask) for sdpa; the hidden dtype (additive mask) for eager attention."""
    return None if attn_implementation in _BOOLEAN_MASK else hidden_dtype
