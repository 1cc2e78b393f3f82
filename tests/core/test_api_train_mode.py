"""A new PromptModel is in one mode: the backbone's. Its prefixes and heads used to start in training mode
(nn.Module's default) around an eval backbone, so dropout made two identical calls differ."""

from __future__ import annotations

import torch
from core_tiny import random_ids, tiny_backbone

from ptuning.core.config import PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel


def dropout_model(backbone: torch.nn.Module) -> PromptModel:
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.5), head_dropout=0.5)
    model.add_task("t", HeadSpec("classification", ["a", "b"]))
    return model


def modes(model: PromptModel) -> set[bool]:
    return {module.training for module in model.modules()}


def test_a_model_on_an_eval_backbone_is_in_eval_and_repeats_its_logits() -> None:
    model = dropout_model(tiny_backbone("bert"))  # eval, as from_pretrained gives it
    assert modes(model) == {False}
    ids = random_ids(2, 6)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_model_on_a_training_backbone_trains_and_leaves_the_backbone_modules_as_given() -> None:
    backbone = tiny_backbone("bert").train()
    backbone.embeddings.eval()  # a caller's own choice inside the backbone is kept
    model = dropout_model(backbone)
    assert model.training and model.prefixes["t"].training and model.heads["t"].training
    assert not backbone.embeddings.training


def test_a_task_added_after_train_follows_the_model() -> None:
    model = dropout_model(tiny_backbone("bert")).train()
    model.add_task("u", HeadSpec("regression"))
    assert model.heads["u"].training and model.prefixes["u"].training
