"""A PromptModel leaves the user's backbone as it found it: ``detach_backbone()`` undoes FastDropout, the
prefix-aware attention, freezing and gradient checkpointing; models sharing a backbone do not see each other.
"""

from __future__ import annotations

import copy

import pytest
import torch
from core_tiny import DECODERS, random_ids, tiny_backbone
from torch import nn

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.dropout import FastDropout
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

DROPOUT = {
    "bert": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "deberta-v2": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "llama": {"attention_dropout": 0.1},
    "gpt2": {"resid_pdrop": 0.1, "attn_pdrop": 0.1, "embd_pdrop": 0.1},
}


def backbone_with_dropout(family: str) -> nn.Module:
    return tiny_backbone(family, **DROPOUT[family])


def prompt_model(backbone: nn.Module, family: str, method: str = "ptuning-v2", seed: int = 1) -> PromptModel:
    torch.manual_seed(seed)
    model = PromptModel(backbone, method, PrefixConfig(prefix_length=3, dropout=0.0), head_dropout=0.0)
    kind = HeadKind.CAUSAL_LM if family in DECODERS else HeadKind.CLASSIFICATION
    model.add_task("t", HeadSpec(kind, None if family in DECODERS else ["a", "b"]))
    return model


def raw_output(backbone: nn.Module, seed: int = 7) -> torch.Tensor:
    """What the user's own call of the backbone returns, with dropout drawn from ``seed``."""
    ids = random_ids(2, 6)
    torch.manual_seed(seed)
    out = backbone(input_ids=ids, attention_mask=torch.ones_like(ids))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def model_output(model: PromptModel) -> torch.Tensor:
    ids = random_ids(2, 6, seed=3)
    return model(ids, torch.ones_like(ids)).logits


def assert_as_found(backbone: nn.Module, pristine: nn.Module) -> None:
    assert [type(m) for m in backbone.modules()] == [type(m) for m in pristine.modules()]
    assert not any(isinstance(m, FastDropout) for m in backbone.modules())
    assert backbone.config._attn_implementation == pristine.config._attn_implementation
    assert not any("forward" in vars(m) or any("ptuning" in k for k in vars(m)) for m in backbone.modules())
    assert all(p.requires_grad for p in backbone.parameters())
    assert not backbone.is_activation_checkpointing and backbone.training is pristine.training
    assert torch.equal(raw_output(backbone), raw_output(pristine))  # eval mode
    # frozen by its user, it builds no graph: checkpointing's hook on the input embeddings is gone too
    backbone.requires_grad_(False)
    assert not raw_output(backbone).requires_grad and not getattr(backbone, "_require_grads_hooks", None)
    backbone.requires_grad_(True)
    backbone.train(), pristine.train()
    assert torch.equal(raw_output(backbone), raw_output(pristine))  # the same dropout masks: nn.Dropout again


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama", "gpt2"])
def test_detach_backbone_gives_the_backbone_back_as_found(family: str) -> None:
    backbone = backbone_with_dropout(family)
    pristine = copy.deepcopy(backbone)
    model = prompt_model(backbone, family)
    model.enable_gradient_checkpointing()
    model.train()
    model_output(model).sum().backward()  # a training step's forward and backward
    assert any(isinstance(m, FastDropout) for m in backbone.modules()) or family == "llama"
    assert (
        backbone.config._attn_implementation != pristine.config._attn_implementation or family == "deberta-v2"
    )
    model.eval()
    assert model.detach_backbone() is backbone
    assert_as_found(backbone, pristine)


