"""Every bad input gives a DataError naming the file, the line or field, and what was expected."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ptuning.tasks import DataError, get_task
from ptuning.tasks.readers import is_hub_id, label_key, load_hub_table, read_table


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_names_the_file_and_lists_the_folder(tmp_path):
    write(tmp_path / "train.tsv", "label\tsentence\n1\tgood\n")
    with pytest.raises(DataError) as error:
        get_task("sst2").read(str(tmp_path), "dev")
    message = str(error.value)
    assert str(tmp_path / "dev.tsv") in message
    assert "not found" in message and "train.tsv" in message


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nowhere" / "train.jsonl")


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path / "train.jsonl", "")
    with pytest.raises(DataError) as error:
        read_table(path)
    assert str(path) in str(error.value) and "empty" in str(error.value)


def test_whitespace_only_file_is_empty(tmp_path):
    path = write(tmp_path / "dev.tsv", "\n  \n")
    with pytest.raises(DataError, match="empty"):
        read_table(path)


def test_header_without_rows_is_an_error(tmp_path):
    path = write(tmp_path / "dev.tsv", "label\tsentence\n")
    with pytest.raises(DataError) as error:
        read_table(path)
    assert str(path) in str(error.value) and "no rows" in str(error.value)


def test_misspelled_column_lists_columns_and_suggests_the_closest(tmp_path):
    path = write(tmp_path / "train.tsv", "label\tsentense\n1\tgood\n")
    with pytest.raises(DataError) as error:
        get_task("sst2").read(str(tmp_path), "train")
    message = str(error.value)
    assert str(path) in message
    assert "'sentence'" in message  # what was expected
    assert "['label', 'sentense']" in message  # what was found
    assert "did you mean 'sentense'" in message


def test_missing_label_column_in_train_is_an_error(tmp_path):
    write(tmp_path / "train.tsv", "sentence\ngood\n")
    with pytest.raises(DataError, match="no column 'label'"):
        get_task("sst2").read(str(tmp_path), "train")


def test_invalid_json_line_names_the_line(tmp_path):
    good = '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n'
    path = write(tmp_path / "train.jsonl", good + good + '{"premise": "p", "hypothesis": \n')
    with pytest.raises(DataError) as error:
        read_table(path)
    assert f"{path}, line 3: invalid JSON" in str(error.value)


def test_json_line_that_is_not_an_object_is_an_error(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        read_table(path)


def test_json_line_missing_a_field_names_line_and_field(tmp_path):
    write(
        tmp_path / "train.jsonl",
        '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n{"premise": "p", "label": "entailment"}\n',
    )
    with pytest.raises(DataError) as error:
        get_task("superglue-rte").read(str(tmp_path), "train")
    assert "train.jsonl, line 2: field 'hypothesis' is missing" in str(error.value)


def test_non_utf8_bytes_name_line_and_byte_offset(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"label\tsentence\n1\tgood\n0\tcaf\xe9 bad\n")
    with pytest.raises(DataError) as error:
        read_table(path)
    message = str(error.value)
    assert f"{path}, line 3" in message
    assert "byte offset 27 (column 6)" in message and "UTF-8" in message


def test_ragged_tsv_row_names_the_line(tmp_path):
    path = write(tmp_path / "train.tsv", "label\tsentence\n1\tgood\n0\tbad\textra\n")
    with pytest.raises(DataError) as error:
        read_table(path)
    assert f"{path}, line 3: 3 fields, expected 2" in str(error.value)


def test_label_outside_the_training_set_is_an_error(tmp_path):
    write(tmp_path / "dev.tsv", "label\tcontent\n1\tgood\n0\tbad\n2\tmeh\n")
    with pytest.raises(DataError) as error:
        get_task("sst2").read(str(tmp_path), "dev")
    message = str(error.value)
    assert "dev.tsv, line 4: label '2'" in message
    assert "label_map" in message and "never added silently" in message


def test_explicit_label_map_accepts_a_new_raw_label(tmp_path):
    write(tmp_path / "dev.tsv", "label\tcontent\n1\tgood\n2\tgreat\n")
    examples, _ = get_task("sst2", label_map={"2": "positive"}).read(str(tmp_path), "dev")
    assert [example["label"] for example in examples] == ["positive", "positive"]


def test_label_map_to_an_unknown_class_is_refused():
    with pytest.raises(ValueError, match="not labels of the task"):
        get_task("sst2", label_map={"2": "neutral"})


def test_generic_task_learns_labels_from_train_and_refuses_new_ones(tmp_path):
    write(tmp_path / "train.csv", "text,label\nfine,pos\nawful,neg\n")
    write(tmp_path / "dev.csv", "text,label\nok,pos\nhmm,meh\n")
    task = get_task("csv-classification")
    with pytest.raises(DataError) as error:
        task.read(str(tmp_path), "dev")  # reads train first to learn the label set
    assert "dev.csv, line 3: label 'meh'" in str(error.value)
    assert task.label_names == ["neg", "pos"]


def test_generic_task_without_train_needs_label_names(tmp_path):
    path = write(tmp_path / "dev.csv", "text,label\nok,pos\n")
    with pytest.raises(DataError, match="label_names"):
        get_task("csv-classification").read(str(path), "dev")


def test_unlabelled_rows_in_train_are_an_error(tmp_path):
    labelled = '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n'
    write(tmp_path / "train.jsonl", labelled + '{"premise": "p", "hypothesis": "h"}\n')
    with pytest.raises(DataError, match=r"train.jsonl, line 2: no label"):
        get_task("superglue-rte").read(str(tmp_path), "train")


def test_hub_id_offline_fails_fast_and_says_how_to_use_local_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        get_task("sst2").read("glue", "train")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "'glue'" in message and "offline" in message
    assert "local" in message and "train.tsv" in message


def test_hub_id_unreachable_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        load_hub_table("org/some-dataset", None, "train")
    assert time.monotonic() - started < 5
    assert "unreachable" in str(error.value) and "data directory" in str(error.value)


def test_hub_id_recognition(tmp_path):
    assert is_hub_id("glue") and is_hub_id("nyu-mll/glue")
    assert not is_hub_id(str(tmp_path))  # an existing folder
    assert not is_hub_id("data/sst2/train.tsv")  # a file name, even if missing
    assert not is_hub_id("a/b/c") and not is_hub_id("./glue")


def test_csv_quoted_field_spanning_lines_keeps_the_start_line(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\n"two\nlines",a\nplain,b\n')
    table = read_table(path)
    assert table.rows[0]["text"] == "two\nlines"
    assert table.locations == ["line 2", "line 4"]


def test_tsv_quotes_are_plain_characters(tmp_path):
    path = write(tmp_path / "train.tsv", 'label\tsentence\n1\t"quoted" start\n')
    assert read_table(path).rows[0]["sentence"] == '"quoted" start'


def test_a_csv_quoted_tsv_field_is_read_as_is_and_counted_in_a_note(tmp_path):
    """A TSV from csv.writer / pandas ("He said ""hi"" twice") reached the model with its quotes, silently."""
    text = 'text\tlabel\n"He said ""hi"" twice"\tpos\n"quoted" start\tneg\n""""\tneg\nplain\tneg\n'
    path = write(tmp_path / "train.tsv", text)
    examples, report = get_task("csv-classification").read(str(path), "train")
    assert [e["text"] for e in examples] == ['"He said ""hi"" twice"', '"quoted" start', '""""', "plain"]
    (note,) = [note for note in report.notes if "CSV-quoted" in note]
    assert note.startswith(f"{path}: 2 fields look CSV-quoted") and "first on line 2" in note
    assert "quoting=csv.QUOTE_NONE" in note


