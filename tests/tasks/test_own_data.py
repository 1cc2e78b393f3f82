"""A user's own data at the task layer: lines split at newlines only, column errors naming both lines, one
data file for every task, the other names of a dev file, entity types learned from train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptuning.tasks import DataError, get_task
from ptuning.tasks.readers import parse_jsonl, parse_text_lines, read_table, split_file, split_lines


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- lines -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u001e"])
def test_unicode_line_separators_inside_a_record_never_split_it(tmp_path, separator):
    jsonl = json.dumps({"text": f"one{separator}record", "label": "a"}, ensure_ascii=False)
    text = f"{jsonl}\n{json.dumps({'text': 'two', 'label': 'b'})}\n"
    table = parse_jsonl("x.jsonl", text)
    assert [row["text"] for row in table.rows] == [f"one{separator}record", "two"]
    assert table.locations == ["line 1", "line 2"]
    lines = parse_text_lines("x.txt", f"first{separator}line\r\nsecond line\n")
    assert [row["text"] for row in lines.rows] == [f"first{separator}line", "second line"]


def test_a_lone_surrogate_escape_in_a_jsonl_line_names_the_line():
    """json accepts "\\ud800" alone, and the tokenizer then failed with a TypeError; a pair is one character."""
    table = parse_jsonl("x.jsonl", '{"text": "ok \\ud83d\\ude00"}\n')
    assert table.rows[0]["text"] == "ok \U0001f600"
    with pytest.raises(DataError, match=r"x.jsonl, line 2: a \\uD800-\\uDFFF escape without its pair"):
        parse_jsonl("x.jsonl", '{"text": "fine"}\n{"text": "a \\ud800 b"}\n')


def test_split_lines_splits_at_newline_and_crlf_only():
    assert split_lines("a\r\nb\u2028c\n\nd") == ["a", "b\u2028c", "", "d"]
    assert split_lines("a\n") == ["a"]
    assert split_lines("") == []


def test_a_jsonl_file_with_u2028_keeps_its_record_count(tmp_path):
    path = write(
        tmp_path / "train.jsonl", '{"text": "a\u2028b", "label": "x"}\n{"text": "c", "label": "y"}\n'
    )
    assert len(read_table(path).rows) == 2


# --- column counts ---------------------------------------------------------------------------------------


def test_column_count_error_names_the_line_that_fixed_it_and_the_line_that_broke_it(tmp_path):
    write(tmp_path / "train.txt", "EU NNP B-ORG\nrejects O\n")
    with pytest.raises(DataError) as error:
        get_task("ner-generic").read(str(tmp_path), "train")
    message = str(error.value)
    assert "train.txt, line 2: expected 3 columns" in message
    assert "line 1, the first word line, fixed the column count at 3" in message
    assert "got 2" in message


def test_column_count_after_a_docstart_and_blank_lines_names_the_first_word_line(tmp_path):
    write(tmp_path / "train.txt", "-DOCSTART- O\n\nEU B-ORG\nrejects O O\n")
    with pytest.raises(DataError, match=r"line 4: expected 2 columns \(line 3, the first word line"):
        get_task("ner-generic").read(str(tmp_path), "train")


# --- one data file, other names of the dev file ----------------------------------------------------------


SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": "Paris is big.",
                    "qas": [
                        {"id": "q1", "question": "What?", "answers": [{"text": "Paris", "answer_start": 0}]}
                    ],
                }
            ],
        }
    ],
}


def test_one_squad_file_is_read_as_any_split(tmp_path):
    path = write(tmp_path / "mine.json", json.dumps(SQUAD))
    task = get_task("squad")
    for split in ("train", "dev"):
        examples, _ = task.read(str(path), split)
        assert [example["id"] for example in examples] == ["q1"]


def test_one_ner_file_is_read_as_the_train_split(tmp_path):
    path = write(tmp_path / "mine.conll", "EU B-ORG\nrejects O\n\nParis B-LOC\n")
    task = get_task("ner-generic")
    examples, _ = task.read(str(path), "train")
    assert len(examples) == 2 and task.label_names == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    conll = get_task("conll2003")
    examples, _ = conll.read(str(write(tmp_path / "c.txt", "EU NNP B-NP B-ORG\n")), "dev")
    assert examples[0]["tags"] == ["B-ORG"]


def test_one_file_without_entity_types_refuses_splits_other_than_train(tmp_path):
    path = write(tmp_path / "mine.conll", "EU B-ORG\n")
    with pytest.raises(DataError, match="entity types are unknown"):
        get_task("ner-generic").read(str(path), "dev")


@pytest.mark.parametrize("name", ["valid.txt", "validation.txt", "val.txt", "dev.txt"])
def test_the_dev_file_goes_by_its_other_names(tmp_path, name):
    write(tmp_path / "train.txt", "EU B-ORG\n")
    write(tmp_path / name, "Paris B-ORG\n")
    task = get_task("ner-generic")
    examples, _ = task.read(str(tmp_path), "dev")
    assert examples[0]["tokens"] == ["Paris"]
    assert split_file(tmp_path, "dev.txt") == tmp_path / name


def test_conll2003_finds_dev_txt_when_valid_txt_is_absent(tmp_path):
    write(tmp_path / "dev.txt", "EU NNP B-NP B-ORG\n")
    examples, _ = get_task("conll2003").read(str(tmp_path), "dev")
    assert examples[0]["tokens"] == ["EU"]


def test_csv_dev_file_goes_by_validation_csv(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    write(tmp_path / "validation.csv", "text,label\nc,y\n")
    examples, _ = get_task("csv-classification").read(str(tmp_path), "dev")
    assert examples[0]["label"] == "y"


def test_squad_dev_file_aliases_do_not_touch_other_names(tmp_path):
    assert split_file(tmp_path, "dev-v1.1.json") == tmp_path / "dev-v1.1.json"
    assert split_file(tmp_path, "train.txt") == tmp_path / "train.txt"


# --- labels learned from train ---------------------------------------------------------------------------


def test_ner_generic_learns_types_from_train_even_when_dev_is_read_first(tmp_path):
    write(tmp_path / "train.txt", "EU B-ORG\nrejects O\n\nParis B-LOC\n")
    write(tmp_path / "dev.txt", "Berlin B-LOC\n")
    task = get_task("ner-generic")
    task.read(str(tmp_path), "dev")
    assert task.entity_types == ["LOC", "ORG"]
    assert task.train_scheme == "iob2"


def test_ner_generic_dev_type_unseen_in_train_names_file_and_line(tmp_path):
    write(tmp_path / "train.txt", "EU B-ORG\n")
    write(tmp_path / "dev.txt", "EU B-ORG\n\nBerlin B-LOC\n")
    task = get_task("ner-generic")
    task.read(str(tmp_path), "train")
    with pytest.raises(DataError, match=r"dev\.txt, line 3: unknown entity type in tag 'B-LOC'"):
        task.read(str(tmp_path), "dev")


# --- found by the property suite -------------------------------------------------------------------------


def test_a_csv_of_empty_fields_only_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="only empty fields"):
        read_table(write(tmp_path / "train.csv", ",\n"))


def test_a_multirc_question_that_is_not_an_object_is_a_data_error(tmp_path):
    record = {"idx": 0, "passage": {"text": "t", "questions": [None]}}
    path = write(tmp_path / "train.jsonl", json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl, line 1, question 0: expected \{question, answers"):
        get_task("multirc").read(str(path), "train")


@pytest.mark.parametrize(
    ("label", "found"), [('["sports", "politics"]', "a list"), ('{"a": 1}', "a JSON object")]
)
def test_a_list_or_object_label_is_refused_naming_the_line(tmp_path, label, found):
    """Multi-label rows became classes named by their repr (and the same labels in another order another)."""
    rows = ['{"text": "just sports", "label": "sports"}', f'{{"text": "both", "label": {label}}}']
    write(tmp_path / "train.jsonl", "\n".join(rows) + "\n")
    with pytest.raises(
        DataError, match=rf"train.jsonl, line 2: field 'label' should be one label .* found {found}"
    ):
        get_task("csv-classification").read(str(tmp_path / "train.jsonl"), "train")
    task = get_task("csv-classification", label_names=["sports", "politics"])
    with pytest.raises(DataError, match=rf"line 2: field 'label' should be one label .* found {found}"):
        task.read(str(tmp_path / "train.jsonl"), "train")


def test_a_quote_never_closed_is_named_where_the_row_runs_on(tmp_path):
    """'"unterminated,pos' swallowed the rest of the file: the error said line 2 held 1 field, which it does not."""
    path = write(tmp_path / "train.csv", 'text,label\n"unterminated,pos\nsecond,neg\nthird,pos\n')
    with pytest.raises(
        DataError, match=r"line 2: 1 fields, .* runs from line 2 to line 4 inside a quoted field"
    ):
        get_task("csv-classification").read(str(path), "train")


@pytest.mark.parametrize("label_names", [None, [0, 1]])
def test_a_numeric_label_map_target_is_the_label_it_names(tmp_path, label_names):
    """{"yes": 1} (natural in --task-options JSON or YAML) crashed with a TypeError while learning the label
    set, or was refused as "targets [0, 1] are not labels of the task ['0', '1']" with label_names=[0, 1]."""
    write(tmp_path / "train.csv", "text,label\na,1\nb,0\nc,yes\nd,no\n")
    write(tmp_path / "dev.csv", "text,label\nx,yes\ny,0\n")
    task = get_task("csv-classification", label_names=label_names, label_map={"yes": 1, "no": 0.0})
    train, _ = task.read(str(tmp_path), "train")
    dev, _ = task.read(str(tmp_path), "dev")
    assert task.label_names == ["0", "1"]
    assert [e["label"] for e in train] == ["1", "0", "1", "0"] and [e["label"] for e in dev] == ["1", "0"]


def test_examples_with_no_text_are_kept_and_counted(tmp_path):
    """An empty or blank text was read without a word (causal-lm and QA refuse theirs; a classifier can
    score an empty input, so it is kept, but counted where the data report says what was read)."""
    write(tmp_path / "train.csv", 'text,label\ngood film,pos\n,neg\n"   ",pos\nbad film,neg\n')
    examples, report = get_task("csv-classification").read(str(tmp_path), "train")
    assert len(examples) == 4
    assert (
        "2 example(s) with no text (every input field empty or blank), kept; the first at "
        + str(tmp_path / "train.csv")
        + ", line 3"
        in report.notes
    )
    write(tmp_path / "dev.csv", "text,label\ngood film,pos\n")
    _, report = get_task("csv-classification", label_names=["neg", "pos"]).read(str(tmp_path), "dev")
    assert not any("with no text" in note for note in report.notes)
