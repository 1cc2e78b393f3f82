"""``ptuning train / eval / predict / tasks``: options and their layering, the files a run leaves, and bad
input answered by exit code 2 with one line on stderr."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import save_tiny_bert
from training_tiny import run_cli, subprocess_env, train_args

from ptuning.cli import build_parser, config_from_args


def test_train_help_shows_examples_and_every_option(capsys) -> None:
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    assert "examples:" in out and "ptuning train --preset sst2-minilm" in out
    for flag in (
        "--prefix-length",
        "--learning-rate",
        "--data",
        "--config",
        "--seeds",
        "--resume",
        "--method",
    ):
        assert flag in out


def test_tasks_lists_tasks_and_presets(capsys) -> None:
    code, out, _ = run_cli(["tasks"], capsys)
    assert code == 0
    assert "sst2" in out and "conll2003" in out and "squad" in out
    assert "sst2-minilm" in out and "conll2003-roberta-large" in out


def test_options_layer_preset_then_file_then_flags(tmp_path, tiny_bert, sst2_dir) -> None:
    config_file = tmp_path / "run.yaml"
    # YAML reads 1e-2 as text; it must still arrive as a number
    config_file.write_text("learning_rate: 1e-2\nprefix_length: 4\nbatch_size: 8\n")
    args = build_parser().parse_args(
        ["train", "--preset", "sst2-minilm", "--config", str(config_file), "--prefix-length", "6"]
        + ["--model", tiny_bert, "--data", sst2_dir]
    )
    config = config_from_args(args)
    assert config.task == "sst2" and config.max_length == 64  # preset
    assert config.learning_rate == 0.01 and config.batch_size == 8  # file over preset
    assert config.prefix_length == 6 and config.model == tiny_bert  # flags over both


def test_train_writes_checkpoint_summaries_and_curves(sst2_run) -> None:
    for name in (
        "checkpoint/prompt.safetensors",
        "summary.json",
        "summary.md",
        "curves.png",
        "training_state",
    ):
        assert (sst2_run / name).exists(), name
    summary = json.loads((sst2_run / "summary.json").read_text())
    assert (sst2_run / "curves.png").read_bytes().startswith(b"\x89PNG")
    text = (sst2_run / "summary.md").read_text()
    assert f"{summary['dev']['accuracy']:.4f}" in text and "## History" in text


def test_eval_scores_the_checkpoint_like_training_did(sst2_run, sst2_dir, capsys) -> None:
    code, out, _ = run_cli(["eval", "--checkpoint", str(sst2_run / "checkpoint"), "--data", sst2_dir], capsys)
    assert code == 0
    scores = json.loads(out)
    summary = json.loads((sst2_run / "summary.json").read_text())
    assert scores["examples"] == 16 and scores["accuracy"] == summary["dev"]["accuracy"]


def test_eval_takes_a_hub_dataset_id_as_train_does(sst2_run, capsys, monkeypatch) -> None:
    """--data glue trains (the task's reader loads hub ids); eval refused it as 'no such data folder' before
    the reader ran. Offline here, so the reader's own message says what it tried."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(["eval", "--checkpoint", str(sst2_run / "checkpoint"), "--data", "glue"], capsys)
    assert code == 2 and "taken as a Hugging Face hub dataset id, but the hub is offline" in err, err


def test_eval_and_predict_count_the_inputs_they_cut(sst2_run, sst2_dir, tmp_path, capsys) -> None:
    """Nothing is cut silently: a --max-length shorter than the inputs is a count in eval's scores and a
    note on stderr for both commands."""
    checkpoint = str(sst2_run / "checkpoint")
    code, out, err = run_cli(["eval", "--checkpoint", checkpoint, "--data", sst2_dir], capsys)
    assert code == 0 and json.loads(out)["truncated"] == 0 and "truncated" not in err
    code, out, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", sst2_dir, "--max-length", "6"], capsys
    )
    scores = json.loads(out)
    assert code == 0 and 0 < scores["truncated"] <= scores["examples"] == 16
    assert f"{scores['truncated']} of 16 examples" in err and "max_length=6" in err
    source = tmp_path / "in.txt"
    source.write_text("ok\nthis sentence is surely longer than six tokens\n")
    code, out, err = run_cli(
        ["predict", "--checkpoint", checkpoint, "--input", str(source), "--max-length", "6"], capsys
    )
    assert code == 0 and len(out.splitlines()) == 2 and "1 of 2 examples" in err


