"""split_table hands each layer its keys and values without a full-size gradient per slice."""

from __future__ import annotations

import torch

from ptuning.core.geometry import PrefixGeometry
from ptuning.core.prefix import split_table


def geometry() -> PrefixGeometry:
    return PrefixGeometry("bert", 3, 2, 2, 4, 8, max_positions=64, is_decoder=False)


def test_split_table_gives_each_layer_its_slice_and_the_same_gradient_as_indexing() -> None:
    torch.manual_seed(0)
    rows = torch.randn(2, 5, 2 * 3 * 2 * 4, requires_grad=True)  # (B, P, 2L x kv_heads x head_dim)
    prefix = split_table(rows, (0, 1, 2), geometry())
    reference = rows.detach().view(2, 5, 6, 2, 4).permute(2, 0, 3, 1, 4)
    weights = torch.randn(6, 2, 2, 5, 4)
    loss = sum(
        (prefix.layers[layer][kind] * weights[2 * layer + kind]).sum()
        for layer in range(3)
        for kind in (0, 1)
    )
    loss.backward()
    for layer in range(3):
        keys, values = prefix.layers[layer]
        assert torch.equal(keys, reference[2 * layer]) and torch.equal(values, reference[2 * layer + 1])
        assert keys.shape == (2, 2, 5, 4)
    assert torch.equal(rows.grad, weights.permute(1, 3, 0, 2, 4).reshape(2, 5, 48))


def test_split_table_backward_does_not_materialize_a_full_table_per_slice() -> None:
    rows = torch.randn(2, 5, 48, requires_grad=True)
    keys, _ = split_table(rows, (0, 1, 2), geometry()).layers[0]
    assert keys.grad_fn.name() == "UnbindBackward0"  # one stack in backward, not 2L zero-filled tables
