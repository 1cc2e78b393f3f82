"""``--pooling pooler`` beyond BERT's layout: ALBERT keeps its pooler as a plain Linear (``pooler.weight``), and
DeBERTa's pooler applies gelu, which a tanh head would not compute."""

from __future__ import annotations

import pytest
import torch
from core_tiny import tiny_backbone

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import PromptModel
from ptuning.core.pooler import (
    PoolerNotFoundError,
    attach_pretrained_pooler,
    head_spec,
    read_pretrained_pooler,
)


def test_albert_s_pooler_is_read_from_its_plain_linear(tmp_path) -> None:
    """It was refused as 'has no pooler weights (pooler.dense.weight/.bias)', which ALBERT's classifiers read."""
    albert = tiny_backbone("albert")
    albert.save_pretrained(tmp_path / "albert")
    pooler = read_pretrained_pooler(str(tmp_path / "albert"))
    assert pooler is not None
    assert torch.equal(pooler["weight"], albert.pooler.weight) and torch.equal(
        pooler["bias"], albert.pooler.bias
    )


def test_a_pooler_that_is_not_tanh_is_refused_naming_its_activation(tmp_path) -> None:
    backbone = tiny_backbone("deberta-v2")
    assert backbone.config.pooler_hidden_act == "gelu"
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("t", head_spec(HeadKind.CLASSIFICATION, ["a", "b"], "pooler"))
    with pytest.raises(PoolerNotFoundError, match=r"applies gelu \(pooler_hidden_act\)"):
        attach_pretrained_pooler(model, "t", str(tmp_path))
