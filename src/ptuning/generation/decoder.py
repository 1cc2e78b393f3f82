"""Continuous batching: sequences with different prefixes decode together, joining and leaving between steps.

One ``step`` feeds every running row its last token (one backbone pass, each row with its own prefix),
then prefills the sequences that asked to join (another pass, over their prompts only) and appends them
to the batch. Rows that finish (EOS, length, stop string, time, cancelled) leave after the step.

The key/value cache is one batched ``DynamicCache`` whose rows can be appended and dropped: a row's
columns are ``[left padding][its prefix][its prompt][its generated tokens]``; an attention mask over the
columns hides the padding, and position ids are counted per row, so real tokens keep positions 0..n-1
(``position_mode="keep"``; under "shift", PEFT's numbering, P..P+n-1 after the row's own P prefix slots)
whatever padding or prefix sits in front of them. That is what ``PromptModel.generate`` computes for each
prompt alone, so greedy answers are the same token for token.

Where the prefix covers every layer, it is written into the cache once when the row joins ("seeded"):
the attention then sees exactly the keys/values it sees when the prefix is concatenated at every step,
without the concatenation. A prefix on a subset of layers cannot share the cache's columns with the
other layers, so it travels as the ``ptuning_prefix`` forward keyword at every step instead. Rows decode
together only when their prefixes cover the same layers (so they are seeded alike and share one per-step
prefix): ``admissible`` says which waiting sequences may join now; ``step`` refuses the others, and ``run``
lets each group join once the rows before it have finished.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from ptuning.core.config import ConfigError, Method, PositionMode
from ptuning.core.model import UnknownNameError
from ptuning.core.prefix import PrefixKV
from ptuning.generation.sampling import SamplingParams, StopStrings, choose_token

FINISH_REASONS = ("eos", "length", "stop", "time", "cancelled")
_ids = itertools.count(1)


@dataclass(eq=False)
class Sequence:
    """One request's prompt, prefix and settings, and what has been generated for it so far.

    ``prefix`` names a prefix of the model (None: the backbone alone). ``deadline`` is a
    ``time.monotonic()`` value after which the sequence stops with finish reason ``time``.
    """

    prompt: list[int]
    prefix: str | None
    params: SamplingParams = field(default_factory=SamplingParams)
    deadline: float | None = None
    id: int = field(default_factory=lambda: next(_ids))
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # the answer so far (cut at a stop string), before stripping
    finish_reason: str | None = None
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)
    stops: StopStrings | None = field(default=None, repr=False)
    # the ids that end this sequence (a task's own stop ids); None: the decoder's
    eos_ids: frozenset[int] | None = None

    def __post_init__(self) -> None:
        # Checked here, not in a step: a bad sequence must not fail the others decoding with it.
        if not self.prompt:
            raise ConfigError("a prompt needs at least one token")

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def answer(self) -> str:
        """The finished text as ``ptuning predict`` writes it (cut at EOS, stripped)."""
        return self.text.strip()


@dataclass
class StepEvent:
    """What one step did for one sequence: its new token (None when it only finished) and visible text."""

    sequence: Sequence
    token: int | None
    delta: str
    finished: bool


class ContinuousDecoder:
    """Decodes many sequences in one batch over ``model``'s backbone; not thread-safe (one caller).

    ``model`` is a ``PromptModel`` in eval mode (prefix dropout would otherwise apply when rows join).

    ``eos_token_id`` ends a sequence (not part of its text). ``seed_prefix`` writes prefixes into the cache
    once (see the module docstring); None decides by layer coverage, False forces the per-step keyword.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        eos_token_id: int | Iterable[int] | None = None,
        seed_prefix: bool | None = None,
    ) -> None:
        if model.method is Method.PROMPT_TUNING:
            raise ConfigError("continuous batching serves deep prefixes; prompt-tuning is not supported")
        self.model = model
        self.backbone = model.backbone
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        if eos is None:
            raise ConfigError(
                "the tokenizer has no EOS token; generation could not tell where an answer ends"
            )
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos)
        self.seed_prefix = seed_prefix
        parameters = inspect.signature(self.backbone.forward).parameters
        # transformers 5.24 renamed past_key_values to cache; both spellings reach the same code.
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self._keeps_logits = "logits_to_keep" in parameters
        self.rows: list[Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, columns) 1 = a real key (prefix slot or token)
        self._positions: torch.Tensor | None = None  # (B,) position id of each row's next token
        self._next: torch.Tensor | None = None  # (B,) the token each row feeds next
        self._prefix: PrefixKV | None = None  # per-step prefix of the rows (unseeded mode only)
        self._layers: tuple[int, ...] | None = None  # the layers the running rows' prefixes cover

    # ------------------------------------------------------------------------------------------ public
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def admissible(self, waiting: Iterable[Sequence]) -> list[Sequence]:
        """The waiting sequences that may join the running rows now: those whose prefix covers the layers the
        running rows' prefixes cover (with no rows running, those of the first waiting sequence). A row of other
        layers would be seeded differently, or need per-layer slots the batch's one prefix cannot hold."""
        waiting = list(waiting)
        if not waiting:
            return []
        layers = self._layers if self.rows else self._layers_of(waiting[0])
        return [sequence for sequence in waiting if self._layers_of(sequence) == layers]

    def step(self, admit: Iterable[Sequence] = (), cancel: Iterable[int] = ()) -> list[StepEvent]:
        """Cancel, decode one token for every running row, admit new sequences (their first token)."""
        events: list[StepEvent] = []
        cancelled = set(cancel)
        admit = list(admit)
        joinable = [s for s in admit if s.id not in cancelled]
        # newcomers are checked before any row advances: refused after, they would cost the others a token
        for sequence in joinable:
            self._check_prefix_name(sequence.prefix)
            self._check_room(sequence)
        if len(self.admissible(joinable)) != len(joinable):
            raise ConfigError(
                "sequences whose prefixes cover different layers cannot decode together; admit those "
                "admissible() returns, the others once the running rows have finished"
            )
        for sequence in self.rows:
            if sequence.id in cancelled:
                sequence.finish_reason = "cancelled"
                events.append(StepEvent(sequence, None, "", True))
        self._drop_finished()
        with torch.no_grad():
            if self.rows:
                logits = self._decode()
                events += self._advance(self.rows, logits)
            joining = [s for s in admit if s.id not in cancelled]
            for sequence in admit:
                if sequence.id in cancelled:
                    sequence.finish_reason = "cancelled"
                    events.append(StepEvent(sequence, None, "", True))
            if joining:
                logits, state = self._prefill(joining)
                self._merge(joining, *state)
                events += self._advance(joining, logits)
        self._drop_finished()
        return events

    def run(self, sequences: Iterable[Sequence]) -> list[Sequence]:
        """Decode ``sequences`` to the end, all joining at once (tests, batch use)."""
        sequences = list(sequences)
        waiting = list(sequences)
        while waiting or self.rows:
            joining = self.admissible(waiting)
            waiting = [s for s in waiting if s not in joining]
            self.step(admit=joining)
        return sequences

    # ------------------------------------------------------------------------------------------ passes
    def _decode(self) -> torch.Tensor:
        """One token per running row -> last-position logits (B, V)."""
        assert self._mask is not None and self._positions is not None and self._next is not None
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], dim=1)
        logits = self._forward(
            self._next[:, None], self._mask, self._positions[:, None], self._cache, self._prefix
        )
        self._positions = self._positions + 1
        return logits

    def _prefill(self, joining: list[Sequence]) -> tuple[torch.Tensor, tuple]:
        """Run the joining prompts (left-padded together) on a cache of their own; logits (n, V) and state."""
        for sequence in joining:
            sequence.generator, sequence.seed = sequence.params.generator(self.device)
            sequence.stops = StopStrings(tuple(sequence.params.stop))
        count, longest = len(joining), max(len(s.prompt) for s in joining)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        ids = torch.full((count, longest), pad, dtype=torch.long)
        mask = torch.zeros((count, longest), dtype=torch.long)
        for row, sequence in enumerate(joining):
            ids[row, longest - len(sequence.prompt) :] = torch.tensor(sequence.prompt)
            mask[row, longest - len(sequence.prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prefix = self._prefix_for([s.prefix for s in joining])
        if prefix is not None and self.model.prefix_config.position_mode is PositionMode.SHIFT:
            # PEFT's numbering, as PromptModel.generate continues it: each row's tokens after its own prefix
            positions = positions + prefix.row_slots
        cache = DynamicCache()
        if prefix is not None and self._seeds(prefix):
            slots = prefix.mask if prefix.mask is not None else torch.ones(count, prefix.length)
            dtype = next(self.backbone.parameters()).dtype
            for layer in range(self.model.geometry.num_layers):  # (n, kv_heads, P, head_dim) per layer
                keys, values = prefix.layers[layer]
                cache.update(keys.to(dtype).contiguous(), values.to(dtype).contiguous(), layer)
            mask = torch.cat([slots.to(device=self.device, dtype=torch.long), mask], dim=1)
            step_prefix = None
        else:
            step_prefix = prefix
        logits = self._forward(ids, mask, positions, cache, step_prefix)
        return logits, (cache, mask, positions[:, -1] + 1, step_prefix)

    def _forward(self, ids, mask, positions, cache, prefix: PrefixKV | None) -> torch.Tensor:
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            self._cache_kwarg: cache,
            "use_cache": True,
        }
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        if prefix is not None:
            kwargs.update(self.model.injector.forward_kwargs(prefix))
        return self.backbone(**kwargs).logits[:, -1]

    # ------------------------------------------------------------------------------------------ prefixes
    def _prefix_for(self, names: list[str | None]) -> PrefixKV | None:
        """The joining rows' prefixes (one row each); None when the model has no per-layer prefix."""
        for name in names:
            self._check_prefix_name(name)
        if not self.model.method.is_deep:
            return None
        prefix = self.model.prefix_kv(names)
        return prefix.expanded_to(len(names))

    def _check_prefix_name(self, name: str | None) -> None:
        """Refuse a sequence whose prefix name this model cannot decode with."""
        if not self.model.method.is_deep:
            if name is not None:
                raise ConfigError(f"method {self.model.method} has no prefixes; pass prefix=None")
        elif name is None:
            raise ConfigError("every sequence needs a prefix name with a deep prefix method")
        elif name not in self.model.prefixes:
            raise UnknownNameError(f"unknown prefix {name!r}; this model has {list(self.model.prefixes)}")

    def _check_room(self, sequence: Sequence) -> None:
        """Refuse a sequence that would number positions past a learned table (an IndexError mid-step)."""
        positions = self.model.geometry.usable_positions
        if positions is None:
            return
        shifted = self.model.prefix_config.position_mode is PositionMode.SHIFT
        layers = self._layers_of(sequence)  # None: no prefix, or a name _prefix_for refuses
        slots = self.model.prefixes[sequence.prefix].prefix_length if shifted and layers is not None else 0
        if positions_needed(slots, len(sequence.prompt), sequence.params.max_new_tokens) > positions:
            raise ConfigError(
                f"the prompt ({len(sequence.prompt)} tokens{f' + {slots} prefix positions' if slots else ''}) + "
                f"max_new_tokens ({sequence.params.max_new_tokens}) - 1 exceed the model's {positions} positions"
            )

    def _layers_of(self, sequence: Sequence) -> tuple[int, ...] | None:
        """The layers the sequence's prefix covers (None without one, or for a name ``_prefix_for`` refuses)."""
        if not self.model.method.is_deep or sequence.prefix not in self.model.prefixes:
            return None
        return self.model.prefixes[sequence.prefix].layer_indices

    def _seeds(self, prefix: PrefixKV) -> bool:
        """Whether the prefix goes into the KV cache once, as its first columns, instead of beside every step.
        Only where every layer has one and no layer slides a window: a sliding layer counts its window in
        cache columns, so prefix slots there would fall out of it once prompt + padding + tokens outgrow it,
        where the model itself keeps the whole prefix beside every window (docs/ARCHITECTURES.md)."""
        covers_all = set(prefix.layers) == set(range(self.model.geometry.num_layers))
        sliding = self.model.geometry.sliding_window is not None
        if self.seed_prefix and not covers_all:
            raise ConfigError("a prefix can be seeded into the cache only when it covers every layer")
        if self.seed_prefix and sliding:
            raise ConfigError("a prefix cannot be seeded into the cache of a sliding-window model")
        return covers_all and not sliding if self.seed_prefix is None else self.seed_prefix

    # ------------------------------------------------------------------------------------------ rows
    def _merge(self, joining: list[Sequence], cache, mask, positions, prefix: PrefixKV | None) -> None:
        """Append the prefilled rows to the batch, left-padding whichever cache is shorter."""
        tokens = torch.zeros(len(joining), dtype=torch.long, device=self.device)  # filled by _advance
        if not self.rows:
            self.rows, self._cache, self._mask, self._positions, self._next = (
                list(joining),
                cache,
                mask,
                positions,
                tokens,
            )
            self._prefix = prefix
            self._layers = self._layers_of(joining[0])
            return
        columns = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, columns, 2), _left_pad(new.keys, columns, 2)])
            old.values = torch.cat([_left_pad(old.values, columns, 2), _left_pad(new.values, columns, 2)])
        self._mask = torch.cat([_left_pad(self._mask, columns, 1), _left_pad(mask, columns, 1)])
        self._positions = torch.cat([self._positions, positions])
        self._next = torch.cat([self._next, tokens])
        self._prefix = _cat_prefixes(self._prefix, prefix)
        self.rows += joining

    def _drop_finished(self) -> None:
        keep = [row for row, sequence in enumerate(self.rows) if not sequence.finished]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self._cache, self._mask, self._positions, self._next, self._prefix = (
                [],
                None,
                None,
                None,
                None,
                None,
            )
            return
        index = torch.tensor(keep, device=self.device)
        mask = self._mask[index]
        first = int((mask.sum(0) > 0).nonzero()[0])  # columns left of this are padding in every row
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]
        self._mask = mask[:, first:]
        self._positions, self._next = self._positions[index], self._next[index]
        if self._prefix is not None:
            layers = {i: (k[index], v[index]) for i, (k, v) in self._prefix.layers.items()}
            self._prefix = PrefixKV(layers, None if self._prefix.mask is None else self._prefix.mask[index])
        self.rows = [self.rows[row] for row in keep]

    def _advance(self, sequences: list[Sequence], logits: torch.Tensor) -> list[StepEvent]:
        """Choose each sequence's next token and settle whether it is done."""
        events = []
        now = time.monotonic()
        offset = len(self.rows) - len(sequences)  # the sequences are the last rows of the batch
        for row, sequence in enumerate(sequences):
            token = choose_token(logits[row], sequence.params, sequence.generator)
            self._next[offset + row] = token
            if token in (self.eos_ids if sequence.eos_ids is None else sequence.eos_ids):
                sequence.finish_reason = "eos"
            else:
                sequence.tokens.append(token)
                text = self.tokenizer.decode(sequence.tokens, skip_special_tokens=True)
                sequence.text, stopped = sequence.stops.cut(text)
                if stopped:
                    sequence.finish_reason = "stop"
                elif len(sequence.tokens) >= sequence.params.max_new_tokens:
                    sequence.finish_reason = "length"
                elif sequence.deadline is not None and now >= sequence.deadline:
                    sequence.finish_reason = "time"
            delta = sequence.stops.delta(sequence.text, sequence.finished)
            events.append(StepEvent(sequence, token, delta, sequence.finished))
        return events