def test_a_detached_model_refuses_to_run_or_detach_again() -> None:
    model = prompt_model(backbone_with_dropout("bert"), "bert")
    model.detach_backbone()
    with pytest.raises(RuntimeError, match=r"backbone was detached \(detach_backbone\(\)\); build a new one"):
        model_output(model)
    with pytest.raises(RuntimeError, match="was detached"):
        model.detach_backbone()


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_a_shared_backbone_comes_back_when_the_last_model_detaches(family: str) -> None:
    backbone = backbone_with_dropout(family)
    pristine = copy.deepcopy(backbone)
    first, second = prompt_model(backbone, family, seed=1), prompt_model(backbone, family, seed=2)
    second_before = model_output(second)
    first.detach_backbone()
    assert torch.equal(model_output(second), second_before)  # the other model still has what it needs
    assert any(isinstance(m, FastDropout) for m in backbone.modules())
    second.detach_backbone()
    assert_as_found(backbone, pristine)


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_models_sharing_a_backbone_answer_the_same_whichever_was_built_or_run_last(family: str) -> None:
    """A linear probe and a prefix model on one backbone: build them in either order, run the prefix model
    in between; the probe must never see the prefix (DeBERTa's per-module slot used to keep it)."""
    outputs = {}
    for order in (("probe", "prefix"), ("prefix", "probe")):
        backbone = backbone_with_dropout(family)
        models = {}
        for name in order:
            models[name] = prompt_model(backbone, family, "linear-probe" if name == "probe" else "ptuning-v2")
        probe_before = model_output(models["probe"])
        prefixed = model_output(models["prefix"])
        probe_after = model_output(models["probe"])
        torch.testing.assert_close(probe_after, probe_before, rtol=0, atol=0)
        outputs[order] = (probe_before, prefixed)
    (probe_a, prefix_a), (probe_b, prefix_b) = outputs.values()
    assert torch.equal(probe_a, probe_b) and torch.equal(prefix_a, prefix_b)
    assert not torch.equal(probe_a, prefix_a) or family in DECODERS  # decoders: the probe is the LM head too


def test_fine_tuning_and_freezing_models_cannot_share_a_backbone() -> None:
    backbone = backbone_with_dropout("bert")
    prompt_model(backbone, "bert", "ptuning-v2")
    with pytest.raises(
        ConfigError, match="already used by a PromptModel that freezes it; a model that fine-tunes"
    ):
        prompt_model(backbone, "bert", "finetune")
    assert not any(p.requires_grad for p in backbone.parameters())


def test_fast_dropout_keeps_the_mode_of_the_dropout_it_replaces() -> None:
    """An eval-mode backbone stays deterministic after FastDropout is swapped in (it used to start in
    training mode, so a model built on an eval-mode backbone dropped activations until .eval() was called)."""
    backbone = backbone_with_dropout("bert")  # eval mode, dropout 0.1
    model = prompt_model(backbone, "bert")
    assert all(not m.training for m in backbone.modules())
    assert torch.equal(model_output(model), model_output(model))


def test_a_model_that_cannot_be_built_leaves_the_backbone_as_found() -> None:
    backbone = tiny_backbone("bert", attn_implementation="flex_attention", **DROPOUT["bert"])
    pristine = copy.deepcopy(backbone)
    with pytest.raises(ValueError, match="cannot take a prefix"):
        prompt_model(backbone, "bert")
    assert [type(m) for m in backbone.modules()] == [type(m) for m in pristine.modules()]
    assert all(p.requires_grad for p in backbone.parameters()) and "_ptuning_attachment" not in vars(backbone)


@pytest.mark.parametrize("kind", ["int8", "int8-dynamic"])
def test_a_backbone_quantized_while_attached_stays_quantized_and_the_same_base_after_detaching(kind) -> None:
    from ptuning.core.quantization import is_quantized, quantize_backbone

    backbone = backbone_with_dropout("bert")
    model = prompt_model(backbone, "bert")
    quantize_backbone(model, kind)
    model.detach_backbone()
    assert is_quantized(backbone)
    # a new model on it is built on the same base (the unquantized fingerprint), not a crash in the hash
    assert prompt_model(backbone, "bert").base_fingerprint == model.base_fingerprint
