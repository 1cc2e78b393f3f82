"""SuperGLUE inputs as users save them: WSC exported to CSV, WSC inputs cut at max_length, MultiRC flat rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tiny_models import minilm_tokenizer_dir

from ptuning.tasks import DataError, get_task


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_tokenizer_dir())  # skips where the package is absent


WSC_COLUMNS = ["text", "span1_index", "span2_index", "span1_text", "span2_text", "idx", "label"]


def write_wsc_csv(path: Path, span2_index: str) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(WSC_COLUMNS)
        writer.writerow(["Mark told Pete he lied .", "2", span2_index, "Pete", "he", "0", "1"])
    return path


@pytest.mark.parametrize("cell", ["3", "3.0"])
def test_wsc_reads_span2_index_from_a_csv_cell(tmp_path, cell):
    """A CSV cell is text: '3' was refused as 'should be a word index, found '3''."""
    examples, _ = get_task("wsc").read(str(write_wsc_csv(tmp_path / "val.csv", cell)), "dev")
    assert examples[0]["span2_index"] == 3
    assert get_task("wsc").render(examples[0]) == [("Mark told Pete *he* lied .", "Pete")]


@pytest.mark.parametrize("cell", ["3.5", "three", ""])
def test_wsc_refuses_a_span2_index_that_is_not_an_integer(tmp_path, cell):
    with pytest.raises(DataError, match=r"val.csv, line 2: span2_index should be an integer word index"):
        get_task("wsc").read(str(write_wsc_csv(tmp_path / "val.csv", cell)), "dev")


def test_wsc_refuses_a_boolean_span2_index(tmp_path):
    row = {"text": "Mark told Pete he lied .", "span1_text": "Pete", "span2_text": "he", "span2_index": True}
    (tmp_path / "val.jsonl").write_text(json.dumps({**row, "label": True}) + "\n")
    with pytest.raises(DataError, match=r"span2_index should be an integer word index.*found True"):
        get_task("wsc").read(str(tmp_path), "dev")


def test_wsc_counts_the_examples_whose_cut_took_the_marked_pronoun(tokenizer):
    """Truncation cuts the text's end: a pronoun near the end loses its '*' marker, one near the start keeps it."""
    filler = " ".join(["the old farmer walked slowly along the river"] * 4)
    texts = [
        f"{filler} and then he sat down .",  # cut: the marker is lost
        f"Pete said he saw {filler} .",  # cut, but the marker stays
        "Mark told Pete he lied .",  # not cut
    ]
    examples = [
        {"text": text, "span2_index": text.split().index("he"), "span1_text": "Pete", "span2_text": "he",
         "label": "True"}
        for text in texts
    ]  # fmt: skip
    features, report = get_task("wsc").featurize(examples, tokenizer, max_length=16)
    assert report.truncated == 2
    assert "wsc: 1 of 3 examples lost the marked pronoun to max_length=16; raise --max-length" in report.notes
    assert [len(feature["input_ids"]) for feature in features][:2] == [16, 16]


def test_wsc_says_nothing_about_the_pronoun_when_no_marker_was_cut(tokenizer):
    example = {"text": "Mark told Pete he lied .", "span1_text": "Pete", "span2_text": "he", "span2_index": 3}
    _, report = get_task("wsc").featurize([{**example, "label": None}], tokenizer, max_length=64)
    assert report.notes == []


def test_multirc_groups_answer_options_by_question():
    multirc = get_task("multirc")
    assert multirc.group_key({"question_id": "4-1"}) == "4-1"
    assert multirc.group_name == "questions"
    assert get_task("boolq").group_key({"question": "is it?"}) is None


def test_multirc_unlabelled_flat_rows_need_no_question(tmp_path):
    """An unlabelled option is not scored, so nothing needs its question (a test file, predict's input)."""
    row = {"paragraph": "Tom has a red dog.", "question": "What color is the dog?", "answer": "red"}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
    examples, _ = get_task("multirc").read(str(tmp_path), "test")
    assert (examples[0]["label"], examples[0]["question_id"]) == (None, None)


def test_multirc_labelled_flat_row_without_a_question_names_the_fields_it_needs(tmp_path):
    row = {"paragraph": "Tom has a red dog.", "question": "What color?", "answer": "red", "label": 1}
    (tmp_path / "val.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError) as caught:
        get_task("multirc").read(str(tmp_path), "dev")
    message = str(caught.value)
    assert "val.jsonl, line 1: cannot tell which question this answer belongs to;" in message
    assert "'question_id'" in message and "'idx' as {paragraph, question, answer}" in message
