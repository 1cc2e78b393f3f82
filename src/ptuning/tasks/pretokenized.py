"""Words handed to a tokenizer one by one (``is_split_into_words=True``), spelled as in running text.

Why: a byte-level BPE tokenizer (RoBERTa, GPT-2, Llama 3, SmolLM2) marks a word that follows a space with its
own tokens (``Ġrejects``), and a word encoded on its own, without that space, gets others (``re ject s``):
sub-words the model seldom saw after the sentence start. Unless the tokenizer adds the space itself
(``add_prefix_space=True``, which the reference code passes for RoBERTa and transformers 4 demanded for
pre-split words; transformers 5 no longer checks), tagging would feed a RoBERTa backbone such split words for
every word of every sentence. Gemma's tokenizer does the same with SentencePiece's ``▁`` (its normalizer turns
spaces into ``▁``, and a word without a space gets none), so the decision is made by encoding a probe, not by
the pre-tokenizer's class. WordPiece and Metaspace SentencePiece (Llama 2, T5, ALBERT, DeBERTa-v2, XLNet)
tokenizers mark word starts themselves and get the words as they are.
"""

from __future__ import annotations

import weakref
from typing import Any

PROBE_WORDS = ["a", "b"]
# the decision per tokenizer object: tagging and SRL ask at every featurized chunk
_decisions: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def needs_prefix_space(tokenizer: Any) -> bool:
    """Whether words handed to ``tokenizer`` pre-split lose the word start they have in running text, and get
    it back after a space (``as_in_running_text``). Decided once per tokenizer object."""
    decision = _decisions.get(tokenizer)
    if decision is None:
        decision = _decisions[tokenizer] = _loses_word_starts(tokenizer)
    return decision


def _loses_word_starts(tokenizer: Any) -> bool:
    """True when ``PROBE_WORDS`` pre-split encode unlike the same words in running text, and each after a space
    encode like running text after a space (byte-level BPE without ``add_prefix_space``, Gemma)."""

    def ids(text: str | list[str], split: bool) -> list[int]:
        return tokenizer(text, is_split_into_words=split, add_special_tokens=False)["input_ids"]

    running = " ".join(PROBE_WORDS)
    if ids(PROBE_WORDS, True) == ids(running, False):
        return False
    return ids(as_in_running_text(PROBE_WORDS, True), True) == ids(" " + running, False)


def as_in_running_text(words: list[str], prefix_space: bool) -> list[str]:
    """``words`` as a tokenizer that needs it should see them: each after a space, as ``add_prefix_space``
    would put it (the first word too, as the reference does); word indices (``word_ids``) are unchanged."""
    return [" " + word for word in words] if prefix_space else words
