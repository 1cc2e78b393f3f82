"""The prefix's geometry is read from each family's own config and modules, with no list of model types."""

from __future__ import annotations

import pytest
from core_tiny import family_available, tiny_backbone

from ptuning.core.geometry import PositionKind, PrefixGeometry

# family: (layers, query heads, KV heads, head_dim, decoder, position kind, table, padding_idx, window,
#          softcapping, q/k norm)
EXPECTED = {
    "bert": (2, 4, 4, 8, False, PositionKind.ABSOLUTE, True, None, None, None, False),
    "roberta": (2, 4, 4, 8, False, PositionKind.ABSOLUTE, True, 1, None, None, False),
    "distilbert": (2, 4, 4, 8, False, PositionKind.ABSOLUTE, True, None, None, None, False),
    "albert": (1, 4, 4, 8, False, PositionKind.ABSOLUTE, True, None, None, None, False),  # one shared layer
    "deberta-v2": (2, 4, 4, 8, False, PositionKind.RELATIVE, False, None, None, None, False),
    "mpnet": (2, 4, 4, 8, False, PositionKind.RELATIVE, True, 1, None, None, False),
    "modernbert": (2, 4, 4, 8, False, PositionKind.ROTARY, False, None, 6, None, False),
    "gpt2": (2, 6, 6, 8, True, PositionKind.ABSOLUTE, True, None, None, None, False),
    "opt": (2, 6, 6, 8, True, PositionKind.ABSOLUTE, True, None, None, None, False),
    "gpt_bigcode": (2, 6, 1, 8, True, PositionKind.ABSOLUTE, True, None, None, None, False),  # multi-query
    "llama": (2, 6, 2, 8, True, PositionKind.ROTARY, False, None, None, None, False),
    "qwen3": (2, 6, 2, 8, True, PositionKind.ROTARY, False, None, None, None, True),
    "gemma2": (2, 6, 2, 8, True, PositionKind.ROTARY, False, None, 6, 50.0, False),
    "gpt_neox": (2, 6, 6, 8, True, PositionKind.ROTARY, False, None, None, None, False),
}


@pytest.mark.parametrize("family", list(EXPECTED))
def test_geometry_is_read_from_the_config_and_modules(family: str) -> None:
    if reason := family_available(family):
        pytest.skip(reason)
    backbone = tiny_backbone(family, attn_implementation="eager")
    g = PrefixGeometry.from_model(backbone)
    actual = (
        g.num_layers, g.num_heads, g.num_kv_heads, g.head_dim, g.is_decoder, g.position_kind, g.position_table,
        g.position_padding_idx, g.sliding_window, g.softcapping, g.qk_norm,
    )  # fmt: skip
    assert actual == EXPECTED[family]
    assert g.model_type == backbone.config.model_type and not g.is_encoder_decoder


def test_usable_positions_leave_out_a_padding_offset() -> None:
    assert (
        PrefixGeometry.from_model(tiny_backbone("roberta")).usable_positions == 62
    )  # 64 - (padding_idx + 1)
    assert PrefixGeometry.from_model(tiny_backbone("bert")).usable_positions == 64
    assert PrefixGeometry.from_model(tiny_backbone("llama")).usable_positions is None  # rotary: no table
