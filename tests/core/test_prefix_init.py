"""A prefix started from real tokens' keys and values (core.prefix_init).

The strongest check is an equality with no prefix machinery in it: for a causal model numbered with
``position_mode="shift"``, a prefix taken from tokens X must make the model treat input Y exactly as the plain
backbone treats the sequence X + Y (X as a cached context). A one-layer BERT has the same property, since its
first layer's keys for X do not depend on what follows X. MPNet and DeBERTa (relative position terms, which a
prefix key does not get) are checked against their own key/value projections of each layer's input.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from core_tiny import assert_close, build, random_ids
from torch import nn
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

from ptuning.core import prefix_init
from ptuning.core.injection.base import capturing
from ptuning.core.prefix_init import init_prefix_from_tokens

P = 5


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3", "phi", "gpt_neox"])
def test_causal_prefix_from_tokens_is_those_tokens_as_context(family: str) -> None:
    built = build(family, prefix_length=P, position_mode="shift")
    context, ids = random_ids(1, P, seed=3), random_ids(1, 7, seed=4)
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], context[0])
    with torch.no_grad():
        ours = built.outputs(ids, torch.ones_like(ids))
        whole = built.reference_backbone(input_ids=torch.cat([context, ids], dim=1)).logits[:, P:]
        # not a vacuous equality: the normal initialisation gives other logits
        plain = build(family, prefix_length=P, position_mode="shift").outputs(ids, torch.ones_like(ids))
    assert_close(ours, whole)
    assert (plain - whole).abs().max() > 1e-3


def test_one_layer_bert_prefix_from_tokens_is_those_tokens_before_the_input() -> None:
    built = build("bert", prefix_length=P, position_mode="shift", config_overrides={"num_hidden_layers": 1})
    context, ids = random_ids(1, P, seed=3), random_ids(1, 6, seed=4)
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], context[0])
    with torch.no_grad():
        ours = built.outputs(ids, torch.ones_like(ids))
        joined = torch.cat([context, ids], dim=1)
        whole = built.reference_backbone(input_ids=joined, attention_mask=torch.ones_like(joined))
    assert_close(ours, whole.last_hidden_state[:, P:])


def _projections(
    family: str, attention: nn.Module, hidden: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's own keys and values of ``hidden`` (1, T, H) as (heads, T, head_dim)."""
    key, value = (
        (attention.k, attention.v) if family == "mpnet" else (attention.key_proj, attention.value_proj)
    )
    heads = attention.num_attention_heads
    return tuple(p(hidden)[0].view(hidden.shape[1], heads, -1).transpose(0, 1) for p in (key, value))


@pytest.mark.parametrize(
    ("family", "attention_class"), [("mpnet", MPNetSelfAttention), ("deberta-v2", DisentangledSelfAttention)]
)
def test_patched_families_take_each_layers_own_keys_and_values(family: str, attention_class: type) -> None:
    built = build(family, prefix_length=P)
    context = random_ids(1, P, seed=3)
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], context[0])
    inputs: list[torch.Tensor] = []
    attentions = [m for m in built.reference_backbone.modules() if isinstance(m, attention_class)]
    hooks = [a.register_forward_pre_hook(lambda _, args: inputs.append(args[0])) for a in attentions]
    with torch.no_grad():
        built.reference_backbone(input_ids=context, attention_mask=torch.ones_like(context))
        prefix = built.model.prefix_kv(["t"])
        for hook in hooks:
            hook.remove()
        assert len(inputs) == len(attentions) == len(prefix.layers) == 2
        for layer, (attention, hidden) in enumerate(zip(attentions, inputs, strict=True)):
            keys, values = _projections(family, attention, hidden)
            assert_close(prefix.layers[layer][0][0], keys)
            assert_close(prefix.layers[layer][1][0], values)


def test_a_layer_subset_takes_those_layers_own_keys_and_values() -> None:
    """A prefix on layer 1 only gets layer 1's keys and values (not layer 0's, the first captured)."""
    context = random_ids(1, P + 3, seed=3)[0]
    every, top = build("llama", prefix_length=P), build("llama", prefix_length=P, layers=(1,))
    for built in (every, top):
        init_prefix_from_tokens(built.model, built.model.task_prefix["t"], context)
    with torch.no_grad():
        every_layer, top_only = every.model.prefix_kv(["t"]).layers, top.model.prefix_kv(["t"]).layers
    assert set(top_only) == {1}
    assert torch.equal(top_only[1][0], every_layer[1][0]) and torch.equal(top_only[1][1], every_layer[1][1])
    assert not torch.equal(top_only[1][0], every_layer[0][0])


