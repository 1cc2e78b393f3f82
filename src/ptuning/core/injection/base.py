"""The interface every injection mechanism offers, and the attention-mask arithmetic they share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import torch

from ptuning.core.prefix import PrefixKV

# The forward keyword that carries a pass's prefix (transformers threads unknown kwargs down to attention).
PREFIX_KWARG = "ptuning_prefix"
# The prefix of the enclosing ``active_prefix`` block, for calls that cannot carry a keyword (``generate``
# validates its kwargs; DeBERTa and MPNet drop unknown kwargs). A ContextVar is per thread and per asyncio
# task, so concurrent passes over one shared backbone never see each other's prefix.
_ACTIVE_PREFIX: ContextVar[PrefixKV | None] = ContextVar("ptuning_active_prefix", default=None)
# While ``capturing_keys_values`` runs: layer index -> the keys and values its attention computed for real
# tokens (``core.prefix_init`` starts a prefix from them).
_CAPTURED: ContextVar[dict[int, tuple[torch.Tensor, torch.Tensor]] | None] = ContextVar(
    "ptuning_captured_keys_values", default=None
)


@contextmanager
def active_prefix(prefix: PrefixKV | None) -> Iterator[None]:
    """Every prefix-aware attention call inside this block uses ``prefix`` unless given one explicitly."""
    token = _ACTIVE_PREFIX.set(prefix)
    try:
        yield
    finally:
        _ACTIVE_PREFIX.reset(token)


def current_prefix() -> PrefixKV | None:
    return _ACTIVE_PREFIX.get()


@contextmanager
def capturing_keys_values() -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Inside this block, every prefix-less attention call records its layer's keys and values
    (B, kv_heads, T, head_dim) into the yielded dict, keyed by the layer's prefix index."""
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    token = _CAPTURED.set(captured)
    try:
        yield captured
    finally:
        _CAPTURED.reset(token)


def capturing() -> bool:
    """Whether a ``capturing_keys_values`` block is running (patched attention computes keys only then)."""
    return _CAPTURED.get() is not None


def record_keys_values(index: int | None, key: torch.Tensor, value: torch.Tensor) -> None:
    """Keep one prefix-less attention call's keys and values while ``capturing_keys_values`` runs.

    Called only on the prefix-less path: torch.compile cannot trace ``ContextVar.get``, and a pass that
    carries a prefix must not break its graph in every attention call."""
    captured = _CAPTURED.get()
    if captured is not None and index is not None:
        captured[index] = (key.detach(), value.detach())


class Injector(Protocol):
    def forward_kwargs(self, prefix: PrefixKV | None) -> dict[str, Any]:
        """Prepare one forward pass with ``prefix`` (None = no prefix); returns extra backbone kwargs."""
        ...


def prefix_columns_mask(
    prefix: PrefixKV, batch: int, query_length: int, device: torch.device
) -> torch.Tensor:
    """Boolean (B, 1, q, P): which prefix slots each row may attend to (all, unless a mixed batch pads)."""
    length = prefix.length
    if prefix.mask is None:
        return torch.ones(batch, 1, query_length, length, dtype=torch.bool, device=device)
    return prefix.mask.to(device=device, dtype=torch.bool)[:, None, None, :].expand(-1, 1, query_length, -1)


def extend_attention_mask(
    mask: torch.Tensor | None,
    prefix: PrefixKV,
    query: torch.Tensor,
    key_length: int,
    causal: bool,
) -> torch.Tensor | None:
    """Prepend P prefix columns to a 4-D attention mask (boolean "may attend" or additive float).

    ``mask`` is what transformers built for the real keys: (B|1, 1|heads, q, k) or None, where None means
    "no padding" (and, for causal modules, "use is_causal"). Prefix columns are visible to every real query,
    so a causal None mask is materialised as transformers' sdpa path reads it: one query sees every key (a
    decoding step), several see keys up to their own index (sdpa's ``is_causal`` aligns to the first key; the
    keys can outnumber the queries only in a static cache's first pass, whose unwritten slots come last).
    """
    batch, _, query_length, _ = query.shape
    if mask is None:
        if not causal and prefix.mask is None:
            return None
        real = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device)
        if causal and query_length > 1:
            real = torch.tril(real)
        real = real[None, None].expand(batch, 1, -1, -1)
        return torch.cat([prefix_columns_mask(prefix, batch, query_length, query.device), real], dim=-1)
    rows = max(mask.shape[0], batch)
    visible = prefix_columns_mask(prefix, rows, mask.shape[2], mask.device)
    if mask.dtype == torch.bool:
        columns = visible.expand(rows, mask.shape[1], -1, -1)
    else:
        blocked = torch.finfo(mask.dtype).min
        columns = torch.zeros(visible.shape, dtype=mask.dtype, device=mask.device).masked_fill(
            ~visible, blocked
        )
        columns = columns.expand(rows, mask.shape[1], -1, -1)
    return torch.cat([columns, mask.expand(rows, -1, -1, -1)], dim=-1)
