"""How one row picks its next token (greedy, or temperature + top-k + top-p with its own seed), and stop strings."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch

from ptuning.core.config import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of decoding.

    ``temperature`` 0 is greedy (argmax, exactly what ``ptuning predict`` does); above 0 the row samples
    from ``softmax(logits / temperature)`` restricted to its ``top_k`` most likely tokens (0: all), then to
    the smallest set of those whose probability reaches ``top_p`` (transformers' order, so a task's
    sampling ``generate_kwargs`` mean here what they mean to ``generate``). ``seed`` makes a sampled answer
    repeatable whatever else shares the batch: every row draws from its own generator. ``stop`` strings end
    the answer where they first appear (the stop string itself is not part of the text).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_k: int = 0  # last: the server builds these positionally

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature < math.inf:  # infinity samples uniformly, ignoring the model
            raise ConfigError(f"temperature must be finite and >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:  # torch.Generator's range
            raise ConfigError(f"seed must be in [-2**63, 2**64), got {self.seed}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"stop strings must be non-empty strings, got {list(self.stop)}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be a whole number >= 0 (0 = no limit), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device: torch.device) -> tuple[torch.Generator | None, int | None]:
        """(the row's own random generator, the seed it used); no generator for greedy rows."""
        if self.greedy:
            return None, None
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        return generator, seed


def choose_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """The next token of one row from its last-position logits (V,)."""
    if params.greedy:
        return int(logits.argmax())
    scores = logits.double()  # a temperature below float32's range (1e-300) would be 0 there: 0 / 0 is NaN
    # the best token's score is 0 before the division: a tiny temperature sends the others to -inf (the answer
    # tends to greedy) instead of every score to +inf, whose softmax is NaN and fails multinomial
    probabilities = ((scores - scores.max()) / params.temperature).softmax(dim=-1)
    if 0 < params.top_k < len(probabilities):  # ties with the k-th token stay, as transformers keeps them
        kth = probabilities.topk(params.top_k).values[-1]
        probabilities = probabilities.masked_fill(probabilities < kth, 0.0)
        probabilities = probabilities / probabilities.sum()  # top_p reads the mass of what is left
    if params.top_p < 1:
        sorted_probabilities, order = probabilities.sort(descending=True)
        before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities  # mass of the better tokens
        sorted_probabilities = sorted_probabilities.masked_fill(before >= params.top_p, 0.0)
        probabilities = torch.zeros_like(probabilities).scatter(0, order, sorted_probabilities)
    return int(torch.multinomial(probabilities, 1, generator=generator))


@dataclass
class StopStrings:
    """Watches a row's growing text for stop strings and says how much of it is safe to show.

    Text that could still turn into a stop string (a tail matching a stop string's beginning) or that
    ends in an unfinished multi-byte character (decoded as U+FFFD) is held back until it is decided.
    """

    stops: tuple[str, ...]
    shown: int = 0  # characters already handed out

    def cut(self, text: str) -> tuple[str, bool]:
        """(the text up to the first stop string, whether one was found)."""
        hits = [index for index in (text.find(stop) for stop in self.stops) if index >= 0]
        return (text[: min(hits)], True) if hits else (text, False)

    def safe_length(self, text: str) -> int:
        """How many leading characters of ``text`` (no stop string in it) can be shown now."""
        keep = len(text)
        while keep > 0 and text[keep - 1] == "\ufffd":
            keep -= 1
        held = 0  # the longest tail of text[:keep] that begins some stop string
        for stop in self.stops:
            for overlap in range(min(len(stop) - 1, keep), held, -1):
                if text[keep - overlap : keep] == stop[:overlap]:
                    held = overlap
                    break
        return keep - held

    def delta(self, text: str, final: bool) -> str:
        """The part of ``text`` not yet shown that is safe to show (everything once ``final``)."""
        end = len(text) if final else max(self.safe_length(text), self.shown)
        piece = text[self.shown : end]
        self.shown = max(self.shown, end)
        return piece
