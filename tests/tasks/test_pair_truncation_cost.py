"""``encode_pairs`` cuts long texts before 'longest_first' truncation, and keeps exactly what it kept.

HF tokenizers build every overflow window of a cut text, and for a pair every window of one text against
every window of the other: two 2000-token texts truncated to 128 cost ~200 ms, and one allowed 64-pair
request blocked the server 7-22 s (2026-12 load audit). Each text is now cut first to what truncation could
keep of it; the encodings must be the ones truncating the whole texts gives, id for id.
"""

from __future__ import annotations

import random

import pytest
from tiny_models import minilm_tokenizer_dir
from transformers import AutoTokenizer

from ptuning.tasks import classification
from ptuning.tasks.classification import PAIR_SEPARATOR, encode_pairs, joins_pairs_bare

from .test_pretokenized import byte_level_bpe

WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "great",
    "dull",
    "paris",
    "unbelievably",
    "antidisestablishment",
    "x",
    "1",
    ".",
    ",",
    "é",
    "中文",
    "ok's",
]
MAX_LENGTHS = [9, 10, 17, 34, 35, 66, 128]  # odd and even budgets (max_length - special tokens)


@pytest.fixture(scope="module", params=["minilm", "roberta-bpe", "decoder-bpe"])
def tokenizer(request):
    if request.param == "minilm":
        return AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    return byte_level_bpe(decoder=request.param == "decoder-bpe")


def text_of(words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def truncating_the_whole(tokenizer, pairs, max_length: int) -> tuple[list[dict], list[bool]]:
    """What encode_pairs answered before: the whole texts truncated longest-first in one call."""
    firsts = [first for first, _ in pairs]
    seconds = [second for _, second in pairs]
    is_pair = seconds[0] is not None
    if is_pair and joins_pairs_bare(tokenizer):
        seconds = [PAIR_SEPARATOR + second for second in seconds]
    cut = tokenizer(firsts, seconds if is_pair else None, truncation="longest_first", max_length=max_length)
    whole = tokenizer(firsts, seconds if is_pair else None, truncation=False, verbose=False)
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in cut]
    encodings = [{key: cut[key][i] for key in keys} for i in range(len(pairs))]
    return encodings, [len(ids) > max_length for ids in whole["input_ids"]]


def pairs_of_every_length(max_length: int, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs over every combination of lengths around the budget B = max_length - 3 (words of one to four
    tokens): empty, short, about B/2, about B and past it; so one side short, both long, ties (equal texts),
    and the longer one first or second. (Not much longer: truncating the whole texts, the reference, builds
    every pair of overflow windows, the very cost under test: 16 GB for 150-word texts at B = 6.)"""
    budget = max_length - 3
    lengths = sorted({0, 1, 3, *(budget // 2 + d for d in (-1, 0, 1)), *(budget + d for d in (-1, 0, 1, 2))})
    lengths.append(budget + 10)
    rng = random.Random(seed)
    pairs = []
    for first in lengths:
        for second in lengths:
            a, b = text_of(first, rng), text_of(second, rng)
            pairs += [(a, b), (b, a), (a, a)]
    return pairs


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_cut_texts_give_the_ids_truncating_the_whole_texts_gives(tokenizer, max_length: int) -> None:
    pairs = pairs_of_every_length(max_length)
    encodings, truncated = encode_pairs(tokenizer, pairs, max_length)
    expected, expected_truncated = truncating_the_whole(tokenizer, pairs, max_length)
    assert truncated == expected_truncated and 0 < sum(truncated) < len(pairs)
    assert encodings == expected  # input_ids, attention_mask, token_type_ids, row by row

    singles = [(first, None) for first, _ in pairs[::3]]
    assert encode_pairs(tokenizer, singles, max_length) == truncating_the_whole(
        tokenizer, singles, max_length
    )


def test_a_tokenizer_that_cuts_from_the_left_keeps_the_last_tokens() -> None:
    """truncation_side='left' (some decoder checkpoints set it) keeps each text's end: texts cut at their
    start-side tokens first kept the first tokens of a single text and a middle slice of a pair."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir(), truncation_side="left")
    pairs = pairs_of_every_length(17)
    assert encode_pairs(tokenizer, pairs, 17) == truncating_the_whole(tokenizer, pairs, 17)
    singles = [(first, None) for first, _ in pairs[::3]]
    assert encode_pairs(tokenizer, singles, 17) == truncating_the_whole(tokenizer, singles, 17)


def test_equal_lengths_of_different_texts_keep_the_tie(tokenizer) -> None:
    """Two different texts of the same token count: truncation gives the odd token of an odd budget to the
    second text on a tie, to the longer text otherwise; a cut that broke the tie would move it."""
    rng = random.Random(1)
    pairs = []
    while len(pairs) < 40:
        a, b = text_of(90, rng), text_of(90, rng)
        if len(tokenizer(a)["input_ids"]) == len(tokenizer(b)["input_ids"]):
            pairs.append((a, b))
    for max_length in (33, 34):
        assert encode_pairs(tokenizer, pairs, max_length) == truncating_the_whole(
            tokenizer, pairs, max_length
        )


def test_an_input_whose_cut_is_not_safe_is_truncated_whole(tokenizer, monkeypatch) -> None:
    """The fallback: where the check refuses a cut, the whole texts are truncated (same ids, old cost)."""
    monkeypatch.setattr(classification, "_same_truncation", lambda *args: False)
    pairs = pairs_of_every_length(17)[::5]
    assert encode_pairs(tokenizer, pairs, 17) == truncating_the_whole(tokenizer, pairs, 17)


class CountingTokenizer:
    """The real tokenizer, recording the longest token count of any text handed to a truncating call."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.longest_truncated_text = 0

    def __call__(self, texts, pairs=None, **options):
        if options.get("truncation") == "longest_first":
            for text in [*texts, *(pairs or [])]:
                count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                self.longest_truncated_text = max(self.longest_truncated_text, count)
        return self.tokenizer(texts, pairs, **options)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_truncation_sees_only_the_tokens_it_could_keep_of_the_audits_worst_request() -> None:
    """The audit's worst allowed pair request: 64 pairs of 4000-character texts of one-letter words (2000
    tokens each). Before, longest-first truncation got the whole texts; now each is cut to the budget (+1 for
    the longer text of a pair), whatever their lengths."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    text = ("a " * 2000)[:4000]
    rng = random.Random(2)
    pairs = [(text, text)] * 32 + [(text_of(1500, rng), text_of(700, rng)) for _ in range(32)]
    counting = CountingTokenizer(tokenizer)
    encodings, truncated = encode_pairs(counting, pairs, 128)
    budget = 128 - tokenizer.num_special_tokens_to_add(pair=True)
    assert all(truncated) and [len(e["input_ids"]) for e in encodings] == [128] * 64
    assert counting.longest_truncated_text <= budget + 1  # the whole texts before: up to 2734 tokens
    sample = [0, 32, 33]  # the reference truncates the whole texts: ~4 GB and seconds for all 64
    expected, _ = truncating_the_whole(tokenizer, [pairs[i] for i in sample], 128)
    assert [encodings[i] for i in sample] == expected
