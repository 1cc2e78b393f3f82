"""``ptuning predict`` for every output kind: labels with probabilities, entity spans, answer spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_tiny import run_cli, train_args

from ptuning.cli import main
from ptuning.core.backbones import load_backbone
from ptuning.core.fingerprint import FINGERPRINT_VERSION, FINGERPRINTS_ATTRIBUTE, base_fingerprint
from ptuning.tasks.glue import Sst2
from ptuning.tasks.readers import Table
from ptuning.training.predict import examples_from_records, input_format, jsonable, load_for_inference


@pytest.fixture(scope="module")
def ner_checkpoint(tiny_bert, conll_dir, tmp_path_factory) -> str:
    output_dir = tmp_path_factory.mktemp("ner")
    argv = train_args(
        tiny_bert, conll_dir, output_dir, "--max-steps", "1", "--test-split", "none", task="conll2003"
    )
    assert main(argv) == 0
    return str(output_dir / "checkpoint")


@pytest.fixture(scope="module")
def squad_checkpoint(tiny_bert, squad_dir, tmp_path_factory) -> str:
    output_dir = tmp_path_factory.mktemp("squad")
    argv = train_args(tiny_bert, squad_dir, output_dir, "--max-steps", "1", task="squad")
    argv += ["--max-length", "256", "--test-split", "none"]  # QA windows need room for doc_stride 128
    assert main(argv) == 0
    return str(output_dir / "checkpoint")


def test_squad_v2_trains_on_a_split_with_unanswerable_questions(tiny_bert, squad_dir, tmp_path) -> None:
    """The reader counted unanswerable questions as unlabelled, and the engine refuses a train split with
    unlabelled rows: SQuAD 2.0 (a third unanswerable) and its preset could not train at all."""
    data = tmp_path / "squad2"
    data.mkdir()
    for name in ("train", "dev"):
        squad = json.loads((Path(squad_dir) / f"{name}-v1.1.json").read_text())
        squad["version"] = "v2.0"
        squad["data"][0]["paragraphs"][0]["qas"].append(
            {"id": "q5", "question": "Who painted it?", "answers": [], "is_impossible": True}
        )
        (data / f"{name}-v2.0.json").write_text(json.dumps(squad))
    argv = train_args(tiny_bert, str(data), tmp_path / "run", "--max-steps", "1", task="squad_v2")
    assert main([*argv, "--max-length", "256", "--test-split", "none"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dev"]["NoAns_total"] == 1


def test_ner_predictions_are_tags_and_entity_spans(ner_checkpoint, tmp_path, capsys) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "s1", "tokens": ["EU", "rejects", "German", "call"]}\n{"text": "Japan beat Syria"}\n'
    )
    code, out, _ = run_cli(["predict", "--checkpoint", ner_checkpoint, "--input", str(source)], capsys)
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["id"] == "s1" and first["tokens"] == ["EU", "rejects", "German", "call"]
    assert len(first["tags"]) == 4 and second["tokens"] == ["Japan", "beat", "Syria"]
    for entity in first["entities"] + second["entities"]:
        assert set(entity) == {"type", "start_word", "end_word", "text"}


def test_every_task_kind_takes_the_id_from_idx_or_id(ner_checkpoint, tmp_path, capsys) -> None:
    """GLUE-style files say idx, users' own files id: both are the prediction's id, as for classification."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"idx": 7, "tokens": ["EU", "rejects"]}\n{"id": "b", "text": "Japan"}\n{"text": "x"}\n'
    )
    code, out, _ = run_cli(["predict", "--checkpoint", ner_checkpoint, "--input", str(source)], capsys)
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [7, "b", 2]


