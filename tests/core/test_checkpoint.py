"""Prompt-only checkpoints: identical logits after a round trip, safetensors + JSON only, and a clear refusal
of a different base model or a damaged folder."""

from __future__ import annotations

import json
import re

import pytest
import torch
from core_tiny import DECODERS, assert_close, build, pad_id, pad_rows, random_ids, tiny_backbone

from ptuning.core.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    base_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.pooler import attach_pretrained_pooler, head_spec


def batch(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    side = "left" if family in DECODERS else "right"
    return pad_rows([random_ids(1, 6)[0], random_ids(1, 3, seed=2)[0]], side, pad_id(family))


def perturb_trainables(model) -> None:
    """Move every trainable tensor off its initial value, so a round trip that drops one cannot pass."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize(
    ("family", "method"),
    [
        ("bert", "ptuning-v2"),
        ("bert", "prefix-mlp"),
        ("deberta-v2", "ptuning-v2"),
        ("llama", "ptuning-v2"),
        ("bert", "prompt-tuning"),
        ("bert", "linear-probe"),
        ("gpt2", "finetune"),
    ],
)
def test_round_trip_gives_identical_logits(family: str, method: str, tmp_path) -> None:
    built = build(family, method=method, mlp_hidden_size=16)
    perturb_trainables(built.model)
    ids, mask = batch(family)
    with torch.no_grad():
        before = built.model(ids, mask).logits
    save_checkpoint(built.model, tmp_path / "ckpt")

    fresh_backbone = tiny_backbone(family)  # the same seed: the same base weights
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=fresh_backbone)
    with torch.no_grad():
        after = loaded(ids, mask).logits
    assert_close(after, before, atol=0.0)
    assert loaded.method == built.model.method and loaded.prefix_config == built.model.prefix_config


def test_mlp_reparameterization_is_saved_so_training_can_continue(tmp_path) -> None:
    model = build("bert", method="prefix-mlp", mlp_hidden_size=16).model
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert loaded.prefixes["t"].mlp is not None
    for name, tensor in model.prefixes.state_dict().items():
        assert torch.equal(loaded.prefixes.state_dict()[name], tensor), name


def test_head_dropout_is_restored_so_training_can_continue(tmp_path) -> None:
    """Eval logits ignore dropout, so the round trip above cannot see it; a loaded model that resumes
    training must drop head inputs at the saved rate (0.3 here), not the 0.1 default."""
    model = build("bert", head_dropout=0.3).model
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert loaded.head_dropout == 0.3
    assert loaded.heads["t"].dropout.p == 0.3


def test_prompt_checkpoint_holds_only_prefix_and_head_as_safetensors_and_json(tmp_path) -> None:
    model = build("bert").model
    save_checkpoint(model, tmp_path / "ckpt", task_names={"t": "sst2"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    from safetensors.torch import load_file

    names = load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)).keys()
    assert names and all(name.startswith(("prefixes.", "heads.")) for name in names)
    config = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert config["tasks"]["t"]["task"] == "sst2"
    assert config["base_model"]["fingerprint"] == base_fingerprint(model.backbone)


def test_a_model_holding_prefixes_of_other_lengths_is_refused_at_save_not_at_load(tmp_path) -> None:
    from ptuning.core.prefix import PrefixEncoder

    model = build("bert").model  # prefix_length 4 (core_tiny)
    model.prefixes["t"] = PrefixEncoder(
        PrefixConfig(prefix_length=7), model.geometry
    )  # as a server holds them
    with pytest.raises(CheckpointError, match=r"prefixes \{'t': 7\} differ from the model's prefix_length"):
        save_checkpoint(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()  # nothing written that would not load


def test_saving_again_replaces_the_checkpoint_without_leftovers(tmp_path) -> None:
    model = build("bert").model
    save_checkpoint(model, tmp_path / "ckpt")
    perturb_trainables(model)
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert torch.equal(loaded.prefixes["t"].table(), model.prefixes["t"].table())


def test_loading_onto_another_base_model_names_both(tmp_path) -> None:
    save_checkpoint(build("bert").model, tmp_path / "ckpt")
    other = tiny_backbone("bert", seed=5)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "ckpt", backbone=other)
    message = str(error.value)
    assert str(tmp_path / "ckpt") in message
    assert base_fingerprint(tiny_backbone("bert")) in message and base_fingerprint(other) in message


def test_fingerprint_ignores_precision_and_attention_backend_but_not_weights() -> None:
    reference = base_fingerprint(tiny_backbone("llama"))
    assert base_fingerprint(tiny_backbone("llama").to(torch.bfloat16)) == reference
    assert base_fingerprint(tiny_backbone("llama", attn_implementation="eager")) == reference
    assert base_fingerprint(tiny_backbone("llama", seed=1)) != reference
    changed = tiny_backbone("llama")
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    assert base_fingerprint(changed) != reference


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / CONFIG_FILE).unlink(), "prompt_config.json is missing"),
        (lambda d: (d / CONFIG_FILE).write_text('{"format": \n'), "invalid JSON at line 2"),
        (lambda d: (d / CONFIG_FILE).write_text('{"format": "other/9"}'), "format 'other/9'"),
        (lambda d: (d / WEIGHTS_FILE).unlink(), "prompt.safetensors is missing"),
        (
            lambda d: (d / CONFIG_FILE).write_text('{"format": "ptuning-prompt-checkpoint/1"}'),
            "missing fields",
        ),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_the_reason(damage, expected: str, tmp_path) -> None:
    save_checkpoint(build("bert").model, tmp_path / "ckpt")
    damage(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))


def test_weights_of_another_prefix_shape_are_refused(tmp_path) -> None:
    save_checkpoint(build("bert", prefix_length=4).model, tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["prefix"]["prefix_length"] = 5
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="(?s)prompt.safetensors does not fit .*size mismatch"):
        load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))


def test_fingerprint_samples_reach_the_last_element_of_huge_tensors() -> None:
    backbone = tiny_backbone("bert")
    backbone.register_buffer("huge", torch.zeros(2**24 + 7))  # float32 cannot index its last element
    before = base_fingerprint(backbone)
    backbone.huge[-1] = 1.0
    assert base_fingerprint(backbone) != before


def test_a_path_that_is_no_checkpoint_says_what_it_is_instead(tmp_path) -> None:
    from ptuning.core.checkpoint import read_checkpoint_config

    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / CONFIG_FILE).write_text("{}")
    (tmp_path / "afile").write_text("x")
    for path, message in (
        (tmp_path / "nowhere", "no such checkpoint folder"),
        (tmp_path / "afile", "is a file; a prompt checkpoint is a folder"),
        (tmp_path / "run", f"did you mean {tmp_path / 'run' / 'checkpoint'}?"),
    ):
        with pytest.raises(CheckpointError, match=re.escape(message)):
            read_checkpoint_config(path)


def _one_task_model(backbone, **model_options) -> PromptModel:
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2), **model_options)
    model.add_task("t", HeadSpec("classification", ["neg", "pos"]))
    return model


def test_a_save_the_loader_would_refuse_raises_and_keeps_the_old_checkpoint(tmp_path) -> None:
    """A model without tasks saved over a good checkpoint without complaint; loading it then failed."""
    backbone = tiny_backbone("bert")
    save_checkpoint(_one_task_model(backbone), tmp_path / "ckpt")
    good = (tmp_path / "ckpt" / CONFIG_FILE).read_text()
    empty = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    with pytest.raises(CheckpointError, match=r"not saved .*field 'tasks' should be at least one task"):
        save_checkpoint(empty, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / CONFIG_FILE).read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging folder left behind
    assert load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert")).tasks == ["t"]


@pytest.mark.parametrize("head_dropout", [1.0, -0.1])
def test_a_head_dropout_the_loader_refuses_is_refused_when_the_model_is_built(head_dropout: float) -> None:
    with pytest.raises(ConfigError, match=r"head_dropout must be a number in \[0, 1\)"):
        PromptModel(
            tiny_backbone("bert"), "ptuning-v2", PrefixConfig(prefix_length=2), head_dropout=head_dropout
        )


@pytest.mark.parametrize(
    "spec",
    [
        HeadSpec("token-classification", ["O", "B"], dense_activation="tanh"),
        HeadSpec("classification", ["a", "b"], dense_activation="relu"),
    ],
)
def test_a_refused_head_leaves_no_prefix_behind_and_the_model_still_saves(spec, tmp_path) -> None:
    """The prefix was created before the head refused: counted trainable, saved, and the checkpoint unloadable."""
    model = _one_task_model(tiny_backbone("bert"))
    before = model.trainable_parameters().trainable
    with pytest.raises(ValueError, match="dense"):
        model.add_task("ner", spec)
    assert list(model.prefixes) == ["t"] and model.tasks == ["t"]
    assert model.trainable_parameters().trainable == before
    save_checkpoint(model, tmp_path / "ckpt")
    assert list(load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert")).prefixes) == ["t"]


def test_a_model_keeps_its_own_prefix_config_when_the_caller_reuses_theirs(tmp_path) -> None:
    """A sweep reusing one PrefixConfig changed the first model's prefix length: its save could not load."""
    config = PrefixConfig(prefix_length=4)
    model = PromptModel(tiny_backbone("bert"), "ptuning-v2", config)
    model.add_task("t", HeadSpec("classification", ["neg", "pos"]))
    config.prefix_length = 8
    assert model.prefix_config.prefix_length == 4 and model.prefixes["t"].prefix_length == 4
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert loaded.prefixes["t"].embedding.weight.shape[0] == 4


def test_the_pretrained_pooler_stays_frozen_after_a_round_trip(tmp_path) -> None:
    """``--pooling pooler`` freezes the dense layer; a loaded checkpoint made it trainable again (and PEFT
    export then refused it)."""
    backbone = tiny_backbone("bert")  # AutoModel: with its pooler, saved as the base to read it from
    backbone.save_pretrained(tmp_path / "base")
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("t", head_spec("classification", ["neg", "pos"], "pooler"))
    attach_pretrained_pooler(model, "t", str(tmp_path / "base"))
    trainable = model.trainable_parameters().trainable
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert [p.requires_grad for p in loaded.heads["t"].dense.parameters()] == [False, False]
    assert loaded.trainable_parameters().trainable == trainable
    assert torch.equal(loaded.heads["t"].dense.weight, backbone.pooler.dense.weight)


def test_a_frozen_dense_saved_without_the_flag_loads_trainable_as_before(tmp_path) -> None:
    """Checkpoints written before ``frozen_dense`` existed load as they did."""
    backbone = tiny_backbone("bert")
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("t", HeadSpec("classification", ["neg", "pos"], "first", "tanh"))
    save_checkpoint(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert "frozen_dense" not in config["tasks"]["t"]["head"]
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert [p.requires_grad for p in loaded.heads["t"].dense.parameters()] == [True, True]


def test_an_old_prompt_tuning_checkpoint_with_unread_prefix_fields_still_loads(tmp_path) -> None:
    """Prompt tuning now refuses layers / an MLP it never used; checkpoints saved when it accepted them load."""
    model = PromptModel(tiny_backbone("bert"), "prompt-tuning", PrefixConfig(prefix_length=2))
    model.add_task("t", HeadSpec("classification", ["neg", "pos"]))
    save_checkpoint(model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(path.read_text())
    config["prefix"].update(layers=[1], reparameterization="mlp")
    path.write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert torch.equal(loaded.prefixes["t"].embedding.weight, model.prefixes["t"].embedding.weight)
    assert loaded.prefix_config.layers is None
