"""Prefix dropout: one mask per prefix per batch (shared by the rows that use the prefix), none in eval."""

from __future__ import annotations

import torch
from core_tiny import build

from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec


def test_rows_of_one_prefix_share_a_mask_that_drops_and_rescales() -> None:
    model = build("bert", prefix_length=4, init_std=1.0).model.train()
    model.prefixes["t"].dropout.p = 0.5
    torch.manual_seed(0)
    keys, _ = model.prefix_kv(["t", "t", "t"]).layers[0]  # (B, kv_heads, P, head_dim)
    table_keys, _ = model.prefixes["t"].eval()(1).layers[0]
    assert torch.equal(keys[0], keys[1]) and torch.equal(keys[0], keys[2])
    dropped = keys[0] == 0
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(keys[0][~dropped], 2 * table_keys[0][~dropped])


def test_each_prefix_of_a_mixed_batch_draws_its_own_mask() -> None:
    model = build("bert", prefix_length=4, init_std=1.0).model
    model.add_task("u", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    model.train()
    for name in ("t", "u"):
        model.prefixes[name].dropout.p = 0.5
    torch.manual_seed(0)
    keys, _ = model.prefix_kv(["t", "u", "t"]).layers[0]
    assert torch.equal(keys[0], keys[2])
    assert not torch.equal(keys[0] == 0, keys[1] == 0)


def test_eval_mode_applies_no_dropout() -> None:
    model = build("bert", prefix_length=4, init_std=1.0).model.eval()
    model.prefixes["t"].dropout.p = 0.5
    keys, _ = model.prefix_kv(["t", "t"]).layers[0]
    table_keys, _ = model.prefixes["t"](1).layers[0]
    assert torch.equal(keys[0], table_keys[0]) and not bool((keys == 0).any())
