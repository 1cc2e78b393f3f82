"""Batching: pad each batch only to its own longest input, and group inputs of similar length.

Dynamic padding keeps short batches short; grouping by length within shuffled mega-batches keeps the
order random enough for training while wasting little compute on padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # label value that the losses skip (padding and non-first sub-tokens)

# model-input key -> value used to pad it; every other key (example_index, word_ids...) is dropped
PAD_VALUES: dict[str, int | None] = {
    "input_ids": None,  # the tokenizer's pad id, given to collate()
    "attention_mask": 0,
    "token_type_ids": 0,
    "position_ids": 0,
    "labels": IGNORE_INDEX,
}
SCALAR_KEYS = ("start_positions", "end_positions")


def collate(
    features: Sequence[dict[str, Any]], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Stack features into tensors, padding sequences to the longest in the batch.

    Sequences are (T,) per feature, or (C, T) for multiple choice; all C choices of all features are
    padded to the longest choice, giving (B, C, T). ``labels`` may be one int (B,), one float
    (regression, float32), or a per-token list padded with -100. An attention mask is built when the
    features carry none.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not features:
        raise ValueError("collate() needs at least one feature")
    keys = [key for key in (*PAD_VALUES, *SCALAR_KEYS) if key in features[0]]
    for index, feature in enumerate(features):
        missing = [key for key in keys if key not in feature]
        extra = [key for key in (*PAD_VALUES, *SCALAR_KEYS) if key in feature and key not in keys]
        if missing or extra:
            raise ValueError(f"feature {index} has keys {sorted(feature)}, unlike feature 0 ({keys})")
    if "input_ids" in keys and "attention_mask" not in keys:
        features = [{**feature, "attention_mask": _ones_like(feature["input_ids"])} for feature in features]
        keys.insert(1, "attention_mask")
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [feature[key] for feature in features]
        if key in SCALAR_KEYS:
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif key == "labels" and not isinstance(values[0], list | tuple | np.ndarray):
            is_float = any(isinstance(value, float | np.floating) for value in values)
            batch[key] = torch.tensor(values, dtype=torch.float32 if is_float else torch.long)
        else:
            pad_value = pad_token_id if key == "input_ids" else PAD_VALUES[key]
            batch[key] = _pad(values, pad_value, padding_side, key)
    return batch


def _ones_like(ids: Any) -> Any:
    if len(ids) > 0 and isinstance(ids[0], list | tuple | np.ndarray):  # `if ids` fails on numpy input
        return [[1] * len(choice) for choice in ids]
    return [1] * len(ids)


def _pad(values: list[Any], pad_value: int, padding_side: str, key: str) -> torch.Tensor:
    """(B, T) or (B, C, T) long tensor, every sequence padded to the longest one in the batch."""
    multiple_choice = len(values[0]) > 0 and isinstance(values[0][0], list | tuple | np.ndarray)
    if multiple_choice:
        num_choices = {len(value) for value in values}
        if len(num_choices) != 1:
            raise ValueError(
                f"{key}: every multiple-choice feature needs the same number of choices, got {num_choices}"
            )
        sequences = [list(choice) for value in values for choice in value]  # B*C sequences
    else:
        sequences = [list(value) for value in values]
    longest = max(len(sequence) for sequence in sequences)
    padded = torch.full((len(sequences), longest), pad_value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if not sequence:
            continue
        if padding_side == "right":
            padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        else:
            padded[row, longest - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
    if multiple_choice:
        return padded.view(len(values), -1, longest)  # (B, C, T)
    return padded  # (B, T)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, mega_batch_factor: int = 50
) -> list[list[int]]:
    """Batches of indices whose inputs have similar lengths, in a seed-dependent random order.

    Indices are shuffled, cut into mega-batches of ``batch_size * mega_batch_factor``, sorted by
    length inside each mega-batch, then cut into batches; the batches are shuffled again so that
    training does not see long-to-short runs. The batch holding the longest input goes first so that
    an out-of-memory shows up at step one. Use a new seed each epoch. Usable directly as a
    DataLoader ``batch_sampler``.
    """
    if batch_size < 1 or mega_batch_factor < 1:
        raise ValueError("batch_size and mega_batch_factor must be positive")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    mega_size = batch_size * mega_batch_factor
    batches: list[list[int]] = []
    for start in range(0, len(order), mega_size):
        mega = sorted(order[start : start + mega_size].tolist(), key=lambda index: -lengths[index])
        batches.extend(mega[i : i + batch_size] for i in range(0, len(mega), batch_size))
    batches = [batches[b] for b in rng.permutation(len(batches))]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches
