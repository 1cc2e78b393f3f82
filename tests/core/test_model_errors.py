"""Misuse fails early with a message that names what was wrong and what is accepted."""

from __future__ import annotations

import pytest
import torch
from core_tiny import build, random_ids, tiny_backbone
from transformers import BartConfig, BartModel, GPTNeoConfig, GPTNeoForCausalLM, T5Config, T5Model

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.geometry import UnsupportedModelError
from ptuning.core.model import HeadSpec, PromptModel


@pytest.mark.parametrize("length", [0, -3])
def test_non_positive_prefix_length_is_refused_naming_the_field(length: int) -> None:
    with pytest.raises(ConfigError, match="prefix_length"):
        PrefixConfig(prefix_length=length)


def test_an_encoder_decoder_whose_decoder_has_other_heads_is_refused_naming_both() -> None:
    config = BartConfig(
        vocab_size=100, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError) as raised:
        PromptModel(BartModel(config), "ptuning-v2", PrefixConfig(prefix_length=2))
    message = str(raised.value)
    assert "'bart'" in message and "decoder has 4 attention heads and its encoder 2" in message


def test_a_seq2seq_task_on_a_model_without_an_lm_head_is_refused() -> None:
    config = T5Config(vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)
    model = PromptModel(T5Model(config), "ptuning-v2", PrefixConfig(prefix_length=2))
    with pytest.raises(ConfigError, match="ForConditionalGeneration"):
        model.add_task("s", HeadSpec("seq2seq-lm"))


def test_a_model_with_its_own_attention_is_refused_naming_the_blocking_module() -> None:
    config = GPTNeoConfig(
        vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]], window_size=8,
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError) as raised:
        PromptModel(GPTNeoForCausalLM(config), "ptuning-v2", PrefixConfig(prefix_length=2))
    message = str(raised.value)
    assert "model type 'gpt_neo' (GPTNeoForCausalLM)" in message
    assert "GPTNeoSelfAttention (transformer.h.0.attn.attention)" in message
    assert "instead of calling transformers' attention interface" in message
    assert "llama" in message and "deberta-v2" in message


def test_a_model_without_a_prefix_path_still_takes_methods_that_need_none() -> None:
    config = GPTNeoConfig(
        vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]], window_size=8,
    )  # fmt: skip
    model = PromptModel(GPTNeoForCausalLM(config), "linear-probe")
    assert model.injector is None and model.geometry.num_layers == 2


def test_a_prefix_longer_than_the_sliding_window_is_refused_with_the_reason() -> None:
    with pytest.raises(
        UnsupportedModelError, match=r"prefix_length 7 is longer than gemma2's sliding window of 6"
    ):
        build("gemma2", prefix_length=7, attn_implementation="eager")


def test_shift_mode_refuses_prefix_plus_input_longer_than_the_position_table() -> None:
    # GPT-2 with 16 positions and P=8: 9 tokens need positions up to 16 once shifted by the prefix.
    model = build("gpt2", prefix_length=8, position_mode="shift", config_overrides={"n_positions": 16}).model
    with pytest.raises(ConfigError, match=r"prefix \+ input needs 17 positions but gpt2 has 16"):
        model(random_ids(1, 9))


def test_unknown_task_name_lists_the_known_tasks() -> None:
    model = build("bert").model
    with pytest.raises(KeyError, match=r"unknown task 'nope'; this model has \['t'\]"):
        model(random_ids(1, 4), task="nope")


def test_unknown_prefix_name_in_a_mixed_batch_is_refused() -> None:
    model = build("bert").model
    with pytest.raises(KeyError, match="unknown prefix"):
        model(random_ids(2, 4), task="t", row_prefixes=["t", "nope"])


@pytest.mark.parametrize("names", [[], ["t"], ["t", "t", "t"]])
def test_row_prefixes_must_name_one_prefix_per_row(names) -> None:
    """An empty list ran every row on the task's prefix; a short or long one failed inside attention."""
    model = build("bert").model
    with pytest.raises(ConfigError, match=f"row_prefixes names {len(names)} prefixes for 2 rows"):
        model(random_ids(2, 4), task="t", row_prefixes=names)


def test_backend_without_a_prefix_twin_is_refused_at_construction() -> None:
    backbone = tiny_backbone("bert")
    backbone.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="cannot take a prefix"):
        PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))


def test_a_task_added_to_a_model_in_eval_mode_is_in_eval_mode() -> None:
    """The new head and prefix were in train mode: two eval calls gave different logits (their dropout)."""
    model = PromptModel(tiny_backbone("bert"), "ptuning-v2", PrefixConfig(prefix_length=4)).eval()
    model.add_task("a", HeadSpec("classification", ["x", "y"]))
    assert not model.heads["a"].training and not model.prefixes["a"].training
    ids = random_ids(2, 5)
    assert torch.equal(model(ids, task="a").logits, model(ids, task="a").logits)


def test_a_head_the_backbone_cannot_feed_is_refused_when_added() -> None:
    """Accepted, they failed inside forward with an AttributeError on the backbone's output."""
    model = PromptModel(tiny_backbone("bert"), "ptuning-v2")
    with pytest.raises(ConfigError, match="causal-lm task needs a decoder with its LM head .* BertModel"):
        model.add_task("c", HeadSpec("causal-lm"))
    assert len(model.prefixes) == 0 and model.tasks == []  # a refused task leaves no prefix behind
    with pytest.raises(ConfigError, match="classification head reads hidden states: load the base model"):
        PromptModel(tiny_backbone("llama"), "ptuning-v2").add_task(
            "c", HeadSpec("classification", ["a", "b"])
        )


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda: PrefixConfig(prefix_length=True), "prefix_length must be a positive integer, got True"),
        (lambda: PrefixConfig(mlp_hidden_size=1.5), "mlp_hidden_size must be a positive integer"),
        (lambda: PrefixConfig(init_std=float("nan")), "init_std must be a finite number"),
        (lambda: PrefixConfig(dropout="0.1"), "dropout must be a finite number"),
        (lambda: HeadSpec("classification", "pos"), "label_names must be a list of names"),
        (lambda: HeadSpec("classification", ["a", "a"]), "label_names must be distinct"),
    ],
)
def test_values_of_the_wrong_kind_are_refused_naming_the_field(make, said) -> None:
    """'pos' built a three-way head (one label per character); True was a prefix of length 1."""
    with pytest.raises(ConfigError, match=said):
        make()


@pytest.mark.parametrize("method", ["prompt-tuning", "linear-probe"])
@pytest.mark.parametrize(
    ("fields", "named"),
    [({"reparameterization": "mlp"}, "reparameterization"), ({"layers": (1,)}, "layers")],
)
def test_prefix_fields_a_method_never_reads_are_refused_naming_field_and_method(
    method: str, fields: dict, named: str
) -> None:
    """They built the same prompt as the defaults: the run was not the one asked for."""
    backbone = tiny_backbone("bert")
    with pytest.raises(ConfigError, match=f"prefix config {named} is not used by method {method}"):
        PromptModel(backbone, method, PrefixConfig(prefix_length=2, **fields))
    assert all(p.requires_grad for p in backbone.parameters())  # refused before the backbone was touched


def test_a_head_spec_pooling_outside_the_choices_names_the_field_and_the_pooler_way() -> None:
    with pytest.raises(ConfigError) as raised:
        HeadSpec("classification", ["a", "b"], pooling="pooler")
    message = str(raised.value)
    assert "pooling must be one of first, last, mean; got 'pooler'" in message
    assert "ptuning.core.pooler.head_spec" in message and "attach_pretrained_pooler" in message


def test_a_head_spec_kind_outside_the_choices_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"HeadSpec kind must be one of classification, .*; got 'classify'"):
        HeadSpec.from_dict({"kind": "classify"})


@pytest.mark.parametrize("method", ["prompt-tuning", "linear-probe"])
@pytest.mark.parametrize(("field", "value"), [("prefix_layers", [1]), ("prefix_init_std", 0.02)])
def test_train_config_refuses_prefix_options_the_method_never_reads(method: str, field: str, value) -> None:
    """The run's options, refused where they are given (``--prefix-layers 1`` with prompt tuning was accepted
    and trained input prompts only); the config that builds this model checks them before it."""
    from ptuning.training.config import build_config

    with pytest.raises(ConfigError, match=f"{field} is not used by method {method}"):
        build_config([("flags", {"task": "sst2", "method": method, field: value})])


def test_loading_a_finetune_checkpoint_onto_its_own_trained_backbone_says_to_use_a_fresh_copy(
    tmp_path,
) -> None:
    from ptuning.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    backbone = tiny_backbone("bert")
    model = PromptModel(backbone, "finetune")
    model.add_task("t", HeadSpec("classification", ["neg", "pos"]))
    with torch.no_grad():
        next(backbone.parameters()).add_(1.0)  # a training step, in place
    save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="fine-tuned in place.*fresh copy of the base model"):
        load_checkpoint(tmp_path / "ckpt", backbone=backbone)
    model.detach_backbone()
    assert load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert")).tasks == ["t"]
