"""Shared machinery for families whose attention transformers gives no prefix path (DeBERTa, MPNet).

Each such family patches the ``forward`` of its attention modules (one file per family holds the quirks).
Installation happens once per backbone and stores no per-call state in shared modules: the prefix of a pass
travels as the ``ptuning_prefix`` keyword into the backbone's forward, which scopes it to that call with
``active_prefix`` (a ContextVar: each thread / asyncio task sees only its own). So a second ``PromptModel``
(or a checkpoint loaded by a server) on the same backbone, or a concurrent request, never changes the
prefix that a running forward uses.

Gradient checkpointing replays layers during backward, outside the call's context; ``scoping.py`` wraps the
checkpoint function of each checkpointed layer so that the replay runs under the prefix its forward saw.
"""

from __future__ import annotations

import types
from typing import Any

from torch import nn

from ptuning.core.injection.base import PREFIX_KWARG, current_prefix
from ptuning.core.injection.scoping import scope_prefix_to_calls
from ptuning.core.prefix import PrefixKV

LAYER_INDEX_ATTRIBUTE = "ptuning_layer_index"
PATCHED_ATTRIBUTE = "_ptuning_patched_forward"


class PatchedAttentionInjector:
    """Base class: subclasses name the attention class and give the prefix-aware forward."""

    attention_class: type[nn.Module]

    @staticmethod
    def prefixed_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def __init__(self, backbone: nn.Module) -> None:
        attentions = [m for m in backbone.modules() if isinstance(m, self.attention_class)]
        for index, attention in enumerate(attentions):
            if getattr(attention, PATCHED_ATTRIBUTE, False):
                continue
            setattr(attention, LAYER_INDEX_ATTRIBUTE, index)
            attention.forward = types.MethodType(type(self).prefixed_forward, attention)
            setattr(attention, PATCHED_ATTRIBUTE, True)
        scope_prefix_to_calls(backbone)
        self.attentions = attentions

    def forward_kwargs(self, prefix: PrefixKV | None) -> dict[str, Any]:
        return {PREFIX_KWARG: prefix} if prefix is not None else {}


def layer_prefix(module: nn.Module, batch: int) -> tuple[PrefixKV, int] | None:
    """The prefix of the current call for ``module``'s layer, broadcast to ``batch`` rows, or None."""
    prefix = current_prefix()
    index = getattr(module, LAYER_INDEX_ATTRIBUTE)
    if prefix is None or index not in prefix.layers:
        return None
    return prefix.expanded_to(batch), index
