"""Responses a tokenizer cannot give back are noted in the data report, with the exact match they cap.

A SentencePiece Unigram vocabulary (T5-style) has no byte fallback: a character it never saw becomes <unk>,
which decoding drops, so even a model writing its training targets perfectly misses exact match there (and it
is trained to write <unk>). Whitespace it normalizes is no loss: exact match squeezes spaces too.
"""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import T5Tokenizer

from ptuning.tasks.generative import CausalLmTask, Seq2SeqLmTask, SquadGenerativeTask
from ptuning.tasks.text_metrics import exact_match

CORPUS = [  # no "¼", "{" or "}": those become <unk>
    "It costs $5 (a third off). The cat sat on the mat.",
    "def f(x): return x: 1 and two spaces and a newline in Denver.",
] * 10
RESPONSES = [
    "It costs $5 (¼ off).",  # ¼ is lost
    "def f(x): return {x: 1}",  # the braces are lost
    "two  spaces\nand a newline",  # normalized to "two spaces and a newline": exact match does the same
    "The cat sat on the mat.",
    "Denver",
]


@pytest.fixture(scope="module")
def t5_style() -> T5Tokenizer:
    """A T5 tokenizer over a Unigram vocabulary trained here (Metaspace, no byte fallback)."""
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=100, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer)
    pieces = [tuple(piece) for piece in json.loads(backend.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def examples(responses: list[str]) -> list[dict]:
    return [
        {
            "id": i,
            "source": "x",
            "prompt": "say it",
            "response": r,
            "history": [],
            "references": [r] if r else [],
        }
        for i, r in enumerate(responses)
    ]


def test_seq2seq_responses_the_tokenizer_cannot_reproduce_are_noted_with_the_exact_match_they_cap(
    t5_style,
) -> None:
    task = Seq2SeqLmTask()
    features, report = task.featurize(examples(RESPONSES), t5_style, 64)
    notes = [note for note in report.notes if "cannot be reproduced" in note]
    assert notes == [
        "seq2seq-lm: 2 of 5 responses cannot be reproduced by the tokenizer (e.g. 'It costs $5 (¼ off).' comes "
        "back as 'It costs $5 ( off).'): exact match is at most 60.0 %"
    ]
    # the cap is what scoring gives a perfect model: its outputs are the labels, decoded as generation does
    outputs = [t5_style.decode(f["labels"], skip_special_tokens=True).strip() for f in features]
    assert outputs[2] == "two spaces and a newline"
    assert (
        exact_match(outputs, RESPONSES)
        == 60.0
        == task.score(examples(RESPONSES), features, outputs)["exact_match"]
    )


def test_causal_lm_responses_are_checked_too_and_only_labelled_splits(t5_style) -> None:
    _, report = CausalLmTask().featurize(examples(RESPONSES[1:]), t5_style, 64)
    assert [note for note in report.notes if "cannot be reproduced" in note] == [
        "causal-lm: 1 of 4 responses cannot be reproduced by the tokenizer (e.g. 'def f(x): return {x: 1}' comes "
        "back as 'def f(x): return x: 1'): exact match is at most 75.0 %"
    ]
    # responses it gives back (whitespace aside) and predict's unlabelled inputs: nothing to say
    for rows in (RESPONSES[2:], ["", ""]):
        _, report = CausalLmTask().featurize(examples(rows), t5_style, 64)
        assert not any("cannot be reproduced" in note for note in report.notes)


def test_the_check_compares_as_the_tasks_exact_match_does(t5_style) -> None:
    """SQuAD's exact match drops punctuation: braces lost by the tokenizer cost it nothing."""
    rows = examples(["{Denver}", "the mat"])
    _, report = SquadGenerativeTask().featurize(rows, t5_style, 64)
    assert not any("cannot be reproduced" in note for note in report.notes)
    _, report = CausalLmTask().featurize(rows, t5_style, 64)
    assert any("1 of 2 responses cannot be reproduced" in note for note in report.notes)
