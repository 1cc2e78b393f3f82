"""Dynamic padding and length grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptuning.tasks import collate, length_grouped_batches

PAD = 7


def test_pads_to_the_longest_in_the_batch_on_the_right():
    batch = collate(
        [
            {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 1], "labels": 1},
            {"input_ids": [4], "attention_mask": [1], "token_type_ids": [0], "labels": 0},
        ],
        pad_token_id=PAD,
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long


def test_left_padding_puts_pads_first():
    batch = collate([{"input_ids": [1, 2]}, {"input_ids": [3]}], pad_token_id=PAD, padding_side="left")
    assert batch["input_ids"].tolist() == [[1, 2], [PAD, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1], [0, 1]]  # built when missing


def test_drops_keys_that_are_not_model_inputs():
    feature = {"input_ids": [1], "example_index": 3, "offset_mapping": [(0, 1)], "word_ids": [0], "labels": 1}
    assert set(collate([feature], pad_token_id=PAD)) == {"input_ids", "attention_mask", "labels"}


def test_token_labels_are_padded_with_ignore_index():
    batch = collate(
        [{"input_ids": [1, 2], "labels": [3, -100]}, {"input_ids": [1], "labels": [2]}], pad_token_id=PAD
    )
    assert batch["labels"].tolist() == [[3, -100], [2, -100]]


def test_regression_labels_are_float():
    batch = collate([{"input_ids": [1], "labels": 3.5}, {"input_ids": [2], "labels": 1.0}], pad_token_id=PAD)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [3.5, 1.0]


def test_multiple_choice_pads_every_choice_to_the_longest():
    features = [
        {"input_ids": [[1, 2], [3]], "labels": 0},
        {"input_ids": [[4, 5, 6], [7]], "labels": 1},
    ]
    batch = collate(features, pad_token_id=0)
    assert batch["input_ids"].shape == (2, 2, 3)  # (B, C, T)
    assert batch["input_ids"].tolist() == [[[1, 2, 0], [3, 0, 0]], [[4, 5, 6], [7, 0, 0]]]
    assert batch["attention_mask"].tolist() == [[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [1, 0, 0]]]
    assert batch["labels"].tolist() == [0, 1]


def test_multiple_choice_needs_the_same_number_of_choices():
    with pytest.raises(ValueError, match="same number of choices"):
        collate([{"input_ids": [[1], [2]]}, {"input_ids": [[1]]}], pad_token_id=0)


def test_question_answering_positions_are_long():
    batch = collate([{"input_ids": [1, 2], "start_positions": 1, "end_positions": 1}], pad_token_id=0)
    assert batch["start_positions"].dtype == torch.long and batch["end_positions"].tolist() == [1]


def test_features_with_different_keys_are_refused():
    with pytest.raises(ValueError, match="feature 1 has keys"):
        collate([{"input_ids": [1], "labels": 1}, {"input_ids": [1]}], pad_token_id=0)


def test_length_groups_cover_every_index_once():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    batches = length_grouped_batches(lengths, batch_size=3, seed=0, mega_batch_factor=2)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len(batch) <= 3 for batch in batches)


def test_length_groups_are_seeded():
    lengths = list(range(100))
    assert length_grouped_batches(lengths, 4, seed=1) == length_grouped_batches(lengths, 4, seed=1)
    assert length_grouped_batches(lengths, 4, seed=1) != length_grouped_batches(lengths, 4, seed=2)


def test_longest_input_comes_in_the_first_batch():
    lengths = [3] * 50 + [100] + [2] * 49
    for seed in range(3):
        assert 50 in length_grouped_batches(lengths, 8, seed=seed, mega_batch_factor=2)[0]


def test_grouping_cuts_padding():
    lengths = [(i * 37) % 101 + 1 for i in range(400)]

    def padded_tokens(batches):
        return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)

    grouped = padded_tokens(length_grouped_batches(lengths, 8, seed=0))
    plain = padded_tokens([list(range(i, min(i + 8, 400))) for i in range(0, 400, 8)])
    assert grouped < 0.7 * plain


@pytest.mark.parametrize("as_array", [np.asarray, torch.tensor], ids=["numpy", "tensor"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_array_input_ids_without_a_mask_collate_as_lists_do(as_array, side):
    """A library user's features may hold arrays: ``if ids`` raised on them where the mask is built."""
    features = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    arrays = [{"input_ids": as_array(feature["input_ids"])} for feature in features]
    expected = collate(features, pad_token_id=PAD, padding_side=side)
    batch = collate(arrays, pad_token_id=PAD, padding_side=side)
    assert {key: value.tolist() for key, value in batch.items()} == {
        key: value.tolist() for key, value in expected.items()
    }
