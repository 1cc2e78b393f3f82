"""``load_checkpoint(folder)`` with no backbone loads the base in the dtype the prompt was trained on
(``base_model.dtype``), as ``ptuning predict`` does; ``backbone_dtype=`` chooses another."""

from __future__ import annotations

import pytest
import torch
from tiny_models import save_tiny_bert

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

INPUT_IDS = torch.tensor([[101, 2307, 4569, 102]])


def _saved_on(folder: str, dtype: str, target) -> tuple[PromptModel, str]:
    backbone, _ = load_backbone(folder, dtype=dtype)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2, dropout=0.0), head_dropout=0.0)
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["neg", "pos"]))
    with torch.no_grad():
        model.prefixes["t"].embedding.weight.normal_(std=2.0)  # a prefix that moves the logits
    return model.eval(), str(save_checkpoint(model, target))


def _dtypes(model: PromptModel) -> set[torch.dtype]:
    return {p.dtype for p in model.backbone.parameters()}


def test_a_bf16_trained_checkpoint_loads_its_base_in_bf16_with_the_trained_logits(tmp_path) -> None:
    """The base was loaded in fp32 whatever the checkpoint recorded: the logits moved silently."""
    folder = save_tiny_bert(tmp_path / "base")
    trained, saved = _saved_on(folder, "bf16", tmp_path / "prompt")
    loaded = load_checkpoint(saved)
    assert _dtypes(loaded) == {torch.bfloat16}
    with torch.no_grad():
        expected = trained(INPUT_IDS, task="t").logits
        assert torch.equal(loaded(INPUT_IDS, task="t").logits, expected)
        on_fp32 = load_checkpoint(
            saved, backbone_dtype="fp32"
        )  # the caller's choice: bf16's copy is one base
        assert _dtypes(on_fp32) == {torch.float32}
        assert not torch.equal(on_fp32(INPUT_IDS, task="t").logits, expected)


def test_an_fp16_trained_checkpoint_loads_in_fp16_and_its_refusal_names_the_library_argument(
    tmp_path,
) -> None:
    """An fp16 checkpoint was refused by the library path, with a hint only the command line could follow."""
    folder = save_tiny_bert(tmp_path / "base")
    _, saved = _saved_on(folder, "fp16", tmp_path / "prompt")
    assert _dtypes(load_checkpoint(saved)) == {torch.float16}
    with pytest.raises(
        CheckpointError, match=r"trained on the backbone stored in fp16.*backbone_dtype='fp16'"
    ):
        load_checkpoint(saved, backbone_dtype="fp32")


def test_an_fp32_checkpoint_still_loads_in_fp32(tmp_path) -> None:
    folder = save_tiny_bert(tmp_path / "base")
    _, saved = _saved_on(folder, "fp32", tmp_path / "prompt")
    assert _dtypes(load_checkpoint(saved)) == {torch.float32}
    assert _dtypes(load_checkpoint(saved, backbone_dtype="bf16")) == {torch.bfloat16}


def test_backbone_dtype_with_a_given_backbone_is_refused_not_ignored(tmp_path) -> None:
    folder = save_tiny_bert(tmp_path / "base")
    _, saved = _saved_on(folder, "fp32", tmp_path / "prompt")
    backbone, _ = load_backbone(folder)
    with pytest.raises(ConfigError, match=r"backbone_dtype='bf16' applies only when load_checkpoint loads"):
        load_checkpoint(saved, backbone=backbone, backbone_dtype="bf16")
