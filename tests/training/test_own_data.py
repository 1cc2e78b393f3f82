"""``ptuning train / eval / predict`` on a user's own data: label sets learned from train and kept in the
checkpoint, folders without a dev file, one data file, ids and fractional epochs as they were."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from training_tiny import run_cli, train_args

from ptuning.tasks.base import DataError
from ptuning.training.predict import run_dev_defaults

WORDS = {"sport": ["goal", "match", "team", "score"], "tech": ["chip", "code", "robot", "data"]}
WORDS["art"] = ["paint", "poem", "song", "film"]


def write_csv(path: Path, count: int, seed: int, extra: str = "") -> None:
    rng = random.Random(seed)
    rows = ["text,label"]
    for index in range(count):
        label = list(WORDS)[index % 3]
        rows.append(f"{rng.choice(WORDS[label])} {rng.choice(WORDS[label])},{label}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n" + extra)


def write_ner(path: Path) -> None:
    sentences = [
        [("EU", "B-ORG"), ("rejects", "O"), ("Paris", "B-LOC")],
        [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("visits", "O"), ("London", "B-LOC")],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")


def summary_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "summary.json").read_text())


def labels_of(output_dir: Path) -> list[str]:
    config = json.loads((output_dir / "checkpoint" / "prompt_config.json").read_text())
    (entry,) = config["tasks"].values()
    return entry["head"]["label_names"]


def test_csv_classification_learns_labels_from_train_and_reuses_them_from_the_checkpoint(
    tiny_bert, tmp_path, capsys
) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 24, 0)
    write_csv(data / "dev.csv", 9, 1)
    output = tmp_path / "run"
    argv = train_args(tiny_bert, str(data), output, "--max-steps", "1", task="csv-classification")
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert labels_of(output) == ["art", "sport", "tech"]
    plan = summary_of(output)["data_plan"]
    assert (plan["train"], plan["dev"], plan["test"]) == ("train", "dev", None)  # no test.csv: a note
    assert any("no test.csv" in note for note in plan["notes"])

    (data / "train.csv").unlink()  # eval and predict use the checkpoint's labels, never train again
    checkpoint = str(output / "checkpoint")
    code, out, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", str(data), "--split", "dev"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["examples"] == 9
    code, _, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", str(data), "--split", "dev-from-train"], capsys
    )
    assert code == 2 and "records no such run" in err  # it had a dev file: nothing was held out
    inputs = tmp_path / "in.txt"
    inputs.write_text("goal\u2028match team\r\nnew\u0085chip\n", encoding="utf-8")
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, "--input", str(inputs)], capsys)
    assert code == 0, err
    predictions = [json.loads(line) for line in out.strip("\n").split("\n")]
    assert [p["id"] for p in predictions] == [0, 1]
    assert all(set(p["probabilities"]) == {"art", "sport", "tech"} for p in predictions)


def test_a_dev_label_unseen_in_train_is_an_error_naming_file_and_line(tiny_bert, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 12, 0)
    write_csv(data / "dev.csv", 3, 1, extra="a new tune,music\n")
    argv = train_args(tiny_bert, str(data), tmp_path / "run", "--max-steps", "1", task="csv-classification")
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert "dev.csv, line 5: label 'music' is not one of the labels seen in training" in err


def test_ner_generic_learns_types_from_train_finds_valid_txt_and_predict_keeps_id_types(
    tiny_bert, tmp_path, capsys
) -> None:
    data = tmp_path / "data"
    write_ner(data / "train.txt")
    write_ner(data / "valid.txt")
    write_ner(data / "test.txt")
    output = tmp_path / "run"
    code, _, err = run_cli(
        train_args(tiny_bert, str(data), output, "--max-steps", "1", task="ner-generic"), capsys
    )
    assert code == 0, err
    assert labels_of(output) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert summary_of(output)["data"]["dev"]["examples"] == 2
    (data / "train.txt").unlink()  # the checkpoint's entity types are enough to score dev
    checkpoint = str(output / "checkpoint")
    code, out, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", str(data), "--split", "dev"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["examples"] == 2
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": 7, "tokens": ["EU", "rejects"]}\n{"id": "s2", "tokens": ["Paris\u2028x"]}\n')
    code, out, err = run_cli(
        ["predict", "--checkpoint", str(output / "checkpoint"), "--input", str(inputs)], capsys
    )
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.strip("\n").split("\n")] == [7, "s2"]


def test_train_and_test_only_asks_for_a_dev_choice_and_dev_from_train_holds_out_a_seeded_share(
    tiny_bert, tmp_path, capsys
) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 24, 0)
    write_csv(data / "test.csv", 6, 2)
    output = tmp_path / "run"
    argv = train_args(tiny_bert, str(data), output, "--max-steps", "1", task="csv-classification")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "no dev file" in err and "--dev-from-train" in err and "--dev-split none" in err
    code, _, err = run_cli([*argv, "--dev-from-train", "0.25"], capsys)
    assert code == 0, err
    summary = summary_of(output)
    assert summary["data_plan"]["dev_from_train"] == {
        "fraction": 0.25,
        "seed": 0,
        "train_examples": 18,
        "dev_examples": 6,
        "source_examples": 24,
    }
    assert summary["data"]["train"]["examples"] == 18 and summary["data"]["dev-from-train"]["examples"] == 6
    assert summary["dev"] is not None and summary["test"] is not None
    report = (output / "summary.md").read_text()
    assert "| dev held out of train | 6 of 24 examples (fraction 0.25, seed 0) |" in report

    # eval scores the same held-out share (no split of the folder could), whatever the checkpoint's folder
    evaluate = [
        "eval",
        "--checkpoint",
        str(output / "checkpoint"),
        "--data",
        str(data),
        "--split",
        "dev-from-train",
    ]
    code, out, err = run_cli([*evaluate, "--batch-size", "8"], capsys)
    assert code == 0, err
    scored = json.loads(out)
    assert scored["examples"] == 6 and scored["accuracy"] == summary["dev"]["accuracy"]


def test_a_folder_in_another_layout_is_named_by_its_missing_train_file_not_by_dev(
    tiny_bert, tmp_path, capsys
) -> None:
    # JSONL files where csv-classification looks for CSV: the error must name train.csv and what the folder
    # holds, not "no dev file" (whose --dev-from-train remedy would then fail on train.csv)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.jsonl", "dev.jsonl"):
        (data / name).write_text('{"sentence": "fine", "label": "1"}\n')
    argv = train_args(tiny_bert, str(data), tmp_path / "run", "--max-steps", "1", task="csv-classification")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "no dev file" not in err
    assert f"{data / 'train.csv'}: file not found" in err and "['dev.jsonl', 'train.jsonl']" in err


def test_a_missing_train_file_names_the_train_splits_the_folder_does_hold(tmp_path) -> None:
    from ptuning.tasks.base import DataError
    from ptuning.tasks.registry import get_task
    from ptuning.training.data import check_train_file

    (tmp_path / "val.jsonl").write_text("{}\n")  # BoolQ as shipped here: no train.jsonl
    with pytest.raises(
        DataError, match=r"train\.jsonl: file not found.*the train splits \['train-from-val'\]"
    ):
        check_train_file(get_task("boolq"), str(tmp_path), "train")
    check_train_file(get_task("boolq"), str(tmp_path), "train-from-val")


def test_a_dev_split_and_dev_from_train_together_are_refused(tiny_bert, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 12, 0)
    write_csv(data / "dev.csv", 3, 1)
    argv = train_args(tiny_bert, str(data), tmp_path / "run", task="csv-classification")
    code, _, err = run_cli([*argv, "--dev-split", "dev", "--dev-from-train", "0.2"], capsys)
    assert code == 2 and "dev split 'dev' and --dev-from-train 0.2 both name a dev split" in err


def test_dev_split_none_and_dev_from_train_together_are_refused(tiny_bert, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 12, 0)
    argv = train_args(tiny_bert, str(data), tmp_path / "run", task="csv-classification")
    code, _, err = run_cli([*argv, "--dev-split", "none", "--dev-from-train", "0.2"], capsys)
    assert code == 2 and "dev split 'none' (train without dev) and --dev-from-train 0.2" in err
    assert not (tmp_path / "run").exists()


def test_dev_split_none_trains_and_keeps_the_last_checkpoint(tiny_bert, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 16, 0)
    output = tmp_path / "run"
    argv = train_args(tiny_bert, str(data), output, "--epochs", "2", task="csv-classification")
    code, _, err = run_cli([*argv, "--dev-split", "none", "--test-split", "none"], capsys)
    assert code == 0, err
    summary = summary_of(output)
    assert summary["dev"] is None and summary["best_epoch"] == 2.0
    assert summary["data_plan"]["checkpoint"] == "last evaluation (no dev split)"
    assert (output / "checkpoint" / "prompt_config.json").is_file()
    assert "| checkpoint kept | last evaluation (no dev split) |" in (output / "summary.md").read_text()


@pytest.mark.parametrize("task", ["squad", "conll2003"])
def test_one_data_file_is_the_train_split_for_every_task(
    tiny_bert, squad_dir, conll_dir, tmp_path, capsys, task
) -> None:
    file = Path(squad_dir) / "train-v1.1.json" if task == "squad" else Path(conll_dir) / "train.txt"
    output = tmp_path / "run"
    argv = train_args(tiny_bert, str(file), output, "--max-steps", "1", "--max-length", "256", task=task)
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    plan = summary_of(output)["data_plan"]
    assert (plan["dev"], plan["test"]) == (None, None)
    assert any("is one file, read as the train split" in note for note in plan["notes"])


@pytest.mark.parametrize("role", ["dev", "test"])
def test_a_split_named_on_one_data_file_that_would_read_train_is_refused(tiny_bert, tmp_path, capsys, role):
    """One file is read whole for every split name: --dev-split dev scored the training rows as dev."""
    write_csv(tmp_path / "d1" / "train.csv", 12, 0)
    argv = train_args(
        tiny_bert, str(tmp_path / "d1" / "train.csv"), tmp_path / "run", task="csv-classification"
    )
    code, _, err = run_cli([*argv, f"--{role}-split", role], capsys)
    assert code == 2 and "Traceback" not in err and not (tmp_path / "run").exists()
    assert (
        f"train.csv is one file, which --{role}-split {role} would read too (in a folder it reads {role}.csv"
        in err
    )


def test_article_splits_of_one_squad_file_still_pass(tmp_path) -> None:
    """Splits that select parts of one file are not the same rows as their train split."""
    from ptuning.tasks.qa import SquadTask
    from ptuning.training.data import check_one_file_splits

    (tmp_path / "part1.json").write_text("{}")
    file = str(tmp_path / "part1.json")
    check_one_file_splits(SquadTask(), file, "train-articles", {"dev": "eval-articles", "test": None})
    with pytest.raises(DataError, match="would score the training rows"):
        check_one_file_splits(SquadTask(), file, "train", {"dev": "eval-articles"})


def test_max_steps_1_records_the_fraction_of_an_epoch(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    output = tmp_path / "run"  # 32 train examples: 4 batches of 8, one of them trained
    code, _, err = run_cli(train_args(tiny_bert, sst2_dir, output, "--max-steps", "1"), capsys)
    assert code == 0, err
    summary = summary_of(output)
    assert summary["history"][0]["epoch"] == 0.25 and summary["best_epoch"] == 0.25
    assert "| 0.25 |" in (output / "summary.md").read_text()


def test_predict_gives_one_prediction_per_line_despite_unicode_line_separators(
    sst2_run, tmp_path, capsys
) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_text("a lovely\u2028film\r\ndull\u0085mess\x0bindeed\n", encoding="utf-8")
    checkpoint = str(sst2_run / "checkpoint")
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, "--input", str(inputs)], capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.strip("\n").split("\n")] == [0, 1]
    records = tmp_path / "in.jsonl"
    records.write_text('{"id": 3, "sentence": "great\u2028fun"}\n{"id": "b", "sentence": "boring"}\n')
    code, out, err = run_cli(["predict", "--checkpoint", checkpoint, "--input", str(records)], capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.strip("\n").split("\n")] == [3, "b"]


def test_ner_predict_keeps_integer_ids(tiny_bert, conll_dir, tmp_path, capsys) -> None:
    output = tmp_path / "run"
    argv = train_args(
        tiny_bert, conll_dir, output, "--max-steps", "1", "--test-split", "none", task="conll2003"
    )
    assert run_cli(argv, capsys)[0] == 0
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        '{"id": 7, "tokens": ["EU", "rejects"]}\n{"id": "s2", "tokens": ["Paris"]}\n{"tokens": ["x"]}\n'
    )
    code, out, err = run_cli(
        ["predict", "--checkpoint", str(output / "checkpoint"), "--input", str(inputs)], capsys
    )
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.strip("\n").split("\n")] == [7, "s2", 2]


def test_a_finetuning_checkpoint_is_model_safetensors_and_old_folders_still_load(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    output = tmp_path / "run"
    argv = train_args(tiny_bert, sst2_dir, output, "--max-steps", "1", "--method", "finetune")
    assert run_cli([*argv, "--test-split", "none"], capsys)[0] == 0
    checkpoint = output / "checkpoint"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.safetensors", "prompt_config.json"]
    inputs = tmp_path / "in.txt"
    inputs.write_text("great fun\n")
    code, new_out, err = run_cli(["predict", "--checkpoint", str(checkpoint), "--input", str(inputs)], capsys)
    assert code == 0, err
    # a folder written before the weights file was named by its content: prompt.safetensors, no weights_file
    (checkpoint / "model.safetensors").rename(checkpoint / "prompt.safetensors")
    config = json.loads((checkpoint / "prompt_config.json").read_text())
    del config["weights_file"]
    (checkpoint / "prompt_config.json").write_text(json.dumps(config))
    code, old_out, err = run_cli(["predict", "--checkpoint", str(checkpoint), "--input", str(inputs)], capsys)
    assert code == 0, err
    assert json.loads(old_out) == json.loads(new_out)


def test_multitask_training_takes_dev_split_none(tiny_bert, sst2_dir, tmp_path) -> None:
    from ptuning.training.config import TrainConfig
    from ptuning.training.multitask import train_multitask

    options = dict(model=tiny_bert, output_dir=str(tmp_path / "run"), prefix_length=4, batch_size=8)
    options.update(max_length=32, max_steps=2, dev_split="none", test_split="none", log_tensorboard=False)
    result = train_multitask(TrainConfig(**options), ["sst2"], {"sst2": sst2_dir})
    assert "sst2/dev" not in result.summary["data"] and "sst2/train" in result.summary["data"]
    assert (tmp_path / "run" / "checkpoint" / "prompt_config.json").is_file()


def test_multitask_training_holds_out_dev_from_each_tasks_train(tiny_bert, sst2_dir, tmp_path) -> None:
    from ptuning.training.config import TrainConfig
    from ptuning.training.multitask import train_multitask

    options = dict(model=tiny_bert, output_dir=str(tmp_path / "run"), prefix_length=4, batch_size=8)
    options.update(max_length=32, max_steps=1, dev_from_train=0.25, log_tensorboard=False)
    result = train_multitask(TrainConfig(**options), ["sst2"], {"sst2": sst2_dir})
    summary = result.summary
    assert summary["data"]["sst2/train"]["examples"] == 24
    assert summary["data"]["sst2/dev-from-train"]["examples"] == 8  # 0.25 of the 32 train examples
    assert "sst2/dev" not in summary["data"]
    held_out = summary["data_plan"]["sst2"]["dev_from_train"]
    assert (held_out["seed"], held_out["dev_examples"], held_out["source_examples"]) == (0, 8, 32)
    assert summary["dev"]["sst2"]["accuracy"] is not None


def test_multitask_training_on_one_data_file_has_no_dev_instead_of_scoring_train(
    tiny_bert, sst2_dir, tmp_path
) -> None:
    from ptuning.training.config import TrainConfig
    from ptuning.training.multitask import train_multitask

    options = dict(model=tiny_bert, output_dir=str(tmp_path / "run"), prefix_length=4, batch_size=8)
    options.update(max_length=32, max_steps=1, test_split="none", log_tensorboard=False)
    result = train_multitask(TrainConfig(**options), ["sst2"], {"sst2": str(Path(sst2_dir) / "train.tsv")})
    assert sorted(result.summary["data"]) == ["sst2/train"]


def test_a_train_split_of_another_name_is_where_labels_are_learned_and_required(
    tiny_bert, tmp_path, capsys
) -> None:
    """--train-split full: its labels (not a train.csv's beside it) are the label set, and its rows must be
    labelled (an unlabelled row used to reach the collate function mid-training)."""
    data = tmp_path / "data"
    write_csv(data / "full.csv", 24, 0)
    write_csv(data / "train.csv", 6, 2)  # another file, whose labels must not decide
    (data / "train.csv").write_text("text,label\ngoal team,sport\n")
    write_csv(data / "dev.csv", 9, 1)
    options = json.dumps({"splits": {"full": "full.csv", "dev": "dev.csv"}})
    argv = train_args(tiny_bert, str(data), tmp_path / "run", "--max-steps", "1", task="csv-classification")
    argv += ["--train-split", "full", "--task-options", options]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert labels_of(tmp_path / "run") == ["art", "sport", "tech"]

    write_csv(data / "full.csv", 24, 0, extra="so so,\n")
    labelled = json.dumps(
        {"splits": {"full": "full.csv", "dev": "dev.csv"}, "label_names": ["art", "sport", "tech"]}
    )
    argv[argv.index(options)] = labelled
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "full.csv, line 26: no label" in err


def test_a_dev_split_without_any_label_is_refused_before_training(tiny_bert, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    write_csv(data / "train.csv", 12, 0)
    (data / "dev.csv").write_text("text\ngoal match\npaint poem\n")
    output = tmp_path / "run"
    code, _, err = run_cli(train_args(tiny_bert, str(data), output, task="csv-classification"), capsys)
    assert code == 2 and "none of the 2 examples of the dev split 'dev'" in err and "--dev-split none" in err
    assert not (output / "training_state").exists()  # refused before a whole epoch was trained


@pytest.mark.parametrize("label", ["NaN", "null"])
def test_a_missing_label_written_as_nan_is_no_label_not_a_class(tiny_bert, tmp_path, capsys, label) -> None:
    """pandas writes a gap in a labelled column as NaN (and json.dumps writes that as a bare NaN)."""
    data = tmp_path / "data"
    lines = [json.dumps({"text": "goal match", "label": 1}), json.dumps({"text": "paint poem", "label": 0})]
    (data).mkdir()
    (data / "train.jsonl").write_text("\n".join([*lines * 4, f'{{"text": "meh", "label": {label}}}']) + "\n")
    argv = train_args(tiny_bert, str(data / "train.jsonl"), tmp_path / "run", "--max-steps", "1")
    code, _, err = run_cli(argv + ["--task", "csv-classification", "--dev-split", "none"], capsys)
    assert code == 2 and "train.jsonl, line 9: no label" in err


def test_numeric_label_names_name_the_labels_the_files_hold(tiny_bert, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        json.dumps({"text": t, "label": label}) for t, label in (("goal match", 1), ("paint poem", 0))
    ] * 4
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    options = json.dumps({"label_names": [0, 1]})
    argv = train_args(tiny_bert, str(data / "train.jsonl"), tmp_path / "run", "--max-steps", "1")
    argv += ["--task", "csv-classification", "--dev-split", "none", "--task-options", options]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert labels_of(tmp_path / "run") == ["0", "1"]


def test_eval_without_split_scores_the_dev_the_run_scored(tiny_bert, tmp_path, capsys) -> None:
    """A run scored dev held out of train, cut by --max-eval-samples: eval with no --split scores the same
    examples (the run's config.json), so it reproduces the run's dev score; --split names another."""
    data = tmp_path / "data"
    write_csv(data / "train.csv", 24, 0)
    write_csv(data / "dev.csv", 9, 1)
    output = tmp_path / "run"
    argv = train_args(tiny_bert, str(data), output, "--max-steps", "2", task="csv-classification")
    code, _, err = run_cli([*argv, "--dev-from-train", "0.25", "--max-eval-samples", "5"], capsys)
    assert code == 0, err
    summary = summary_of(output)
    evaluate = ["eval", "--checkpoint", str(output / "checkpoint"), "--data", str(data)]
    code, out, err = run_cli(evaluate, capsys)
    assert code == 0, err
    scored = json.loads(out)
    assert (scored["split"], scored["examples"]) == ("dev-from-train", 5)
    assert scored["accuracy"] == summary["dev"]["accuracy"]
    assert (
        "note: scoring split dev-from-train, the first 5 examples (--max-eval-samples): as the training"
        in err
    )
    code, out, _ = run_cli([*evaluate, "--split", "dev"], capsys)
    assert code == 0 and (json.loads(out)["split"], json.loads(out)["examples"]) == ("dev", 9)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ({}, ("dev", None)),
        ({"dev_split": "none"}, ("dev", None)),
        ({"dev_split": "validation_matched"}, ("validation_matched", None)),
        ({"task_splits": {"boolq": "train-from-val:eval-from-val"}}, ("eval-from-val", None)),
        ({"task_splits": {"wic": "a:b"}, "max_eval_samples": 7}, ("dev", 7)),
        ({"dev_from_train": 0.1, "train_split": "train-from-val"}, ("dev-from-train-from-val", None)),
    ],
)
def test_the_run_config_names_the_dev_eval_scores_by_default(run, expected, tmp_path) -> None:
    from ptuning.training.predict import run_dev_defaults

    (tmp_path / "config.json").write_text(json.dumps(run))
    split, limit, source = run_dev_defaults(tmp_path / "checkpoint", "boolq")
    assert (split, limit) == expected and (source is None) == (expected == ("dev", None))


def test_a_chosen_sample_limit_wins_and_the_note_does_not_claim_the_runs(tmp_path) -> None:
    from ptuning.training.predict import run_dev_defaults

    (tmp_path / "config.json").write_text(json.dumps({"dev_split": "val", "max_eval_samples": 32}))
    split, limit, source = run_dev_defaults(tmp_path / "checkpoint", "boolq", chosen_limit=8)
    assert (split, limit) == ("val", 8) and "split val" in source and "--max-eval-samples" not in source
    (tmp_path / "config.json").write_text(json.dumps({"max_eval_samples": 32}))
    assert run_dev_defaults(tmp_path / "checkpoint", "boolq", chosen_limit=8) == ("dev", 8, None)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        # the task's own dev wins over the run-wide --dev-split
        ({"task_splits": {"boolq": "a:b"}, "dev_split": "val"}, "b"),
        # an empty DEV part (multitask.py writes "TRAIN:") falls back to the run-wide --dev-split
        ({"task_splits": {"boolq": "a:"}, "dev_split": "val"}, "val"),
        ({"task_splits": {"boolq": "a"}, "dev_split": "val"}, "val"),
        # the held-out dev comes from the task's own train split, not the run-wide --train-split
        ({"task_splits": {"boolq": "a"}, "train_split": "t", "dev_from_train": 0.1}, "dev-from-a"),
    ],
)
def test_the_tasks_own_splits_take_precedence_as_in_training(run, expected, tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(run))
    split, limit, source = run_dev_defaults(tmp_path / "checkpoint", "boolq")
    assert (split, limit) == (expected, None) and f"split {expected}" in source


def test_eval_without_split_keeps_the_users_max_samples(sst2_run, sst2_dir, capsys) -> None:
    checkpoint = str(sst2_run / "checkpoint")
    code, out, err = run_cli(
        ["eval", "--checkpoint", checkpoint, "--data", sst2_dir, "--max-samples", "3"], capsys
    )
    assert code == 0, err
    assert (json.loads(out)["split"], json.loads(out)["examples"]) == ("dev", 3)


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]"])
def test_a_damaged_run_config_beside_the_checkpoint_is_said_not_silently_ignored(tmp_path, damage) -> None:
    """eval fell back to split dev, no sample limit and the default batch without a word."""
    from ptuning.tasks.rebuild import RunConfigNote, training_run_config

    (tmp_path / "checkpoint").mkdir()
    assert training_run_config(tmp_path / "checkpoint") == {}  # no run config: nothing to say
    (tmp_path / "config.json").write_text(damage)
    with pytest.warns(RunConfigNote, match=r"config\.json: the training run's options could not be read"):
        assert training_run_config(tmp_path / "checkpoint") == {}