def positions_needed(slots: int, prompt_tokens: int, max_new_tokens: int) -> int:
    """Position ids a causal LM's decoding numbers: the prefix's slots (shift mode, prompt tuning), the prompt,
    and every new token but the last, which is never fed back."""
    return slots + prompt_tokens + max_new_tokens - 1


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros in front of ``tensor`` along ``dim`` (2 = cache columns, 1 = mask columns) up to ``length``."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _cat_prefixes(first: PrefixKV | None, second: PrefixKV | None) -> PrefixKV | None:
    """Rows of two per-step prefixes in one, slots right-padded to the longer prefix and masked."""
    if first is None or second is None:
        return None
    length = max(first.length, second.length)

    def slots(prefix: PrefixKV) -> torch.Tensor:
        mask = prefix.mask
        # on the keys' device: the other prefix's mask is there (a GPU's, when serving on one)
        if mask is None:
            keys, _ = next(iter(prefix.layers.values()))
            mask = torch.ones(prefix.batch_size, prefix.length, dtype=torch.bool, device=keys.device)
        return nn.functional.pad(mask.bool(), (0, length - prefix.length))

    def grow(tensor: torch.Tensor) -> torch.Tensor:  # (B, kv_heads, P, head_dim) -> P = length
        return nn.functional.pad(tensor, (0, 0, 0, length - tensor.shape[2]))

    layers = {
        i: (torch.cat([grow(k), grow(second.layers[i][0])]), torch.cat([grow(v), grow(second.layers[i][1])]))
        for i, (k, v) in first.layers.items()
    }
    mask = torch.cat([slots(first), slots(second)])
    return PrefixKV(layers, None if bool(mask.all()) else mask)
