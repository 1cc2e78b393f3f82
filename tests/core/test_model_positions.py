"""Where real tokens sit: keep mode leaves the whole position table to them; shift mode spends P of it."""

from __future__ import annotations

import pytest
import torch
from core_tiny import assert_close, build, random_ids

from ptuning.core.config import ConfigError


def test_keep_mode_accepts_the_full_position_table_with_a_prefix() -> None:
    built = build(
        "bert", prefix_length=8, position_mode="keep", config_overrides={"max_position_embeddings": 16}
    )
    ids = random_ids(1, 16)
    seen = []
    layer0 = built.model.backbone.encoder.layer[0]
    hook = layer0.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        hidden = built.model.encode(ids, None, None, ["t"])
        plain_embeddings = built.reference_backbone.embeddings(input_ids=ids)  # positions 0..15
    hook.remove()
    assert hidden.shape == (1, 16, 32)
    # Real tokens enter layer 0 with positions 0..15, exactly as without a prefix.
    assert_close(seen[0], plain_embeddings)


def test_shift_mode_refuses_the_full_position_table_with_a_prefix() -> None:
    built = build(
        "bert", prefix_length=8, position_mode="shift", config_overrides={"max_position_embeddings": 16}
    )
    with pytest.raises(ConfigError, match="24 positions but bert has 16"):
        built.model.encode(random_ids(1, 16), None, None, ["t"])
    with torch.no_grad():  # 8 tokens still fit: positions 8..15
        assert built.model.encode(random_ids(1, 8), None, None, ["t"]).shape == (1, 8, 32)
