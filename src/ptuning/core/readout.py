"""First-token readout: a [CLS] head reads one position of the last layer, so that layer's feed-forward runs
for that position only.

Why: a classification, regression or multiple-choice head with first-token pooling uses the last layer's
output at position 0 and nothing else. The last layer's attention still runs over every token (position 0
attends to all of them, prefix included), but its feed-forward, the larger part of a layer (8 H² of the 12 H²
projection FLOPs per token), is position-wise: running it on position 0 alone gives that position's output
exactly, and every other position's output was never read. On a 6-layer MiniLM that is ~11 % of the
backbone's matrix products, in training (forward and backward) and at inference alike; the gradients reaching
the prefix and the lower layers are unchanged, since the skipped outputs had no effect on the loss.

The last encoder layer's ``forward`` is patched once per backbone (an instance attribute, removed by
``detach_backbone()`` like the injectors' patches). A pass asks for the readout through the prefix it carries
(``PrefixKV.first_token_only``): that object already travels to every layer of the pass (as the
``ptuning_prefix`` keyword, or scoped to the call for MPNet), so the request needs no state in shared modules
and concurrent passes of different tasks over one backbone stay apart. Without a prefix (fine-tuning, linear
probe) or without the flag, the layer runs as transformers wrote it.

Only layer shapes checked here (and equal to the full forward in tests/core/test_readout.py) take part: the
BERT-shaped layers (``attention`` then a position-wise ``feed_forward_chunk``) of the families below, and MPNet.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ptuning.core.injection.base import PREFIX_KWARG, current_prefix
from ptuning.core.prefix import PrefixKV

READOUT_ATTRIBUTE = "_ptuning_first_token_readout"
# BERT-shaped encoder layers: ``attention(hidden, mask, ...)`` then ``feed_forward_chunk`` per position.
BERT_SHAPED_FAMILIES = frozenset(
    {
        "bert", "roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "xlm-roberta-xl",
        "data2vec-text", "electra", "ernie",
    }
)  # fmt: skip
FIRST_TOKEN_FAMILIES = BERT_SHAPED_FAMILIES | {"mpnet"}


def install_first_token_readout(backbone: nn.Module, model_type: str) -> bool:
    """Patch the last encoder layer of ``backbone`` (once); returns whether this backbone has the readout."""
    layer = _last_layer(backbone, model_type)
    if layer is None:
        return False
    if not getattr(layer, READOUT_ATTRIBUTE, False):
        full = type(layer).forward
        if model_type == "mpnet":  # the prefix is scoped to the call (MPNet drops unknown keywords)
            switching = _switching_forward(full, _mpnet_readout, lambda _: current_prefix())
        else:  # the prefix arrives as a keyword; a ContextVar read would break a compiled graph
            switching = _switching_forward(full, _bert_readout, lambda kwargs: kwargs.get(PREFIX_KWARG))
        layer.forward = types.MethodType(switching, layer)
        setattr(layer, READOUT_ATTRIBUTE, True)
    return True


def _last_layer(backbone: nn.Module, model_type: str) -> nn.Module | None:
    config = backbone.config
    decoder = getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False)
    if model_type not in FIRST_TOKEN_FAMILIES or decoder:
        return None
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    last = layers[-1]
    shaped = model_type == "mpnet" or callable(getattr(last, "feed_forward_chunk", None))
    return last if shaped and hasattr(last, "attention") else None


def _switching_forward(
    full: Callable[..., Any], readout: Callable[..., Any], prefix_of: Callable[[dict], Any]
) -> Callable[..., Any]:
    """The layer's own forward, or ``readout`` when the pass's prefix asks for the first token only."""

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        prefix = prefix_of(kwargs)
        if isinstance(prefix, PrefixKV) and prefix.first_token_only:
            return readout(self, *args, **kwargs)
        return full(self, *args, **kwargs)

    return forward


def _bert_readout(layer: nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """(B, T, H) -> (B, 1, H): attention over every token, the feed-forward for position 0 only."""
    attended, _ = layer.attention(hidden_states, *args, **kwargs)
    return layer.feed_forward_chunk(_first_position(attended))


def _first_position(hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, 1, H), contiguous: a strided view would keep a compiled backbone from folding the
    feed-forward's weights into prepacked GEMMs (Inductor's freezing skips it; tests/core/test_compile.py)."""
    return hidden[:, :1].contiguous()


def _mpnet_readout(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    output_attentions: bool = False,
    **_: Any,
) -> tuple[torch.Tensor, ...]:
    outputs = layer.attention(
        hidden_states, attention_mask, position_bias=position_bias, output_attentions=output_attentions
    )
    first = _first_position(outputs[0])
    return (layer.output(layer.intermediate(first), first), *outputs[1:])
