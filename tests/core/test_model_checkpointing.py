"""Gradient checkpointing changes memory, not math: the replayed layers see the same prefix.

The layers' forward is recomputed during backward; a prefix that lived only for the first forward (a
cache dropped inside checkpointed layers, a cleared slot) would vanish from the replay and change the
gradients. Train mode with every dropout at 0 keeps the two runs comparable.
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import DECODERS, Built, assert_close, build, first_attention, random_ids


def loss_and_prefix_gradients(
    built: Built, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """One training forward/backward: the loss, each prefix parameter's gradient, layer-0 attention calls."""
    model = built.model.train()
    calls: list[int] = []
    hook = first_attention(built.family, model.backbone).register_forward_hook(lambda *_: calls.append(1))
    try:
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
    finally:
        hook.remove()
    return loss.detach(), {n: p.grad for n, p in model.prefixes.named_parameters()}, len(calls)


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_gradient_checkpointing_gives_same_loss_and_prefix_gradients(family: str) -> None:
    plain, checkpointed = build(family), build(family)
    checkpointed.model.enable_gradient_checkpointing()
    ids = random_ids(2, 6)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    labels = ids.masked_fill(mask == 0, -100) if family in DECODERS else torch.tensor([1, 0])

    loss, gradients, calls = loss_and_prefix_gradients(plain, ids, mask, labels)
    loss_ckpt, gradients_ckpt, calls_ckpt = loss_and_prefix_gradients(checkpointed, ids, mask, labels)

    assert (calls, calls_ckpt) == (1, 2)  # the checkpointed layer really was replayed in backward
    assert_close(loss_ckpt, loss)
    assert gradients and gradients.keys() == gradients_ckpt.keys()
    for name, gradient in gradients.items():
        assert gradient.abs().max() > 0
        assert_close(gradients_ckpt[name], gradient)
