"""Shared machinery for families whose attention transformers gives no prefix path (DeBERTa, MPNet).

Each such family patches the ``forward`` of its attention modules (one file per family holds the quirks).
Installation happens once per backbone and stores no per-call state in shared modules: the prefix of a pass
travels as the ``ptuning_prefix`` keyword into the backbone's forward, which scopes it to that call with
``active_prefix`` (a ContextVar: each thread / asyncio task sees only its own). So a second ``PromptModel``
(or a checkpoint loaded by a server) on the same backbone, or a concurrent request, never changes the
prefix that a running forward uses.

Gradient checkpointing replays layers during backward, outside the call's context; the checkpoint function
of each checkpointed layer is wrapped so that the replay runs under the prefix its forward saw.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from torch import nn

from ptuning.core.injection.base import PREFIX_KWARG, active_prefix, current_prefix
from ptuning.core.prefix import PrefixKV

LAYER_INDEX_ATTRIBUTE = "ptuning_layer_index"
_PATCHED = "_ptuning_patched_forward"
_REPLAYS_PREFIX = "_ptuning_replays_prefix"


class PatchedAttentionInjector:
    """Base class: subclasses name the attention class and give the prefix-aware forward."""

    attention_class: type[nn.Module]

    @staticmethod
    def prefixed_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def __init__(self, backbone: nn.Module) -> None:
        attentions = [m for m in backbone.modules() if isinstance(m, self.attention_class)]
        for index, attention in enumerate(attentions):
            if getattr(attention, _PATCHED, False):
                continue
            setattr(attention, LAYER_INDEX_ATTRIBUTE, index)
            attention.forward = types.MethodType(type(self).prefixed_forward, attention)
            setattr(attention, _PATCHED, True)
        if not getattr(backbone, _PATCHED, False):
            backbone.forward = types.MethodType(_scoping_forward(type(backbone).forward), backbone)
            setattr(backbone, _PATCHED, True)
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


def _scoping_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """The backbone's forward, with ``ptuning_prefix=`` scoped to this call."""

    @functools.wraps(forward)
    def scoped(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if PREFIX_KWARG not in kwargs:
            return forward(self, *args, **kwargs)
        prefix = kwargs.pop(PREFIX_KWARG)
        _replay_checkpoints_with_prefix(self)
        with active_prefix(prefix):
            return forward(self, *args, **kwargs)

    return scoped


def _replay_checkpoints_with_prefix(backbone: nn.Module) -> None:
    """Wrap each checkpointed layer's checkpoint function (set by ``gradient_checkpointing_enable``, so
    checked on every call) so its backward replay runs under the prefix of the forward it replays."""
    for module in backbone.modules():
        function = getattr(module, "_gradient_checkpointing_func", None)
        active = getattr(module, "gradient_checkpointing", False) and function is not None
        if active and not getattr(function, _REPLAYS_PREFIX, False):
            module._gradient_checkpointing_func = _replaying(function)


def _replaying(checkpoint: Callable[..., Any]) -> Callable[..., Any]:
    def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        prefix = current_prefix()

        def under_prefix(*inner_args: Any, **inner_kwargs: Any) -> Any:
            with active_prefix(prefix):
                return function(*inner_args, **inner_kwargs)

        return checkpoint(under_prefix, *args, **kwargs)

    setattr(run, _REPLAYS_PREFIX, True)
    return run
