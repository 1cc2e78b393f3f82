"""Shift position mode in a mixed batch: each row's real tokens start at its OWN prefix length, so a row
gives what it gives alone, whatever the longest prefix in the batch (the server mixes such rows)."""

from __future__ import annotations

import pytest
import torch
from core_tiny import DECODERS, assert_close, build, pad_id, pad_rows, random_ids, real

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec
from ptuning.core.prefix import PrefixEncoder


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_shift_mode_mixed_prefix_lengths_equal_rows_run_alone(family: str) -> None:
    built = build(family, prefix_length=2, position_mode="shift")
    model = built.model
    kind = HeadKind.CAUSAL_LM if family in DECODERS else HeadKind.CLASSIFICATION
    model.add_task("u", HeadSpec(kind, None if family in DECODERS else ["a", "b"]))
    config = PrefixConfig(prefix_length=7, dropout=0.0, position_mode="shift")
    model.prefixes["u"] = PrefixEncoder(config, model.geometry).eval()
    names = ["t", "u", "t"]
    rows = [random_ids(1, n, seed=n)[0] for n in (5, 4, 6)]
    ids, mask = pad_rows(rows, "left" if family in DECODERS else "right", pad_id(family))

    def run(ids, mask, names):
        with torch.no_grad():
            if built.is_decoder:
                return model(ids, mask, task="t", row_prefixes=names).logits
            return model.encode(ids, mask, None, names)

    mixed = run(ids, mask, names)
    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        alone = run(row[None], torch.ones(1, len(row), dtype=torch.long), [name])
        assert_close(real(mixed[i : i + 1], mask[i : i + 1]), alone[0])