def test_a_tsv_row_split_by_a_quoted_tab_says_tsv_is_read_without_quoting(tmp_path):
    path = write(tmp_path / "train.tsv", 'text\tlabel\n"a\tb"\tpos\n')
    with pytest.raises(DataError, match=r"line 2: 3 fields, expected 2 .* TSV is read without quoting"):
        read_table(path)


def test_blank_jsonl_lines_are_counted_as_skipped(tmp_path):
    line = '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n'
    write(tmp_path / "val.jsonl", line + "\n" + line)
    examples, report = get_task("superglue-rte").read(str(tmp_path), "dev")
    assert len(examples) == 2 and report.skipped == 1
    assert examples[1]["source"].endswith("val.jsonl, line 3")


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("\ufefftext,label\nok,a\n".encode())
    assert read_table(path).columns == ["text", "label"]


def test_json_array_file(tmp_path):
    path = write(tmp_path / "train.json", '[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]')
    table = read_table(path)
    assert len(table.rows) == 2 and table.locations[1] == "record 1"


def test_json_file_holding_json_lines(tmp_path):
    path = write(tmp_path / "train.json", '{"text": "a"}\n{"text": "b"}\n')
    assert [row["text"] for row in read_table(path).rows] == ["a", "b"]


def test_txt_file_is_one_text_per_line(tmp_path):
    path = write(tmp_path / "inputs.txt", "first\n\nsecond\n")
    table = read_table(path)
    assert [row["text"] for row in table.rows] == ["first", "second"]
    assert table.locations == ["line 1", "line 3"] and table.blank_lines == 1


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"sentence": ["good", "bad"], "label": [1, 0]}), path)
    examples, _ = get_task("sst2").read(str(path), "train")
    assert [(e["sentence"], e["label"]) for e in examples] == [("good", "positive"), ("bad", "negative")]
    assert examples[1]["source"] == f"{path}, record 1"


