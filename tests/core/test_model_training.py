"""What an optimizer step may change, per method: only the prefix (and head) unless fine-tuning. (P-tuning v2
on every family: test_conformance.py::test_only_prefix_and_head_train.)

The optimizer is given every parameter of the model, as a careless training loop would; freezing must come
from the model itself (``requires_grad``), not from the caller choosing what to optimise.
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import DECODERS, build, random_ids
from torch import nn

from ptuning.core.model import PromptModel


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    """Names of tensors that are no longer bit-identical to ``before``."""
    after = module.state_dict()
    assert after.keys() == before.keys()
    return {name for name, tensor in before.items() if not torch.equal(tensor, after[name])}


def one_step(model: PromptModel, family: str) -> None:
    """One AdamW step (lr 1e-2) on a small batch with labels."""
    model.train()
    ids = random_ids(2, 6)
    labels = ids if family in DECODERS else torch.tensor([0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(ids, torch.ones_like(ids), labels=labels).loss
    loss.backward()
    optimizer.step()


def trainable_names(model: PromptModel) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_ptuning_reports_trainable_count_and_ratio(family: str) -> None:
    model = build(family, prefix_length=4).model
    geometry = model.geometry
    # P rows of (layers * 2 [key, value] * kv_heads * head_dim): for Llama 2 KV heads, not 6 query heads.
    prefix = 4 * geometry.num_layers * 2 * geometry.num_kv_heads * geometry.head_dim
    head = 0 if family in DECODERS else geometry.hidden_size * 2 + 2
    backbone = sum(p.numel() for p in model.backbone.parameters())
    report = model.trainable_parameters()
    assert report.by_part == {"backbone": 0, "prefix": prefix, "heads": head}
    assert (report.trainable, report.total) == (prefix + head, backbone + prefix + head)
    assert report.percent == pytest.approx(100 * (prefix + head) / (backbone + prefix + head))
    assert f"{prefix + head:,}" in str(report) and f"{report.percent:.3f} %" in str(report)


def test_prefix_mlp_step_trains_embedding_and_mlp_only() -> None:
    model = build("bert", method="prefix-mlp", mlp_hidden_size=16).model
    backbone_before, rest_before = snapshot(model.backbone), snapshot(model)
    one_step(model, "bert")
    assert changed(backbone_before, model.backbone) == set()
    assert {n for n in changed(rest_before, model) if n.startswith("prefixes.")} == {
        "prefixes.t.embedding.weight",
        "prefixes.t.mlp.0.weight",
        "prefixes.t.mlp.0.bias",
        "prefixes.t.mlp.2.weight",
        "prefixes.t.mlp.2.bias",
    }


def test_finetune_step_changes_the_backbone() -> None:
    model = build("bert", method="finetune").model
    report = model.trainable_parameters()
    assert report.trainable == report.total and report.by_part["prefix"] == 0
    backbone_before = snapshot(model.backbone)
    one_step(model, "bert")
    assert "encoder.layer.0.attention.self.query.weight" in changed(backbone_before, model.backbone)


def test_linear_probe_has_no_prefix_and_trains_only_the_head() -> None:
    model = build("bert", method="linear-probe").model
    assert len(model.prefixes) == 0 and model.injector is None
    assert trainable_names(model) == {"heads.t.linear.weight", "heads.t.linear.bias"}
    backbone_before, rest_before = snapshot(model.backbone), snapshot(model)
    one_step(model, "bert")
    assert changed(backbone_before, model.backbone) == set()
    assert changed(rest_before, model) == {"heads.t.linear.weight", "heads.t.linear.bias"}


def test_prompt_tuning_trains_only_the_prompt_embedding_and_head() -> None:
    model = build("bert", method="prompt-tuning", prefix_length=3).model
    expected = {"prefixes.t.embedding.weight", "heads.t.linear.weight", "heads.t.linear.bias"}
    assert trainable_names(model) == expected
    assert model.injector is None  # shallow: no per-layer key/values
    backbone_before, rest_before = snapshot(model.backbone), snapshot(model)
    one_step(model, "bert")
    assert changed(backbone_before, model.backbone) == set()
    assert changed(rest_before, model) == expected
