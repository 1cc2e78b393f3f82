"""Dropout with a cheaper CPU mask: four 16-bit random words from every 64-bit draw.

Why: on CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element from a sequential
generator. In a MiniLM training step the backbone's dropout masks took 34 of 247 ms, more than attention
(docs/BENCHMARKS.md, profile). Drawing 64 random bits and using them as four 16-bit words cuts the draws by
four. The mask is the same inverted dropout: an element is dropped with probability ``p`` rounded to a
multiple of 1/65536 (0.1 becomes 0.10000610), and kept elements are scaled so the expectation is exact.
On other devices the random draws are cheap, so the module is plain ``nn.Dropout`` there.
"""

from __future__ import annotations

import torch
from torch import nn

_WORDS = 1 << 16  # values a 16-bit word can take


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A mask shaped like ``like`` (its dtype): 0 where dropped, 1/(1-p') where kept."""
    dropped_words = round(p * _WORDS)
    if dropped_words >= _WORDS:
        return torch.zeros_like(like)
    count = like.numel()
    draws = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=like.device)
    words = draws.view(torch.int16)[:count].view(like.shape)  # uniform on [-32768, 32767]
    keep = words >= dropped_words - _WORDS // 2
    return keep.to(like.dtype) * (_WORDS / (_WORDS - dropped_words))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose training-time CPU mask comes from ``keep_mask``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or input.device.type != "cpu":
            return super().forward(input)
        if self.inplace:
            return input.mul_(keep_mask(input, self.p))
        return input * keep_mask(input, self.p)


def swap_in_fast_dropout(module: nn.Module) -> list[tuple[nn.Module, str, nn.Dropout]]:
    """Replace every plain ``nn.Dropout`` inside ``module`` by a ``FastDropout`` of the same rate.

    Only dropout *modules* are replaced; dropout a model applies through a rate passed to its attention
    function is left to that function. Returns ``(parent, attribute, original)`` for each replacement, so
    the caller can put the originals back (``core.attachment``).
    """
    replaced = []
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                # in the mode of the module it replaces: an eval-mode backbone must not start dropping
                setattr(parent, name, FastDropout(child.p, inplace=child.inplace).train(child.training))
                replaced.append((parent, name, child))
    return replaced


def use_fast_dropout(module: nn.Module) -> int:
    """``swap_in_fast_dropout`` for callers that will not undo it; returns how many modules were replaced."""
    return len(swap_in_fast_dropout(module))


# Attention dropout some families keep as a float rate on the attention module (Llama's attention_dropout,
# T5's dropout) rather than as an nn.Dropout module.
_RATE_ATTRIBUTES = ("attention_dropout", "attn_dropout", "dropout", "dropout_rate")


def set_dropout(module: nn.Module, rate: float) -> int:
    """Every dropout inside ``module`` at ``rate``: its ``nn.Dropout`` modules and the float attention-dropout
    rates of the families that keep one. Why: a frozen backbone's own dropout (BERT's 0.1 on hidden states
    and attention probabilities) is part of the P-tuning v2 recipe but costs its masks' time in every
    training step; ``--backbone-dropout`` lets a run choose. Returns how many rates were set."""
    count = 0
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.p, count = rate, count + 1
        for name in _RATE_ATTRIBUTES:
            if isinstance(getattr(child, name, None), float):
                setattr(child, name, rate)
                count += 1
    return count