def eval_and_predict(sst2_run, sst2_dir, tmp_path) -> list[list[str]]:
    """``eval`` and ``predict`` (one input line) on the run's checkpoint, to which a test adds flags."""
    source = tmp_path / "in.txt"
    source.write_text("fine\n")
    checkpoint = ["--checkpoint", str(sst2_run / "checkpoint")]
    return [["eval", "--data", sst2_dir, *checkpoint], ["predict", "--input", str(source), *checkpoint]]


def test_an_output_path_that_cannot_be_written_is_refused_before_the_work(
    sst2_run, sst2_dir, tmp_path, capsys
):
    commands = eval_and_predict(sst2_run, sst2_dir, tmp_path)
    for command in commands:
        code, _, err = run_cli([*command, "--output", str(tmp_path)], capsys)
        assert code == 2 and f"--output {tmp_path} is a folder" in err
        code, _, err = run_cli([*command, "--output", str(tmp_path / "no" / "x")], capsys)
        assert code == 2 and f"folder {tmp_path / 'no'} does not exist" in err
    code, _, _ = run_cli([*commands[1], "--output", str(tmp_path / "p.jsonl")], capsys)
    assert code == 0 and len((tmp_path / "p.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "p.jsonl"]  # no staging file left


def test_a_model_folder_that_is_not_one_is_a_one_line_error_for_eval_and_predict(
    sst2_run, sst2_dir, tmp_path, capsys
):
    """--model given a checkpoint or data folder: the tokenizer loader's ValueError was a traceback, exit 1."""
    checkpoint = str(sst2_run / "checkpoint")
    for command in eval_and_predict(sst2_run, sst2_dir, tmp_path):
        for wrong in (checkpoint, sst2_dir):
            code, _, err = run_cli([*command, "--model", wrong], capsys)
            assert code == 2 and f"model folder {wrong} holds no config.json" in err, err
        code, _, err = run_cli([*command, "--model", str(sst2_run)], capsys)
        assert code == 2 and f"{sst2_run} is not a model folder transformers can load" in err, err


def stdin(data: bytes) -> io.TextIOWrapper:
    """A standard input holding these bytes (predict reads its bytes, as it reads a file's)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def test_stdin_is_decoded_as_a_file_is(sst2_run, capsys, monkeypatch) -> None:
    """Bytes that are not UTF-8 reached the tokenizer (a traceback), and a BOM was read as text."""
    argv = ["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", "-"]
    monkeypatch.setattr(sys, "stdin", stdin(b"fine\ncaf\xe9 au lait\n"))
    code, _, err = run_cli(argv, capsys)
    assert (
        code == 2 and "<stdin>, line 2: bytes b'\\xe9' at byte offset 8 (column 4) are not valid UTF-8" in err
    )
    monkeypatch.setattr(sys, "stdin", stdin(b'\xef\xbb\xbf{"sentence": "fine"}\n'))
    code, out, _ = run_cli([*argv, "--format", "jsonl"], capsys)
    assert code == 0 and json.loads(out)["id"] == 0


def test_predict_reads_text_lines_from_stdin(sst2_run, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", stdin(b"great fun indeed\n\nawful acting really\n"))
    code, out, _ = run_cli(["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", "-"], capsys)
    assert code == 0
    predictions = [json.loads(line) for line in out.splitlines()]
    assert [p["id"] for p in predictions] == [0, 1]  # the blank line is no input
    for prediction in predictions:
        assert prediction["label"] in ("negative", "positive")
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)


def test_predict_reads_jsonl_with_the_tasks_fields(sst2_run, tmp_path, capsys) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "sentence": "superb"}\n{"id": "b", "sentence": "terrible"}\n')
    output = tmp_path / "out.jsonl"
    argv = ["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", str(source)]
    code, _, err = run_cli([*argv, "--output", str(output)], capsys)
    assert code == 0 and "wrote 2 predictions" in err
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["a", "b"]


BAD_TRAIN_INPUTS = {
    "unknown task": (["--task", "sst3"], "unknown task 'sst3'; did you mean 'sst2'?"),
    "unknown method": (["--method", "lora"], "--method must be one of ptuning-v2, prefix-mlp"),
    "unknown preset": (["--preset", "sst2-minlm"], "did you mean 'sst2-minilm'?"),
    "prefix length 0": (["--prefix-length", "0"], "--prefix-length must be a positive integer; got '0'"),
    "learning rate 0": (["--learning-rate", "0"], "--learning-rate must be > 0"),
    "negative learning rate": (["--learning-rate", "-0.001"], "--learning-rate must be > 0"),
    "not a number": (["--epochs", "three"], "--epochs must be a number (float); got 'three'"),
    "missing split": (["--dev-split", "nope"], "has no split 'nope'"),
    "model folder without a model": (["--model", "."], "holds no config.json"),
    "task option the task lacks": (["--task-options", '{"nope": 1}'], "unexpected keyword argument 'nope'"),
}


@pytest.mark.parametrize("extra, expected", BAD_TRAIN_INPUTS.values(), ids=BAD_TRAIN_INPUTS.keys())
def test_bad_train_input_is_one_line_and_exit_code_2(extra, expected, tiny_bert, sst2_dir, tmp_path, capsys):
    code, _, err = run_cli(train_args(tiny_bert, sst2_dir, tmp_path / "run", *extra), capsys)
    assert code == 2
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_missing_data_folder_is_one_line(tiny_bert, tmp_path, capsys) -> None:
    code, _, err = run_cli(train_args(tiny_bert, str(tmp_path / "nowhere"), tmp_path / "run"), capsys)
    assert code == 2 and err.count("\n") == 1 and "nowhere" in err


def test_unknown_config_key_is_named(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("prefix_lenght: 8\n")
    code, _, err = run_cli(
        train_args(tiny_bert, sst2_dir, tmp_path / "run", "--config", str(config_file)), capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert "unknown option 'prefix_lenght'; did you mean 'prefix_length'?" in err


def test_checkpoint_on_another_base_model_is_refused(sst2_run, tmp_path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("great fun\n")
    other_weights = save_tiny_bert(tmp_path / "other", seed=1)  # other dropout alone is the same base
    argv = ["predict", "--checkpoint", str(sst2_run / "checkpoint"), "--input", str(source)]
    code, _, err = run_cli([*argv, "--model", other_weights], capsys)
    assert code == 2 and err.count("\n") == 1 and "was trained on" in err


@pytest.mark.parametrize("module", ["ptuning", "ptuning.cli"])
def test_console_entry_point_exits_2_without_traceback(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "train", "--preset", "no-such-preset", "--data", "x"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ptuning train: error: unknown preset 'no-such-preset' (`ptuning tasks` lists the presets)"
    ]


def test_seeds_run_to_their_own_folders_and_report_mean_and_std(tiny_bert, sst2_dir, tmp_path, capsys):
    output_dir = tmp_path / "seeds"
    argv = train_args(tiny_bert, sst2_dir, output_dir, "--seeds", "1,2", "--max-steps", "2")
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "dev accuracy:" in out
    aggregate = json.loads((output_dir / "seeds.json").read_text())
    assert aggregate["seeds"] == [1, 2]
    values = aggregate["dev"]["accuracy"]["values"]
    for seed, value in zip((1, 2), values, strict=True):
        summary = json.loads((output_dir / f"seed-{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["dev"]["accuracy"] == value
    assert "± " in (output_dir / "seeds.md").read_text()


def test_an_unlabelled_test_split_cut_by_max_eval_samples_is_still_not_scored(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    data = tmp_path / "sst2"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text((Path(sst2_dir) / name).read_text())
    (data / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\ta film {i}\n" for i in range(12)))
    args = train_args(tiny_bert, str(data), tmp_path / "run", "--epochs", "1", "--max-eval-samples", "4")
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "test split 'test' is unlabelled: not scored" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"] is None and summary["data"]["dev"]["examples"] == 4  # dev scored, cut to 4


def test_ptuning_notes_print_as_one_note_line_and_other_warnings_as_python_does(tmp_path) -> None:
    """A note from ptuning (here a bf16 backbone this CPU emulates) printed as Python's two-line warning, naming
    a file and line inside ptuning and the source line there; the CLI's other notes are one ``note:`` line.
    Only while a command runs: a program that called ``main`` shows its later warnings as Python does."""
    script = (
        "import warnings\n"
        "from ptuning import cli\n"
        "from ptuning.core.precision import EmulatedPrecisionNote\n"
        "def command(args):\n"
        "    warnings.warn(EmulatedPrecisionNote('backbone dtype bf16 is emulated here'))\n"
        "    warnings.warn('a warning from elsewhere')\n"
        "    return 0\n"
        "cli.cmd_tasks = command\n"
        "assert cli.main(['tasks']) == 0\n"
        "warnings.warn(EmulatedPrecisionNote('after the command'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "note: backbone dtype bf16 is emulated here" in lines
    assert any(line.endswith("UserWarning: a warning from elsewhere") for line in lines)
    assert any(line.endswith("EmulatedPrecisionNote: after the command") for line in lines)
    assert sum("EmulatedPrecisionNote" in line for line in lines) == 1
