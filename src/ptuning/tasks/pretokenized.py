"""Words handed to a tokenizer one by one (``is_split_into_words=True``), spelled as in running text.

Why: a byte-level BPE tokenizer (RoBERTa, GPT-2, Llama 3, SmolLM2) marks a word that follows a space with its
own tokens (``Ġrejects``), and a word encoded on its own, without that space, gets others (``re ject s``):
sub-words the model seldom saw after the sentence start. Unless the tokenizer adds the space itself
(``add_prefix_space=True``, which the reference code passes for RoBERTa and transformers 4 demanded for
pre-split words; transformers 5 no longer checks), tagging would feed a RoBERTa backbone such split words for
every word of every sentence. Other tokenizers (WordPiece, SentencePiece) mark word starts themselves.
"""

from __future__ import annotations

import json
from typing import Any


def needs_prefix_space(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` pre-tokenizes bytes (ByteLevel) without adding a space before each word."""
    pre_tokenizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if pre_tokenizer is None:
        return False
    # its own JSON only: the whole tokenizer's (vocabulary included) took ~10 ms per featurized chunk
    return _byte_level_without_space(json.loads(pre_tokenizer.__getstate__()))


def _byte_level_without_space(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "ByteLevel":
        return not node.get("add_prefix_space", False)
    return any(_byte_level_without_space(child) for child in node.get("pretokenizers") or [])


def as_in_running_text(words: list[str], prefix_space: bool) -> list[str]:
    """``words`` as a tokenizer that needs it should see them: each after a space, as ``add_prefix_space``
    would put it (the first word too, as the reference does); word indices (``word_ids``) are unchanged."""
    return [" " + word for word in words] if prefix_space else words
