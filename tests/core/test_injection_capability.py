"""Capability detection: the interface injector is chosen by inspecting the attention modules, and a probe
forward confirms the prefix keyword reaches them; where a family's layers drop forward kwargs, the prefix is
scoped to the call instead (and still reaches every layer, checked by the conformance suite)."""

from __future__ import annotations

import pytest
import torch
from core_tiny import build, family_available, tiny_backbone

from ptuning.core.injection.attention_interface import AttentionInterfaceInjector
from ptuning.core.injection.capability import calls_attention_interface, survey_attention
from ptuning.core.injection.scoping import is_scoped
from ptuning.core.model import PromptModel


@pytest.mark.parametrize(
    ("family", "scoped"), [("llama", False), ("bert", False), ("stablelm", True), ("nemotron", True)]
)
def test_families_that_drop_forward_kwargs_get_the_prefix_scoped_to_the_call(
    family: str, scoped: bool
) -> None:
    if reason := family_available(family):
        pytest.skip(reason)
    assert is_scoped(build(family).model.backbone) is scoped


def test_interface_modules_are_found_by_their_source() -> None:
    survey = survey_attention(tiny_backbone("llama"))
    assert [name for name, _ in survey.interface] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert survey.blocking == []
    deberta = survey_attention(tiny_backbone("deberta-v2"))
    assert deberta.interface == [] and type(deberta.blocking[0][1]).__name__ == "DisentangledSelfAttention"
    assert not calls_attention_interface(type(tiny_backbone("mpnet").encoder.layer[0].attention.attn))


def test_the_probe_forward_leaves_modes_and_random_state_as_it_found_them() -> None:
    backbone = tiny_backbone("llama", attention_dropout=0.5).train()  # dropout would draw random numbers
    backbone.model.layers[1].eval()  # a mixed state must come back exactly
    state = torch.random.get_rng_state()
    build_model = PromptModel(backbone, "linear-probe")  # no prefix to initialise: no draws of its own
    injector = AttentionInterfaceInjector(backbone, [layer.self_attn for layer in backbone.model.layers])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert build_model.injector is None and injector.forward_kwargs(None) == {}
    assert backbone.training and backbone.model.layers[0].training and not backbone.model.layers[1].training
