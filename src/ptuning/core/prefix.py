"""Trainable prefixes: the encoder that produces per-layer key/value prefixes, and what it produces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ptuning.core.config import PrefixConfig, Reparameterization
from ptuning.core.dropout import FastDropout
from ptuning.core.geometry import PrefixGeometry


@dataclass
class PrefixKV:
    """Per-layer key/value prefixes for one forward pass.

    ``layers[l] = (keys, values)``, each (B, kv_heads, P, head_dim). ``mask`` (B, P) marks which prefix
    slots a row may attend to; it is None when every row uses all P slots, and set when rows of a mixed
    batch carry prefixes of different lengths (shorter ones are padded at the end). ``first_token_only``
    asks the backbone for the last layer's first position alone (``core.readout``): the prefix is what
    travels to every layer of a pass, so the request rides with it.
    """

    layers: dict[int, tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor | None = None
    first_token_only: bool = False

    @property
    def length(self) -> int:
        keys, _ = next(iter(self.layers.values()))
        return keys.shape[2]

    @property
    def row_slots(self) -> int | torch.Tensor:
        """The prefix slots each row fills: P when every row uses all of them, else (B, 1) counts from the
        mask. Under position_mode 'shift' a row's tokens are numbered after them (PEFT's numbering)."""
        return self.length if self.mask is None else self.mask.sum(-1, keepdim=True)

    @property
    def batch_size(self) -> int:
        keys, _ = next(iter(self.layers.values()))
        return keys.shape[0]

    def expanded_to(self, batch: int) -> PrefixKV:
        """The same prefix for ``batch`` rows: a shared prefix (1 row) is broadcast; a per-row prefix is
        repeated row by row when generation multiplies rows (beam search, several samples per prompt)."""
        have = self.batch_size
        if have == batch:
            return self
        if have == 1:
            grow = lambda t: t.expand(batch, *t.shape[1:])  # noqa: E731
        elif batch % have == 0:
            grow = lambda t: t.repeat_interleave(batch // have, dim=0)  # noqa: E731
        else:
            raise ValueError(f"a prefix for {have} rows cannot serve a batch of {batch}")
        layers = {i: (grow(k), grow(v)) for i, (k, v) in self.layers.items()}
        return PrefixKV(layers, None if self.mask is None else grow(self.mask), self.first_token_only)


class PrefixEncoder(nn.Module):
    """Produces the deep prefix of one task: P key and P value vectors per KV head for every chosen layer.

    Follows the reference P-tuning v2 ``PrefixEncoder``: a table (or an MLP over a table) whose row p holds
    the flattened keys and values of every layer for prefix position p.
    """

    def __init__(self, config: PrefixConfig, geometry: PrefixGeometry) -> None:
        super().__init__()
        self.config = config.copy()  # its own: a caller changing theirs must not change this prefix
        self.geometry = geometry
        geometry.check_prefix_length(config.prefix_length)
        self.layer_indices = config.resolved_layers(geometry.num_layers)
        self.width = len(self.layer_indices) * 2 * geometry.num_kv_heads * geometry.head_dim
        if config.reparameterization is Reparameterization.MLP:
            self.embedding = nn.Embedding(config.prefix_length, geometry.hidden_size)
            self.mlp: nn.Sequential | None = nn.Sequential(
                nn.Linear(geometry.hidden_size, config.mlp_hidden_size),
                nn.Tanh(),
                nn.Linear(config.mlp_hidden_size, self.width),
            )
        else:
            self.embedding = nn.Embedding(config.prefix_length, self.width)
            self.mlp = None
        nn.init.normal_(self.embedding.weight, std=config.init_std)
        self.dropout = FastDropout(config.dropout)

    @property
    def prefix_length(self) -> int:
        return self.config.prefix_length

    def table(self) -> torch.Tensor:
        """The prefix before dropout, (P, width): the table itself or the MLP applied to it."""
        if self.mlp is None:
            return self.embedding.weight
        return self.mlp(self.embedding.weight)

    def forward(self, batch_size: int) -> PrefixKV:
        """The prefix for ``batch_size`` rows; dropout draws one mask per batch (see ``PromptModel``)."""
        return split_table(
            self.dropout(self.table()).expand(batch_size, -1, -1), self.layer_indices, self.geometry
        )

    @torch.no_grad()
    def collapse(self) -> PrefixEncoder:
        """An embedding-table encoder with the same output as this one (the MLP is only a training aid)."""
        config = PrefixConfig.from_dict({**self.config.to_dict(), "reparameterization": "embedding"})
        collapsed = PrefixEncoder(config, self.geometry)
        collapsed.embedding.weight.copy_(self.table())
        collapsed.dropout = self.dropout
        return collapsed.to(self.embedding.weight.device)


def split_table(rows: torch.Tensor, layer_indices: tuple[int, ...], geometry: PrefixGeometry) -> PrefixKV:
    """(B, P, width) -> per-layer (keys, values) of shape (B, kv_heads, P, head_dim)."""
    batch, length, _ = rows.shape
    # (B, P, 2L, kv_heads, head_dim) -> (2L, B, kv_heads, P, head_dim)
    per_layer = rows.view(batch, length, 2 * len(layer_indices), geometry.num_kv_heads, geometry.head_dim)
    # unbind, not per_layer[i]: each indexed slice back-propagates into a zero tensor the size of the whole
    # table, so a step paid 2L fills and adds of B x P x 2L x kv_heads x head_dim (103 of 678 ms of a MiniLM
    # step, one thread, loaded machine); unbind's backward stacks the slices once
    per_layer = per_layer.permute(2, 0, 3, 1, 4).unbind(0)
    return PrefixKV(
        {layer: (per_layer[2 * i], per_layer[2 * i + 1]) for i, layer in enumerate(layer_indices)}
    )


class PromptEmbedding(nn.Module):
    """Shallow prompt tuning: P trainable input vectors placed before the token embeddings."""

    def __init__(self, config: PrefixConfig, geometry: PrefixGeometry, init_from: torch.Tensor | None = None):
        super().__init__()
        self.config = config.copy()  # its own: a caller changing theirs must not change this prefix
        # Prompts live in the input-embedding space, which is narrower than hidden_size in ELECTRA.
        width = init_from.shape[1] if init_from is not None else geometry.hidden_size
        self.embedding = nn.Embedding(config.prefix_length, width)
        if init_from is not None:
            # Lester et al.: initialise from real vocabulary embeddings so prompts start in-distribution.
            with torch.no_grad():
                self.embedding.weight.copy_(init_from[: config.prefix_length])
        self.dropout = FastDropout(config.dropout)

    @property
    def prefix_length(self) -> int:
        return self.config.prefix_length

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.dropout(self.embedding.weight.expand(batch_size, -1, -1))
