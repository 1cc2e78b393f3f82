"""The PEFT systems of the speed benchmark do what ours does where the comparison needs it: (a'')'s timed
prediction gets unlabelled rows (ours predicts without targets) and (b) clips gradients as ours and the Trainer.
PEFT's wrapper is not needed for that: the systems are built around the tiny BERT's own HF classifier."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_smoke import load_benchmark
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ptuning.training.config import TrainConfig


@pytest.fixture
def systems(tiny_model, monkeypatch):
    systems = load_benchmark("speed_systems")

    def hf_classifier(folder: str, data: Any, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(data.label_names))

    monkeypatch.setattr(systems, "build_peft_model", hf_classifier)
    return systems


def smoke_data(tiny_model: str, data_root) -> tuple[Any, Any]:
    common = load_benchmark("speed_common")
    workload = common.Workload(
        "smoke",
        "sst2",
        tiny_model,
        train_examples=8,
        eval_examples=8,
        repeats=1,
        batch_size=4,
        eval_batch_size=4,
    )
    return common.load_data(workload, AutoTokenizer.from_pretrained(tiny_model), data_root), workload


def test_the_trainer_predicts_unlabelled_rows_inside_its_clock(systems, tiny_model, data_root):
    torch.manual_seed(0)
    data, workload = smoke_data(tiny_model, data_root)
    system = systems.build_system("peft-trainer-grouped", tiny_model, data, workload)
    assert all("labels" in f for f in system.dev_features)  # the dev rows are labelled
    inputs: list[set[str]] = []
    system.model.register_forward_pre_hook(lambda m, a, kw: inputs.append(set(kw)), with_kwargs=True)

    timed = system._infer_at(seed=0, size=4)

    assert [sorted(keys) for keys in inputs] == [["attention_mask", "input_ids", "token_type_ids"]] * 2
    assert timed.examples == 8 and timed.seconds > 0


def test_peft_our_batching_clips_gradients_as_ours(systems, tiny_model, data_root, monkeypatch):
    torch.manual_seed(0)
    data, workload = smoke_data(tiny_model, data_root)
    system = systems.build_system("peft-our-batching", tiny_model, data, workload)
    clipped: list[tuple[float, int]] = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        clipped.append((max_norm, len(parameters)))
        return clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    trained = system.train_round(seed=0)

    trainable = sum(1 for p in system.model.parameters() if p.requires_grad)
    assert TrainConfig().max_grad_norm == 1.0
    assert len(trained.shapes) == 2 and clipped == [(1.0, trainable)] * 2  # before each of the 2 steps
