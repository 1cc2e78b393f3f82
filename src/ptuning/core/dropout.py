"""Dropout with a cheaper CPU mask: four 16-bit random words from every 64-bit draw.

Why: on CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element from a sequential
generator. In a MiniLM training step the backbone's dropout masks took 34 of 247 ms, more than attention
(docs/BENCHMARKS.md, profile). Drawing 64 random bits and using them as four 16-bit words cuts the draws by
four. The mask is the same inverted dropout: an element is dropped with probability ``p`` rounded to a
multiple of 1/65536 (0.1 becomes 0.10000610), and kept elements are scaled so the expectation is exact.
On other devices the random draws are cheap, so the module is plain ``nn.Dropout`` there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError
from torch import nn
from transformers import PretrainedConfig

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


# A dropout rate a family keeps as a number rather than an nn.Dropout module: Llama's attention_dropout,
# BART's activation_dropout, StarCoder2's residual_dropout, GPT-BigCode's attn_pdrop, MPT's attn_dropout_p,
# DeBERTa's hidden_dropout_prob (read by its pooler at forward time).
_RATE_NAME = re.compile(r"(dropout|pdrop)(_p|_prob|_rate)?$")


def _is_rate(name: str, value: object) -> bool:
    """A number under a dropout name; not ESM's boolean ``token_dropout``, not ``classifier_dropout=None``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(_RATE_NAME.search(name))


def _set_rates(holder: object, rate: float) -> int:
    """Every dropout rate among ``holder``'s own attributes at ``rate``; returns how many."""
    count = 0
    for name in [name for name, value in vars(holder).items() if _is_rate(name, value)]:
        try:
            setattr(holder, name, rate)
        except StrictDataclassFieldValidationError:  # a config field typed int: MPT's attn_pdrop, which
            continue  # only construction reads (its modules' copies were set above)
        count += 1
    return count


def _configs(config: PretrainedConfig) -> Iterator[PretrainedConfig]:
    """``config`` and the sub-configs it holds (text_config, MPT's attn_config, an encoder-decoder's halves)."""
    yield config
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            yield from _configs(value)


def set_dropout(module: nn.Module, rate: float) -> int:
    """Every dropout inside ``module`` at ``rate``: its ``nn.Dropout`` modules, the numeric rates its modules
    keep, and the rates of the configs they hold, since some forwards read those (Persimmon's and Falcon's
    attention). Why: a frozen backbone's own dropout (BERT's 0.1 on hidden states and attention
    probabilities) is part of the P-tuning v2 recipe but costs its masks' time in every training step;
    ``--backbone-dropout`` lets a run choose. LayerDrop rates (``layerdrop``) are not dropout rates and are
    left alone. Returns how many rates were set."""
    count = 0
    configs: dict[int, PretrainedConfig] = {}
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.p, count = rate, count + 1
        count += _set_rates(child, rate)
        if isinstance(config := getattr(child, "config", None), PretrainedConfig):
            configs.update((id(sub), sub) for sub in _configs(config))
    return count + sum(_set_rates(config, rate) for config in configs.values())