def test_ner_text_lines_are_whitespace_tokenized(ner_checkpoint, tmp_path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Peter Blackburn visits London\n")
    code, out, _ = run_cli(["predict", "--checkpoint", ner_checkpoint, "--input", str(source)], capsys)
    assert code == 0 and json.loads(out)["tokens"] == ["Peter", "Blackburn", "visits", "London"]


def test_qa_predictions_are_answer_spans_of_the_context(squad_checkpoint, tmp_path, capsys) -> None:
    context = "The Eiffel Tower is in Paris."
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "x", "question": "Where is the tower?", "context": context}) + "\n")
    code, out, _ = run_cli(["predict", "--checkpoint", squad_checkpoint, "--input", str(source)], capsys)
    assert code == 0
    prediction = json.loads(out)
    assert prediction["id"] == "x" and prediction["answer"] in context
    best = prediction["n_best"][0]
    assert context[best["start_char"] : best["end_char"]] == best["text"]


def test_qa_refuses_text_lines_in_one_line(squad_checkpoint, tmp_path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Where is the tower?\n")
    code, _, err = run_cli(["predict", "--checkpoint", squad_checkpoint, "--input", str(source)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--format jsonl" in err


def test_text_lines_of_a_pair_task_are_refused() -> None:
    from ptuning.tasks.base import DataError
    from ptuning.tasks.registry import get_task

    table = Table("<stdin>", ["text"], [{"text": "a"}], ["line 1"])
    with pytest.raises(DataError, match="'sentence1' or '#1 String'; 'sentence2' or '#2 String'"):
        examples_from_records(get_task("mrpc"), table, "txt")
    # the keys it names are ones a JSONL line may use: it named the internal 'text, text_pair', refused next
    pair = get_task("pair-classification", label_names=["no", "yes"])
    with pytest.raises(DataError, match="'sentence1' or 'text_a' or 'premise' or 'question1'; 'sentence2'"):
        examples_from_records(pair, table, "txt")
    lines = Table("<stdin>", ["sentence1", "sentence2"], [{"sentence1": "a", "sentence2": "b"}], ["line 1"])
    assert len(examples_from_records(pair, lines, "jsonl")) == 1


def test_an_srl_predicate_index_must_be_a_word_index_not_a_truth_value() -> None:
    """true passed the int check (bool is an int in Python) and marked word 1 as the predicate."""
    from ptuning.tasks.base import DataError
    from ptuning.tasks.registry import get_task

    task = get_task("conll2005-srl")
    rows = [{"tokens": ["EU", "rejects", "it"], "predicate_index": 1}]
    assert (
        examples_from_records(task, Table("x.jsonl", ["tokens"], rows, ["line 1"]), "jsonl")[0]["predicate"]
        == "rejects"
    )
    rows = [{"tokens": ["EU", "rejects", "it"], "predicate_index": True}]
    with pytest.raises(DataError, match="x.jsonl, line 1: conll2005-srl needs 'predicate_index'"):
        examples_from_records(task, Table("x.jsonl", ["tokens"], rows, ["line 1"]), "jsonl")


def test_a_classification_id_that_is_not_a_string_or_number_is_refused() -> None:
    """Tagging and QA refused {"id": [1]}; classification passed it through to the predictions."""
    from ptuning.tasks.base import DataError

    table = Table("x.jsonl", ["id", "sentence"], [{"id": 7, "sentence": "fine"}, {"id": [1], "sentence": "bad"}],
                  ["line 1", "line 2"])  # fmt: skip
    with pytest.raises(
        DataError, match=r"x.jsonl, line 2: the id should be a string or a finite number, found \[1\]"
    ):
        examples_from_records(Sst2(), table, "jsonl")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True])
def test_an_id_that_json_cannot_echo_is_refused(bad) -> None:
    """Python's json reads NaN and Infinity: the prediction line would carry them as invalid JSON; true is an
    int to Python. predict and the server share this check (record_id)."""
    from ptuning.tasks.base import DataError

    table = Table("x.jsonl", ["id", "sentence"], [{"id": bad, "sentence": "fine"}], ["line 1"])
    with pytest.raises(DataError, match=r"x.jsonl, line 1: the id should be a string or a finite number"):
        examples_from_records(Sst2(), table, "jsonl")


def test_text_lines_become_the_single_field_of_the_task() -> None:
    table = Table("<stdin>", ["text"], [{"text": "fine"}, {"text": "bad"}], ["line 1", "line 2"])
    examples = examples_from_records(Sst2(), table, "txt")
    assert [e["sentence"] for e in examples] == ["fine", "bad"] and examples[0]["label"] is None


def test_input_format_follows_the_extension_unless_given() -> None:
    assert input_format("a.jsonl", None) == "jsonl" and input_format("a.txt", None) == "txt"
    assert input_format("-", None) == "txt" and input_format("-", "jsonl") == "jsonl"
    assert input_format("a.CSV", None) == "csv" and input_format("a.tsv", None) == "tsv"
    assert input_format("a.tsv", "txt") == "txt"


@pytest.mark.parametrize(
    "name, text",
    [
        ("reviews.tsv", "label\tsentence\n1\twonderful acting\n0\tdull, dull acting\n"),
        ("reviews.csv", 'sentence,label\nwonderful acting,1\n"dull, dull acting",0\n'),
    ],
)
def test_csv_and_tsv_inputs_are_read_by_their_header(sst2_run, tmp_path, capsys, name, text) -> None:
    """They were read as text lines: the header became input 0 and each row's label part of its text."""
    checkpoint = str(sst2_run / "checkpoint")
    (tmp_path / name).write_text(text)
    (tmp_path / "same.jsonl").write_text(
        '{"sentence": "wonderful acting"}\n{"sentence": "dull, dull acting"}\n'
    )
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, "--input", str(tmp_path / name)], capsys)
    assert code == 0, err
    code, expected, err = run_cli(
        ["predict", "--checkpoint", checkpoint, "--input", str(tmp_path / "same.jsonl")], capsys
    )
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        json.loads(line) for line in expected.splitlines()
    ]


