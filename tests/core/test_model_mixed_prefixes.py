"""One batch, many tasks: rows carrying different prefixes (of different lengths) give the results each row
gets when run alone with its own prefix. Shorter prefixes are padded with masked slots, which must be
invisible."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from core_tiny import DECODERS, Built, assert_close, build, pad_id, pad_rows, random_ids, real

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec
from ptuning.core.prefix import PrefixEncoder


def run(built: Built, ids: torch.Tensor, mask: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """Hidden states (encoders) or logits (decoders) with one prefix name per row."""
    with torch.no_grad():
        if built.is_decoder:
            return built.model(ids, mask, task="t", row_prefixes=names).logits
        return built.model.encode(ids, mask, None, names)


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_mixed_prefix_batch_equals_rows_run_separately(family: str) -> None:
    built = build(family, prefix_length=3)
    model = built.model
    kind = HeadKind.CAUSAL_LM if family in DECODERS else HeadKind.CLASSIFICATION
    model.add_task("u", HeadSpec(kind, None if family in DECODERS else ["a", "b"]))
    # Task u's prefix is twice as long (as if loaded from a checkpoint trained with P=6).
    model.prefixes["u"] = PrefixEncoder(PrefixConfig(prefix_length=6, dropout=0.0), model.geometry).eval()
    names = ["t", "u", "u", "t"]
    side = "left" if family in DECODERS else "right"
    rows = [random_ids(1, n, seed=n)[0] for n in (6, 4, 7, 3)]
    ids, mask = pad_rows(rows, side, pad_id(family))

    mixed = run(built, ids, mask, names)

    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        alone = run(built, row[None], torch.ones(1, len(row), dtype=torch.long), [name])
        assert_close(real(mixed[i : i + 1], mask[i : i + 1]), alone[0])
    # The two prefixes really differ, so the rows above did get their own.
    other = run(built, rows[0][None], torch.ones(1, len(rows[0]), dtype=torch.long), ["u"])
    assert (real(mixed[:1], mask[:1]) - other[0]).abs().max() > 1e-2