def test_capture_leaves_dropout_on_for_training() -> None:
    built = build("bert", prefix_length=P)
    built.model.train()
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], random_ids(1, P, seed=3)[0])
    assert built.model.backbone.training


@pytest.mark.parametrize(
    ("fields", "ids", "message"),
    [
        ({"reparameterization": "mlp"}, random_ids(1, P)[0], "only an embedding-table deep prefix"),
        ({}, random_ids(1, P - 1)[0], f"at least {P} token ids"),
        ({}, random_ids(2, P), f"at least {P} token ids"),
    ],
)
def test_refusals_name_the_reason(fields: dict, ids: torch.Tensor, message: str) -> None:
    built = build("bert", prefix_length=P, **fields)
    with pytest.raises(ValueError, match=message):
        init_prefix_from_tokens(built.model, built.model.task_prefix["t"], ids)


P = 5
DROPOUT = {"hidden_dropout_prob": 0.5, "attention_probs_dropout_prob": 0.5}


def _table(built):
    return built.model.prefixes[built.model.task_prefix["t"]].embedding.weight.detach().clone()


def test_a_training_mode_model_is_captured_without_dropout() -> None:
    """The keys and values are inference's: a model in training mode (dropout 0.5) gets the same table as
    the same model in eval mode."""
    context = random_ids(1, P, seed=3)[0]
    training, inference = (build("bert", prefix_length=P, config_overrides=DROPOUT) for _ in range(2))
    training.model.train()
    torch.manual_seed(0)
    init_prefix_from_tokens(training.model, training.model.task_prefix["t"], context)
    init_prefix_from_tokens(inference.model, inference.model.task_prefix["t"], context)
    assert torch.equal(_table(training), _table(inference))


def test_an_eval_mode_model_stays_in_eval_mode() -> None:
    built = build("bert", prefix_length=P, config_overrides=DROPOUT)
    built.model.eval()
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], random_ids(1, P, seed=3)[0])
    assert not any(module.training for module in built.model.backbone.modules())


def test_only_the_first_p_tokens_are_taken() -> None:
    built = build("bert", prefix_length=P)
    ids = random_ids(1, P + 4, seed=3)[0]
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], ids)
    from_all = _table(built)
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], ids[:P])
    assert torch.equal(from_all, _table(built))


def test_capturing_ends_with_the_capture() -> None:
    """After the capture no later forward records keys and values (nor computes them, in MPNet/DeBERTa)."""
    built = build("mpnet", prefix_length=P)
    init_prefix_from_tokens(built.model, built.model.task_prefix["t"], random_ids(1, P, seed=3)[0])
    assert not capturing()


def test_an_encoder_decoder_is_refused_naming_why() -> None:
    from seq2seq_tiny import seq2seq_model

    model = seq2seq_model("t5")
    with pytest.raises(ValueError, match="encoder-decoder"):
        init_prefix_from_tokens(model, model.task_prefix["s"], torch.arange(3, 9))


def test_a_layer_the_forward_did_not_reach_is_a_value_error(monkeypatch) -> None:
    """A ValueError (which ``--prefix-init activations`` turns into a one-line error), not a KeyError."""

    @contextmanager
    def nothing_captured():
        yield {}

    monkeypatch.setattr(prefix_init, "capturing_keys_values", nothing_captured)
    built = build("bert", prefix_length=P)
    with pytest.raises(ValueError, match=r"did not reach the attention of prefixed layers \[0, 1\]"):
        init_prefix_from_tokens(built.model, built.model.task_prefix["t"], random_ids(1, P, seed=3)[0])


def test_a_prefix_longer_than_the_position_table_is_refused_naming_it() -> None:
    """The P tokens run through the backbone as one input: past BERT's 64 positions it was a RuntimeError
    traceback, where a normally initialised prefix of that length builds (keep mode takes no positions)."""
    built = build("bert", prefix_length=70)
    with pytest.raises(
        ValueError, match="prefix's 70 tokens run through the backbone as one input, past its 64"
    ):
        init_prefix_from_tokens(built.model, built.model.task_prefix["t"], random_ids(1, 70)[0])
