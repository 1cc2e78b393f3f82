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
