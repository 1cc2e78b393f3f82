"""What a checkpoint stores: collapsed prefix-mlp prompts load with identical logits; the base fingerprint
depends on the weights and architecture only, not on runtime flags; checkpoints with the older fingerprint
still load on their base."""

from __future__ import annotations

import json

import pytest
import torch
from core_tiny import build, pad_rows, random_ids, tiny_backbone
from transformers import AutoModel, AutoModelForCausalLM

from ptuning.core.checkpoint import CONFIG_FILE, CheckpointError, load_checkpoint, save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.fingerprint import base_fingerprint
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return pad_rows([random_ids(1, 6)[0], random_ids(1, 3, seed=2)[0]], "right", 0)


def perturbed_mlp_model():
    model = build("bert", method="prefix-mlp", mlp_hidden_size=16).model
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def test_a_collapsed_prefix_mlp_checkpoint_loads_with_identical_logits(tmp_path) -> None:
    model = perturbed_mlp_model()
    ids, mask = batch()
    with torch.no_grad():
        before = model(ids, mask).logits
    model.collapse_prefixes()
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    assert loaded.prefixes["t"].mlp is None
    assert json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())["prefix_forms"] == {"t": "table"}
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, before)


def test_a_collapsed_checkpoint_written_before_prefix_forms_existed_loads_too(tmp_path) -> None:
    model = perturbed_mlp_model()
    model.collapse_prefixes()
    save_checkpoint(model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(path.read_text())
    del config["prefix_forms"]  # as the earlier save_checkpoint wrote it
    path.write_text(json.dumps(config))
    ids, mask = batch()
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)


@pytest.mark.parametrize(
    "flags",
    [
        {"use_cache": False},
        {"output_hidden_states": True},
        {"problem_type": "regression"},
        {"pad_token_id": 3},
        {"return_dict": False},
        {"hidden_dropout_prob": 0.3},
        {"id2label": {0: "a", 1: "b", 2: "c"}},
    ],
)
def test_runtime_flags_do_not_change_the_base_fingerprint(flags: dict, tmp_path) -> None:
    reference = base_fingerprint(tiny_backbone("bert"))
    flagged = tiny_backbone(
        "bert"
    )  # the same weights, loaded with other flags (from_pretrained(..., **flags))
    for key, value in flags.items():
        setattr(flagged.config, key, value)
    assert base_fingerprint(flagged) == reference
    save_checkpoint(build("bert").model, tmp_path / "ckpt")
    load_checkpoint(tmp_path / "ckpt", backbone=flagged)  # not refused as "another base model"


def test_architecture_and_weights_still_change_the_base_fingerprint() -> None:
    reference = base_fingerprint(tiny_backbone("bert"))
    assert base_fingerprint(tiny_backbone("bert", hidden_act="relu")) != reference
    assert base_fingerprint(tiny_backbone("bert", layer_norm_eps=1e-3)) != reference
    assert base_fingerprint(tiny_backbone("bert", seed=4)) != reference


def test_a_checkpoint_with_the_version_1_fingerprint_still_loads_on_its_base(tmp_path) -> None:
    save_checkpoint(build("bert").model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(path.read_text())
    del config["base_model"]["fingerprint_version"]  # as checkpoints before version 2 were written
    config["base_model"]["fingerprint"] = base_fingerprint(tiny_backbone("bert"), version=1)
    path.write_text(json.dumps(config))
    load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert", seed=4))


def test_one_decoder_folder_loaded_with_or_without_its_lm_head_is_one_base(tmp_path) -> None:
    """A classification prompt trained on a decoder (loaded without its LM head) was refused as "another base"
    by a generative run on the same folder (loaded with it): version 2 hashed the module's own tensor names,
    ``layers.0...`` against ``model.layers.0...`` + ``lm_head``. Version 3 hashes the base transformer."""
    tiny_backbone("llama").save_pretrained(tmp_path / "llama")  # a LlamaForCausalLM
    bare = AutoModel.from_pretrained(tmp_path / "llama")  # what a head's run loads, and one with the LM head
    with_head = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    assert type(bare).__name__ == "LlamaModel" and type(with_head).__name__ == "LlamaForCausalLM"
    assert base_fingerprint(bare) == base_fingerprint(with_head)
    assert base_fingerprint(bare, version=2) != base_fingerprint(with_head, version=2)
    model = PromptModel(bare, "ptuning-v2", PrefixConfig(prefix_length=3, init_std=1.0))
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="a classification head reads hidden states"):
        load_checkpoint(tmp_path / "ckpt", backbone=with_head)  # whole: its head could not run there
    moved = load_checkpoint(tmp_path / "ckpt", backbone=with_head, prefix_only=True)  # --init-prefix-from
    assert torch.equal(moved.prefixes["t"].table(), model.prefixes["t"].table())
    other = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    with torch.no_grad():
        other.model.norm.weight.add_(1e-2)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(tmp_path / "ckpt", backbone=other, prefix_only=True)


def test_a_checkpoint_with_the_version_2_fingerprint_still_loads_on_its_base(tmp_path) -> None:
    save_checkpoint(build("bert").model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(path.read_text())
    assert config["base_model"]["fingerprint_version"] == 3
    config["base_model"]["fingerprint_version"] = 2
    config["base_model"]["fingerprint"] = base_fingerprint(tiny_backbone("bert"), version=2)
    path.write_text(json.dumps(config))
    load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert"))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(tmp_path / "ckpt", backbone=tiny_backbone("bert", seed=4))
