"""A checkpoint saved after the model changed its backbone's dtype (``model.half()``, or ``.float()`` after an
fp16 load) loads by name: where the change crossed fp16, ``base_model.dtype`` is the dtype the fingerprint was
taken on, at build. It used to be the dtype at save, so the loader loaded the other base and refused it,
advising that very dtype."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import save_tiny_bert

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import load_checkpoint, save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel

INPUT_IDS = torch.tensor([[101, 2307, 4569, 102]])


@pytest.mark.parametrize(
    ("loaded_in", "convert", "recorded", "reloaded_in"),
    [
        (None, "half", "fp32", torch.float32),
        ("fp16", "float", "fp16", torch.float16),
        (None, "bfloat16", "bf16", torch.bfloat16),  # the same base: the dtype trained on is kept
    ],
)
def test_a_checkpoint_saved_after_a_dtype_change_loads_by_name_on_the_built_dtype(
    tmp_path, loaded_in: str | None, convert: str, recorded: str, reloaded_in: torch.dtype
) -> None:
    backbone, _ = load_backbone(save_tiny_bert(tmp_path / "base"), dtype=loaded_in)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2, dropout=0.0), head_dropout=0.0)
    model.add_task("t", HeadSpec("classification", ["neg", "pos"]))
    with torch.no_grad():
        model.prefixes["t"].embedding.weight.normal_(std=2.0)  # a prefix that moves the logits
    getattr(model, convert)()
    saved = save_checkpoint(model.eval(), tmp_path / "prompt")
    config = json.loads((saved / "prompt_config.json").read_text())
    assert config["base_model"]["dtype"] == recorded

    loaded = load_checkpoint(saved)  # refused before: the base in the other dtype had another fingerprint
    assert {p.dtype for p in loaded.backbone.parameters()} == {reloaded_in}
    torch.testing.assert_close(
        loaded.prefixes["t"].embedding.weight.float(), model.prefixes["t"].embedding.weight.float()
    )
    with torch.no_grad():
        logits = loaded(INPUT_IDS).logits
        model.backbone.to(reloaded_in)  # the saved model's backbone back in the dtype it was built on
        expected = model(INPUT_IDS).logits
    torch.testing.assert_close(logits.float(), expected.float(), atol=1e-3, rtol=0)
