"""HF ``Trainer(gradient_checkpointing=True)`` trains a PromptModel: it calls the model's
``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` in older releases), which turns on the
backbone's checkpointing the way ``enable_gradient_checkpointing`` does, so the prefix trains as without it."""

from __future__ import annotations

import pytest
import torch
from core_tiny import random_ids, tiny_backbone
from transformers import Trainer, TrainingArguments

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel


def classifier() -> PromptModel:
    torch.manual_seed(1)
    model = PromptModel(
        tiny_backbone("bert"), "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0), head_dropout=0.0
    )
    model.add_task("t", HeadSpec("classification", ["a", "b"]))
    return model


def checkpointing(backbone: torch.nn.Module) -> bool:
    """The backbone's own flag, under its newer name where the release has it."""
    name = "is_activation_checkpointing"
    return getattr(backbone, name if hasattr(type(backbone), name) else "is_gradient_checkpointing")


class Rows(torch.utils.data.Dataset):
    ids = random_ids(8, 6)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": torch.tensor(i % 2)}


def trained_prefix(tmp_path, checkpointing: bool) -> tuple[PromptModel, torch.Tensor]:
    model = classifier()
    args = TrainingArguments(
        output_dir=str(tmp_path / str(checkpointing)),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        gradient_checkpointing=checkpointing,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=Rows()).train()
    return model, model.prefixes["t"].embedding.weight.detach().clone()


@pytest.mark.filterwarnings(
    "ignore:`gradient_checkpointing` is deprecated:FutureWarning"
)  # 5.23 has no new name
def test_two_trainer_steps_with_gradient_checkpointing_train_the_prefix_as_without(tmp_path) -> None:
    initial = classifier().prefixes["t"].embedding.weight.detach().clone()
    checkpointed, with_checkpointing = trained_prefix(tmp_path, checkpointing=True)
    assert checkpointing(checkpointed.backbone)
    plain, without = trained_prefix(tmp_path, checkpointing=False)
    assert not checkpointing(plain.backbone)
    assert not torch.equal(with_checkpointing, initial)  # the prefix got gradients through the recompute
    torch.testing.assert_close(with_checkpointing, without, atol=1e-6, rtol=0)


def test_the_older_name_turns_checkpointing_on() -> None:
    model = classifier()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=None)
    assert checkpointing(model.backbone)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"activation_checkpointing_kwargs": {"use_reentrant": True}}, "use_reentrant=True"),
        ({"every_n_layers": 2}, "every_n_layers=2"),
        ({"offload": True}, "offload=True"),
    ],
)
def test_checkpointing_options_it_does_not_follow_are_refused(options: dict, named: str) -> None:
    model = classifier()
    with pytest.raises(ConfigError, match=named):
        model.activation_checkpointing_enable(**options)
    assert not checkpointing(model.backbone)