def test_a_csv_input_without_the_tasks_column_names_what_it_has(sst2_run, tmp_path, capsys) -> None:
    (tmp_path / "in.csv").write_text("review,label\ngood,1\n")
    argv = ["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", str(tmp_path / "in.csv")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "in.csv" in err and "review" in err and "Traceback" not in err


def test_jsonable_turns_numpy_and_infinity_into_json() -> None:
    import numpy as np

    value = {"a": np.float32(0.5), "b": np.arange(2), "c": float("inf"), "d": (np.int64(3),)}
    assert json.dumps(jsonable(value)) == '{"a": 0.5, "b": [0, 1], "c": null, "d": [3]}'


@pytest.mark.parametrize(
    "backbone",
    [
        ["--backbone-dtype", "bf16"],
        ["--backbone-dtype", "auto"],  # bf16 or fp32, as this machine computes
        ["--backbone-quantization", "int8"],
        ["--backbone-quantization", "int8-dynamic"],
    ],
)
def test_predict_on_a_small_backbone_changes_few_tags(ner_checkpoint, tmp_path, capsys, backbone) -> None:
    """bf16 storage and CPU int8 (weight-only, dynamic): same number of answers, and most tags equal the fp32 run's."""
    source = tmp_path / "in.txt"
    source.write_text("EU rejects German call\nJapan beat Syria in the final\nPeter Blackburn\n")
    argv = ["predict", "--checkpoint", ner_checkpoint, "--input", str(source)]
    code, reference, _ = run_cli(argv, capsys)
    assert code == 0
    code, small, err = run_cli([*argv, *backbone], capsys)
    assert code == 0, err
    reference_tags = [tag for line in reference.splitlines() for tag in json.loads(line)["tags"]]
    small_tags = [tag for line in small.splitlines() for tag in json.loads(line)["tags"]]
    assert len(small_tags) == len(reference_tags) == 12
    assert sum(a == b for a, b in zip(small_tags, reference_tags, strict=True)) >= 9


def test_nf4_without_cuda_is_one_line_and_exit_2(ner_checkpoint, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    source = tmp_path / "in.txt"
    source.write_text("EU rejects German call\n")
    argv = [
        "predict",
        "--checkpoint",
        ner_checkpoint,
        "--input",
        str(source),
        "--backbone-quantization",
        "nf4",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "nf4 needs CUDA and bitsandbytes" in err


def test_squad_windows_too_short_for_the_doc_stride_are_one_line_and_exit_2(
    tiny_bert, squad_dir, tmp_path, capsys
) -> None:
    argv = train_args(
        tiny_bert, squad_dir, tmp_path / "run", "--max-steps", "1", task="squad"
    )  # max_length 32
    code, _, err = run_cli([*argv, "--test-split", "none"], capsys)
    assert code == 2 and "doc_stride=128 must be smaller" in err and "--max-length" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_eval_and_predict_batch_as_the_training_run_evaluated(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """Other batches change a score's last digits (a near-constant regressor's pearson visibly): by default
    eval and predict take the run's --eval-batch-size."""
    import ptuning.training.predict as predict_module

    output = tmp_path / "run"
    argv = train_args(
        tiny_bert, sst2_dir, output, "--max-steps", "1", "--eval-batch-size", "5", "--test-split", "none"
    )
    assert run_cli(argv, capsys)[0] == 0
    sizes = []
    real = predict_module.predict_outputs
    monkeypatch.setattr(
        predict_module, "predict_outputs", lambda *a, **k: sizes.append(a[4]) or real(*a, **k)
    )
    checkpoint = str(output / "checkpoint")
    code, _, err = run_cli(["eval", "--checkpoint", checkpoint, "--data", sst2_dir], capsys)
    assert code == 0, err
    code, _, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", sst2_dir, "--batch-size", "7"], capsys
    )
    assert code == 0, err
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a lovely film\nawful acting\n")
    for extra in ([], ["--batch-size", "7"]):
        code, _, err = run_cli(
            ["predict", "--checkpoint", checkpoint, "--input", str(inputs), *extra], capsys
        )
        assert code == 0, err
    assert sizes == [5, 7, 5, 7]


def test_a_max_length_past_the_position_table_is_refused_before_reading_inputs(
    ner_checkpoint, tmp_path, capsys
) -> None:
    """It used to pass and fail on the first long input (or a live request), advising position_mode='keep'."""
    source = tmp_path / "in.txt"
    source.write_text("EU rejects German call\n")
    code, _, err = run_cli(
        ["predict", "--checkpoint", ner_checkpoint, "--input", str(source), "--max-length", "100000"], capsys
    )
    assert (
        code == 2
        and "--max-length 100000 needs 100000 positions" in err
        and "use --max-length 512 or less" in err
    )


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_device_cuda_without_cuda_is_one_line_and_exit_2(
    command, ner_checkpoint, conll_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    source = tmp_path / "in.txt"
    source.write_text("EU rejects German call\n")
    where = ["--input", str(source)] if command == "predict" else ["--data", conll_dir]
    code, _, err = run_cli([command, "--checkpoint", ner_checkpoint, "--device", "cuda", *where], capsys)
    assert code == 2 and err.count("\n") == 1 and "--device cuda: torch sees no CUDA device here" in err


def on_meta(requested=None) -> torch.device:
    """Stands in for a GPU in the placement tests: parameters move there (shapes only, no data)."""
    return torch.device("meta")


def test_load_backbone_moves_the_model_to_the_device(tiny_bert, monkeypatch) -> None:
    monkeypatch.setattr("ptuning.core.backbones.inference_device", on_meta)
    backbone, _ = load_backbone(tiny_bert, device="cuda")
    assert {p.device for p in backbone.parameters()} == {torch.device("meta")}
    unmoved, _ = load_backbone(tiny_bert)  # None: where from_pretrained put it
    assert {p.device for p in unmoved.parameters()} == {torch.device("cpu")}


@pytest.mark.filterwarnings("ignore:.*to a meta parameter in the current model")  # the copy is skipped there
def test_eval_and_predict_build_the_prompt_beside_the_backbone_on_the_device(
    ner_checkpoint, monkeypatch
) -> None:
    """eval / predict used to leave every model on the CPU, even on a GPU machine: now the device asked for
    reaches the backbone's loading, and the prefix and head are built where the backbone is."""
    asked, loaded_onto = [], []

    def resolve(requested=None) -> torch.device:
        asked.append(requested)
        return torch.device("cpu")

    def load_then_move(*args, device=None, **kwargs):
        loaded_onto.append(device)
        backbone, tokenizer = load_backbone(*args, **kwargs)
        fingerprints = {version: base_fingerprint(backbone, version) for version in (1, FINGERPRINT_VERSION)}
        setattr(backbone, FINGERPRINTS_ATTRIBUTE, fingerprints)  # as a quantized backbone answers them
        return backbone.to(on_meta(device)), tokenizer

    monkeypatch.setattr("ptuning.training.predict.inference_device", resolve)
    monkeypatch.setattr("ptuning.training.predict.load_backbone", load_then_move)
    loaded = load_for_inference(ner_checkpoint, device="cuda:1")
    assert asked == ["cuda:1"] and loaded_onto == [
        torch.device("cpu")
    ]  # the resolved device reaches the load
    devices = {name.split(".")[0]: p.device for name, p in loaded.model.named_parameters()}
    assert set(devices) == {"backbone", "prefixes", "heads"}
    assert set(devices.values()) == {torch.device("meta")}


def test_device_cpu_scores_like_the_default(ner_checkpoint, tmp_path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("EU rejects German call\nPeter Blackburn\n")
    argv = ["predict", "--checkpoint", ner_checkpoint, "--input", str(source)]
    code, default, _ = run_cli(argv, capsys)
    assert code == 0
    code, on_cpu, err = run_cli([*argv, "--device", "cpu"], capsys)
    assert code == 0, err
    assert on_cpu == default and len(default.splitlines()) == 2


def test_inputs_with_and_without_a_label_share_a_batch(sst2_run, tmp_path, capsys) -> None:
    """A labelled and an unlabelled input of one length fell in one batch, whose collation refused rows with
    different keys (a traceback); predict ignores labels, eval scores the labelled rows and says so."""
    checkpoint = str(sst2_run / "checkpoint")
    inputs = tmp_path / "mixed.jsonl"
    inputs.write_text('{"sentence": "wonderful acting", "label": 1}\n\n{"sentence": "dull acting"}\n')
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, "--input", str(inputs)], capsys)
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [0, 1]
    assert "note: 1 blank line(s) skipped" in err  # skipped, and said so
    data = tmp_path / "sst2"
    data.mkdir()
    (data / "dev.tsv").write_text("sentence\tlabel\nwonderful acting\t1\ndull acting\t\n")
    code, out, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", str(data), "--split", "dev"], capsys
    )
    assert code == 0 and json.loads(out)["examples"] == 2
    assert "1 of the split's 2 examples have no label and are not scored" in err


def test_an_output_that_would_overwrite_an_input_is_refused_before_the_work(
    sst2_run, tmp_path, capsys
) -> None:
    """--output the input file replaced the inputs with predictions; inside the checkpoint it destroyed it."""
    checkpoint = sst2_run / "checkpoint"
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"sentence": "wonderful acting"}\n')
    data = tmp_path / "sst2"
    data.mkdir()
    (data / "dev.tsv").write_text("sentence\tlabel\nwonderful acting\t1\n")
    before = {path: path.read_bytes() for path in (inputs, data / "dev.tsv", *checkpoint.iterdir())}
    refused = [
        (["predict", "--input", str(inputs), "--output", str(inputs)], f"would overwrite --input {inputs}"),
        (["eval", "--data", str(data), "--output", str(data / "dev.tsv")], f"would overwrite --data {data}"),
        (["predict", "--input", str(inputs), "--output", str(checkpoint / "notes.jsonl")], "--checkpoint"),
    ]
    for argv, said in refused:
        code, _, err = run_cli([argv[0], "--checkpoint", str(checkpoint), *argv[1:]], capsys)
        assert code == 2 and said in err and err.count("\n") == 1
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(
        p.name for p in before if p.parent == checkpoint
    )
    code, _, _ = run_cli(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "dev",
                          "--output", str(data / "scores.json")], capsys)  # fmt: skip
    assert code == 0 and json.loads((data / "scores.json").read_text())["examples"] == 1


