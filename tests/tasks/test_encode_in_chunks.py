"""Tokenizing a split a chunk of inputs at a time: the same ids as one call, with bounded tokenizer calls.

One tokenizer call over a whole split held every input's records (offsets, words...) at once: +359 MB for
64,000 sentences against +55 MB in chunks of 1,000 (2026-12 scale audit, ``ptuning predict`` on 256,000 lines
peaked at 2,244 MB, 1,312 MB chunked). The chunk size is patched small here so that > 2 chunks stay fast.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tiny_models import minilm_tokenizer_dir
from transformers import AutoTokenizer

from ptuning.tasks import classification, generative
from ptuning.tasks.classification import encode_pairs
from ptuning.tasks.generative import CausalLmTask

WORDS = ["the", "film", "great", "dull", "unbelievably", "antidisestablishment", "é", "中文", ".", "ok's"]


class CountingTokenizer:
    """``tokenizer`` that records how many texts each call was given."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.sizes = tokenizer, []

    def __call__(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.sizes.append(len(texts))
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def texts(count: int, seed: int) -> list[str]:
    """Short and long texts, so that some inputs of every chunk are cut and others are not."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.choice([1, 3, 8, 40]))) for _ in range(count)]


def test_pairs_in_chunks_encode_and_flag_as_one_call(monkeypatch) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    for pairs in (
        list(zip(texts(23, 0), texts(23, 1), strict=True)),
        [(text, None) for text in texts(23, 2)],
    ):
        monkeypatch.setattr(classification, "ENCODE_CHUNK", 10**9, raising=False)
        whole = encode_pairs(tokenizer, pairs, max_length=24)
        monkeypatch.setattr(classification, "ENCODE_CHUNK", 5, raising=False)
        counting = CountingTokenizer(tokenizer)
        chunked = encode_pairs(counting, pairs, max_length=24)
        assert chunked == whole
        assert 0 < sum(whole[1]) < len(pairs)  # cut and uncut inputs both checked
        assert counting.sizes[0] == 5 and max(counting.sizes) <= 5  # no call over the whole split


def test_generative_prompts_and_responses_in_chunks_are_the_ids_of_one_call(tmp_path, monkeypatch) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    rows = [
        {"prompt": prompt, "response": response}
        for prompt, response in zip(texts(23, 3), texts(23, 4), strict=True)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = CausalLmTask(add_eos=False)
    examples, _ = task.read(str(path), "train")
    monkeypatch.setattr(generative, "TOKENIZE_CHUNK", 10**9, raising=False)
    whole = task.tokenize_pairs(examples, tokenizer)
    monkeypatch.setattr(generative, "TOKENIZE_CHUNK", 5, raising=False)
    counting = CountingTokenizer(tokenizer)
    chunked = task.tokenize_pairs(examples, counting)
    assert chunked == whole and len(whole[1]) == len(whole[2]) == 23
    assert max(counting.sizes) == 5
