"""Scoping a pass's prefix to the backbone call, for attention that the forward keyword cannot reach.

DeBERTa and MPNet drop unknown forward kwargs, and a few interface families (StableLM, Nemotron) do not pass
them from their decoder layer to attention. For those, the backbone's ``forward`` is wrapped once: it pops
``ptuning_prefix`` and runs the call inside ``active_prefix`` (a ContextVar: per thread and asyncio task, so
concurrent passes over one shared backbone stay apart, and nothing per call is stored in shared modules).

Gradient checkpointing replays layers during backward, outside that call; each checkpointed layer's checkpoint
function is wrapped so that the replay runs under the prefix its forward saw.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from torch import nn

from ptuning.core.injection.base import PREFIX_KWARG, active_prefix, current_prefix

SCOPED_ATTRIBUTE = "_ptuning_scoped_forward"
_REPLAYS_PREFIX = "_ptuning_replays_prefix"


def scope_prefix_to_calls(backbone: nn.Module) -> None:
    """Wrap ``backbone.forward`` (once) so that ``ptuning_prefix=`` holds for exactly that call."""
    if getattr(backbone, SCOPED_ATTRIBUTE, False):
        return
    backbone.forward = types.MethodType(_scoping_forward(type(backbone).forward), backbone)
    setattr(backbone, SCOPED_ATTRIBUTE, True)


def is_scoped(backbone: nn.Module) -> bool:
    return bool(getattr(backbone, SCOPED_ATTRIBUTE, False))


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
