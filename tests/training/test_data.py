"""A task's splits in a run (training/data.py): sample limits and the dev share held out of train keep a MultiRC
question with all its answer options, in training and in ``ptuning eval --max-samples`` alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import minilm_tokenizer_dir

from ptuning.tasks import DataError, get_task
from ptuning.training import predict
from ptuning.training.data import hold_out, read_split
from ptuning.training.predict import LoadedCheckpoint, examples_from_records, read_records, score_split

RED_DOG = {
    "idx": 0,
    "passage": {
        "text": "Tom has a red dog. The dog is old.",
        "questions": [
            {"idx": 0, "question": "What color is the dog?", "answers": [
                {"text": "red", "label": 1}, {"text": "blue", "label": 0}, {"text": "Red", "label": 1}]},
            {"idx": 1, "question": "Is the dog old?", "answers": [
                {"text": "yes", "label": 1}, {"text": "no", "label": 0}]},
        ],
    },
}  # fmt: skip
ANN_RAN = {
    "idx": 1,
    "passage": {"text": "Ann ran.", "questions": [
        {"idx": 0, "question": "Who ran?", "answers": [{"text": "Ann", "label": 1}, {"text": "Bob", "label": 0}]}
    ]},
}  # fmt: skip


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path.parent)


def many_questions(count: int) -> list[dict]:
    """``count`` passages of one question each, with 2 to 5 answer options."""
    return [
        {"idx": p, "passage": {"text": f"Passage {p}.", "questions": [{"idx": 0, "question": f"Q{p}?", "answers": [
            {"text": f"a{a}", "label": a % 2} for a in range(2 + p % 4)]}]}}
        for p in range(count)
    ]  # fmt: skip


def question_ids(split) -> list[str]:
    return [example["question_id"] for example in split.examples]


def test_max_samples_keeps_whole_multirc_questions(tmp_path):
    """A limit of 4 kept 'red', 'blue', 'Red' and 'yes': the second question scored as all right (0.0 -> 0.5)."""
    data = write_jsonl(tmp_path / "val.jsonl", [RED_DOG, ANN_RAN])
    multirc = get_task("multirc")
    cut = read_split(multirc, data, "dev", limit=4)
    assert question_ids(cut) == ["0-0", "0-0", "0-0"]
    assert cut.report.examples == 3
    assert cut.report.notes == ["dev: kept the first 3 of 7 examples (max samples 4, whole questions)"]
    says_true = [np.array([0.0, 1.0])] * len(cut.examples)
    assert multirc.score(cut.examples, [{}] * len(cut.examples), says_true)["exact_match"] == 0.0


def test_max_samples_keeps_at_least_the_first_question(tmp_path):
    data = write_jsonl(tmp_path / "val.jsonl", [RED_DOG, ANN_RAN])
    assert question_ids(read_split(get_task("multirc"), data, "dev", limit=2)) == ["0-0"] * 3
    assert question_ids(read_split(get_task("multirc"), data, "dev", limit=5)) == ["0-0"] * 3 + ["0-1"] * 2


def test_max_samples_of_a_task_without_groups_cuts_at_the_limit(tmp_path):
    rows = [{"question": f"q{i}?", "passage": "p.", "label": i % 2 == 0, "idx": i} for i in range(5)]
    cut = read_split(get_task("boolq"), write_jsonl(tmp_path / "val.jsonl", rows), "dev", limit=2)
    assert [example["id"] for example in cut.examples] == [0, 1]
    assert cut.report.notes == ["dev: kept the first 2 of 5 examples (max samples)"]


@pytest.mark.parametrize("seed", range(5))
def test_dev_from_train_holds_out_whole_multirc_questions(tmp_path, seed):
    """Single rows were drawn: one question's options landed in train and dev (its labels leaked)."""
    train = read_split(
        get_task("multirc"), write_jsonl(tmp_path / "train.jsonl", many_questions(10)), "train"
    )
    kept, dev, summary = hold_out(train, 0.3, seed)
    assert set(question_ids(kept)).isdisjoint(question_ids(dev))
    assert len(set(question_ids(dev))) == 3  # 0.3 of 10 questions
    assert len(kept.examples) + len(dev.examples) == summary["source_examples"] == len(train.examples)
    note = f"{len(dev.examples)} of {len(train.examples)} examples (3 of 10 whole questions) held out as dev"
    assert note in dev.report.notes[0]


def test_dev_from_train_without_groups_draws_the_examples_it_always_drew(tmp_path):
    rows = [{"question": f"q{i}?", "passage": "p.", "label": True, "idx": i} for i in range(20)]
    train = read_split(get_task("boolq"), write_jsonl(tmp_path / "train.jsonl", rows), "train")
    _, dev, _ = hold_out(train, 0.25, 0)
    drawn = sorted(np.random.default_rng(0).permutation(20)[:5].tolist())
    assert [example["id"] for example in dev.examples] == drawn


def test_dev_from_train_needs_a_question_on_each_side(tmp_path):
    train = read_split(get_task("multirc"), write_jsonl(tmp_path / "train.jsonl", [RED_DOG]), "train")
    with pytest.raises(DataError, match=r"dev_from_train 0.1 of 2 train questions leaves 0 for dev and 2"):
        hold_out(train, 0.1, 0)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_tokenizer_dir())  # skips where the package is absent


def test_eval_max_samples_keeps_whole_multirc_questions(tmp_path, tokenizer, monkeypatch):
    """``eval --max-samples 4`` scored half a question: exact match 0.5 where the whole split scores 0.0."""
    data = write_jsonl(tmp_path / "val.jsonl", [RED_DOG, ANN_RAN])
    says_true = lambda loaded, features, batch_size: [np.array([0.0, 1.0])] * len(features)  # noqa: E731
    monkeypatch.setattr(predict, "_outputs", says_true)
    loaded = LoadedCheckpoint(None, tokenizer, get_task("multirc"), "multirc", max_length=64)
    notes: list[str] = []
    scores = score_split(loaded, data, "dev", max_samples=4, notes=notes)
    assert (scores["examples"], scores["exact_match"]) == (3, 0.0)
    assert "dev: kept the first 3 of 7 examples (max samples 4, whole questions)" in notes


def test_predict_takes_multirc_rows_without_a_question(tmp_path):
    """Flat rows {paragraph, question, answer} were refused: only scoring needs to know the question."""
    row = {"paragraph": "Tom has a red dog.", "question": "What color is the dog?", "answer": "red"}
    (tmp_path / "in.jsonl").write_text(json.dumps(row) + "\n")
    multirc = get_task("multirc")
    examples = examples_from_records(multirc, read_records(str(tmp_path / "in.jsonl"), "jsonl"), "jsonl")
    assert multirc.render(examples[0]) == [("Tom has a red dog.", "What color is the dog? red")]
