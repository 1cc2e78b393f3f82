"""Targets a head cannot read are refused, not ignored: a loss of None (or a broadcast one) would otherwise
reach the caller's training loop without a word."""

from __future__ import annotations

import pytest
import torch
from core_tiny import random_ids, tiny_backbone
from torch.nn import functional as F

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel


def model_with_heads() -> PromptModel:
    model = PromptModel(tiny_backbone("bert"), "ptuning-v2", PrefixConfig(prefix_length=2)).eval()
    model.add_task("reg", HeadSpec("regression"))
    model.add_task("qa", HeadSpec("question-answering"))
    model.add_task("mc", HeadSpec("multiple-choice"))
    model.add_task("cls", HeadSpec("classification", ["a", "b"]))
    return model


def test_regression_labels_of_shape_b_1_give_the_loss_of_shape_b() -> None:
    model, ids = model_with_heads(), random_ids(4, 6)
    targets = torch.tensor([0.1, 0.9, 0.3, 0.7])
    flat = model(input_ids=ids, task="reg", labels=targets)
    column = model(input_ids=ids, task="reg", labels=targets[:, None])
    expected = F.mse_loss(flat.logits, targets)
    torch.testing.assert_close(flat.loss, expected)
    torch.testing.assert_close(column.loss, expected)  # was the mean over a (B, B) broadcast


def test_regression_labels_with_more_than_one_value_per_row_are_refused_naming_the_shape() -> None:
    model = model_with_heads()
    with pytest.raises(ConfigError, match=r"one value per row, shape \(4,\) or \(4, 1\); got \(4, 2\)"):
        model(input_ids=random_ids(4, 6), task="reg", labels=torch.zeros(4, 2))


def test_a_qa_task_given_labels_is_refused_naming_its_targets() -> None:
    model = model_with_heads()
    with pytest.raises(ConfigError) as raised:
        model(input_ids=random_ids(2, 7), task="qa", labels=torch.tensor([1, 2]))
    assert str(raised.value) == (
        "task 'qa' (question answering) takes start_positions and end_positions, not labels"
    )


def test_a_qa_task_given_only_start_positions_is_refused() -> None:
    model = model_with_heads()
    with pytest.raises(ConfigError, match="start_positions and end_positions together"):
        model(input_ids=random_ids(2, 7), task="qa", start_positions=torch.tensor([1, 2]))


def test_a_qa_task_given_both_positions_has_a_loss() -> None:
    model = model_with_heads()
    out = model(
        input_ids=random_ids(2, 7),
        task="qa",
        start_positions=torch.tensor([1, 2]),
        end_positions=torch.tensor([3, 4]),
    )
    expected = (
        F.cross_entropy(out.start_logits, torch.tensor([1, 2]))
        + F.cross_entropy(out.end_logits, torch.tensor([3, 4]))
    ) / 2
    torch.testing.assert_close(out.loss, expected)


def test_a_pooled_head_given_span_positions_is_refused() -> None:
    model = model_with_heads()
    positions = torch.tensor([1, 2])
    with pytest.raises(ConfigError) as raised:
        model(input_ids=random_ids(2, 7), task="cls", start_positions=positions, end_positions=positions)
    assert str(raised.value) == (
        "task 'cls' (classification) takes labels, not start_positions/end_positions (question answering only)"
    )


def test_multiple_choice_given_b_t_input_names_the_expected_shape() -> None:
    model = model_with_heads()
    with pytest.raises(ConfigError) as raised:
        model(input_ids=random_ids(2, 7), task="mc", labels=torch.tensor([0, 1]))
    assert str(raised.value) == (
        "task 'mc' (multiple-choice) takes input_ids of shape (B, choices, T); got (2, 7)"
    )