def test_unsupported_extension_is_named(tmp_path):
    path = write(tmp_path / "train.xml", "<a/>")
    with pytest.raises(DataError, match=r"unsupported file extension '\.xml'"):
        read_table(path)


def test_headerless_cola_file_uses_the_known_columns(tmp_path):
    write(
        tmp_path / "train.tsv",
        "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more.\n",
    )
    examples, report = get_task("cola").read(str(tmp_path), "train")
    assert [e["label"] for e in examples] == ["acceptable", "unacceptable"]
    assert examples[0]["source"].endswith("line 1")
    assert any("no header row" in note for note in report.notes)


def test_label_keys_normalise_json_and_text_values():
    assert label_key(True) == "True" and label_key(1) == "1" and label_key(1.0) == "1"
    assert label_key(" entailment ") == "entailment"
    assert label_key("") is None and label_key(None) is None
    # CSV/TSV text gives the same keys as the JSON values it spells
    assert label_key("true") == label_key("TRUE") == "True" and label_key("false") == "False"
    assert label_key("1.0") == label_key("1.00") == "1" and label_key("-1.0") == "-1"
    assert label_key("1.5") == "1.5" and label_key("10") == "10" and label_key("1.0.0") == "1.0.0"


def test_text_labels_written_as_decimals_or_lower_case_booleans_are_read(tmp_path):
    write(tmp_path / "dev.tsv", "label\tsentence\n1.0\tgood\n0.0\tbad\n")
    examples, _ = get_task("sst2").read(str(tmp_path), "dev")
    assert [example["label"] for example in examples] == ["positive", "negative"]
    write(tmp_path / "val.csv", "passage,question,label\nsky,is it blue,true\nsea,is it dry,False\n")
    examples, _ = get_task("boolq").read(str(tmp_path / "val.csv"), "dev")
    assert [example["label"] for example in examples] == ["True", "False"]
    # A spreadsheet's 1.0 beside a script's 1 is one class, not two
    write(tmp_path / "train.csv", "text,label\nfine,1\nawful,0\ngreat,1.0\nbad,0.0\n")
    task = get_task("csv-classification")
    task.read(str(tmp_path), "train")
    assert task.label_names == ["0", "1"]


def test_a_repeated_column_name_is_an_error_naming_the_header_line(tmp_path):
    path = write(tmp_path / "train.csv", "text,label,Text\nfirst,pos,second\n")
    with pytest.raises(
        DataError, match=r"train\.csv, line 1: the header names \['Text', 'text'\] more than once"
    ):
        read_table(path)


def test_a_repeated_json_key_is_an_error_naming_the_line(tmp_path):
    path = write(
        tmp_path / "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0, "text": "c"}\n'
    )
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: the key 'text' appears twice"):
        read_table(path)


def test_hub_rows_turn_class_labels_into_names(monkeypatch):
    """The online path, with load_dataset replaced by an in-memory dataset (no network in tests)."""
    import datasets

    from ptuning.tasks import readers

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    fake = datasets.Dataset.from_dict(
        {"sentence": ["good", "bad", "?"], "label": [1, 0, -1]}, features=features
    )
    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(readers, "hub_reachable", lambda timeout_s=3.0: True)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or fake
    )
    examples, report = get_task("sst2").read("nyu-mll/glue", "validation")
    assert calls == [(("nyu-mll/glue", "sst2"), {"split": "validation"})]
    assert [e["label"] for e in examples] == ["positive", "negative", None]
    assert report.unlabelled == 1 and examples[2]["source"] == "nyu-mll/glue (sst2, validation), record 2"