def test_an_output_folder_that_takes_no_file_is_refused_before_the_work(sst2_run, tmp_path, capsys) -> None:
    """A folder that cannot take a new file failed only after every prediction was made (a traceback)."""
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"sentence": "wonderful acting"}\n')
    argv = ["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", str(inputs)]
    code, _, err = run_cli([*argv, "--output", "/proc/predictions.jsonl"], capsys)
    assert code == 2 and err.startswith(
        "ptuning predict: error: --output /proc/predictions.jsonl: cannot write"
    )


def test_a_full_disk_while_the_output_is_written_is_one_line_and_keeps_the_old_file(
    sst2_run, tmp_path, capsys, monkeypatch
) -> None:
    """The write comes after every prediction: a full disk there was a traceback (exit 1)."""
    import errno
    import os

    inputs, output = tmp_path / "inputs.jsonl", tmp_path / "predictions.jsonl"
    inputs.write_text('{"sentence": "wonderful acting"}\n')
    output.write_text("kept\n")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("ptuning.core.folders.os.replace", full_disk)
    argv = ["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", str(inputs)]
    code, _, err = run_cli([*argv, "--output", str(output)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"--output {output}: not written (No space left on device)" in err
    assert output.read_text() == "kept\n"


def test_eval_prints_a_metric_that_is_not_a_number_as_json_null(
    sst2_run, tmp_path, capsys, monkeypatch
) -> None:
    """json.dumps wrote NaN (stsb's correlation over one example), which strict JSON readers refuse."""
    from ptuning.tasks.glue import Sst2

    monkeypatch.setattr(Sst2, "score", lambda self, *args: {"accuracy": float("nan")})
    data = tmp_path / "sst2"
    data.mkdir()
    (data / "dev.tsv").write_text("sentence\tlabel\nwonderful acting\t1\n")
    argv = ["eval", "--checkpoint", str(sst2_run / "checkpoint"), "--data", str(data), "--split", "dev"]
    code, out, _ = run_cli([*argv, "--output", str(tmp_path / "scores.json")], capsys)
    assert code == 0 and json.loads(out)["accuracy"] is None
    json.loads((tmp_path / "scores.json").read_text(), parse_constant=lambda name: pytest.fail(name))


def review_task():
    """csv-classification as trained with text_field 'review': it keeps that input as its field 'text'."""
    from ptuning.tasks.registry import get_task

    return get_task("csv-classification", text_field="review", label_names=["neg", "pos"])


def test_text_lines_are_read_as_a_csv_tasks_own_text_field() -> None:
    """Text lines were keyed by the internal 'text' and refused: "no column 'review' (the text input)"."""
    lines = Table("<stdin>", ["text"], [{"text": "great movie"}, {"text": "dull"}], ["line 1", "line 2"])
    examples = examples_from_records(review_task(), lines, "txt")
    assert [example["text"] for example in examples] == ["great movie", "dull"]
    assert [example["label"] for example in examples] == [None, None]


def test_a_jsonl_value_error_names_a_csv_tasks_own_text_field() -> None:
    """It named the task's internal field 'text', which the input does not have."""
    from ptuning.tasks.base import DataError

    rows = [{"review": "great movie"}, {"review": 3}]
    with pytest.raises(DataError, match=r"^in.jsonl, line 2: field 'review' should be text, found int 3$"):
        examples_from_records(
            review_task(), Table("in.jsonl", ["review"], rows, ["line 1", "line 2"]), "jsonl"
        )
