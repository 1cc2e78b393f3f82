"""Fault tolerance: a training process killed with SIGKILL mid-epoch, continued with ``--resume``, ends with
bit-identical prefix weights and the same metrics as a run that was never interrupted.

The kill is deterministic: a wrapper around the CLI sends SIGKILL to its own process when the training state
is about to be saved for the third time (update 3 of 4 in epoch 1 of 2), so update 3 is done but never
saved, exactly as if the machine had died there. Dropout is on (prefix, head and the backbone's own), so the
resumed run must also restore every random state to match.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_tiny import run_cli, save_tiny_bert, subprocess_env, train_args

from ptuning.cli import main
from ptuning.training import engine
from ptuning.training.config import TrainConfig
from ptuning.training.state import option_changes

KILL_AT_SAVE = 3
WRAPPER = f"""
import os, signal, sys
from ptuning.training import trainer
from ptuning.cli import main

original, calls = trainer.save_training_state, [0]

def save_or_die(*args, **kwargs):
    calls[0] += 1
    if calls[0] == {KILL_AT_SAVE}:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

trainer.save_training_state = save_or_die
sys.exit(main(sys.argv[1:]))
"""


def run_args(tiny_bert: str, sst2_dir: str, output_dir: Path) -> list[str]:
    return train_args(
        tiny_bert, sst2_dir, output_dir, "--epochs", "2", "--save-every-steps", "1", "--seed", "7"
    )


def comparable(summary: dict) -> dict:
    """The summary without wall-clock figures and paths."""
    drop = ("wall_seconds", "train_examples_per_second", "checkpoint")
    return {k: v for k, v in summary.items() if k not in drop}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_bert, sst2_dir, tmp_path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    assert main(run_args(tiny_bert, sst2_dir, reference_dir)) == 0

    wrapper = tmp_path / "kill_wrapper.py"
    wrapper.write_text(WRAPPER)
    # as many threads as this process: CPU kernels sum in a thread-count-dependent order
    env = {**subprocess_env(), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(
        [sys.executable, str(wrapper), *run_args(tiny_bert, sst2_dir, killed_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    progress = json.loads((killed_dir / "training_state" / "state.json").read_text())["progress"]
    assert (progress["epoch"], progress["batch_in_epoch"], progress["update"]) == (0, 2, 2)  # mid-epoch
    assert not (killed_dir / "summary.json").exists()

    assert main([*run_args(tiny_bert, sst2_dir, killed_dir), "--resume"]) == 0

    expected = load_file(reference_dir / "checkpoint" / "prompt.safetensors")
    resumed = load_file(killed_dir / "checkpoint" / "prompt.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    final_expected = load_file(reference_dir / "training_state" / "state.safetensors")
    final_resumed = load_file(killed_dir / "training_state" / "state.safetensors")
    for name in final_expected:
        assert torch.equal(final_expected[name], final_resumed[name]), name
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference_dir, killed_dir)]
    assert comparable(summaries[0]) == comparable(summaries[1])
    # the throughput counts the examples trained before the kill too (they were counted from zero again)
    counted = [
        json.loads((d / "training_state" / "state.json").read_text())["progress"]["seen_examples"]
        for d in (reference_dir, killed_dir)
    ]
    assert counted[0] == counted[1] == 2 * len((Path(sst2_dir) / "train.tsv").read_text().splitlines()[1:])


def test_resume_of_a_finished_run_keeps_its_summary(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    """It rewrote summary.json with the no-op's figures: no throughput (nothing trained) and its own second."""
    output_dir, args = saved_run(tiny_bert, sst2_dir, tmp_path)
    written = (output_dir / "summary.json").read_bytes()
    assert json.loads(written)["train_examples_per_second"] is not None

    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert f"{output_dir}: the saved run had finished; its summary.json is kept" in out
    assert (output_dir / "summary.json").read_bytes() == written


def saved_run(tiny_bert: str, sst2_dir: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """A two-update run with a saved state, and the arguments that trained it."""
    output_dir = tmp_path / "run"
    args = train_args(tiny_bert, sst2_dir, output_dir, "--max-steps", "2", "--save-every-steps", "1")
    assert main(args) == 0
    return output_dir, args


def test_resume_refuses_a_run_saved_under_other_options_and_keeps_its_record(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    """A resumed half under another recipe would leave config.json describing only that half."""
    output_dir, args = saved_run(tiny_bert, sst2_dir, tmp_path)
    recorded = (output_dir / "config.json").read_text()

    code, _, err = run_cli([*args, "--resume", "--learning-rate", "1e-2", "--max-grad-norm", "0"], capsys)
    assert code == 2
    assert str(output_dir / "config.json") in err
    assert "learning_rate: 0.03 there, 0.01 now" in err and "max_grad_norm: 1.0 there, null now" in err
    assert (output_dir / "config.json").read_text() == recorded  # the record of the saved half is kept

    # how a run computes or reports may change: evaluation batch, state saving, logging; and how the folder
    # resumed is spelled (a restarted job's relative path, a trailing slash)
    spelled = [
        *args[: args.index("--output-dir") + 1],
        f"{output_dir}/",
        *args[args.index("--output-dir") + 2 :],
    ]
    code, _, err = run_cli(
        [*spelled, "--resume", "--eval-batch-size", "16", "--save-every-steps", "5"], capsys
    )
    assert code == 0, err


def test_a_new_run_in_a_used_folder_drops_the_previous_runs_state_and_summary(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """Otherwise a run with other options that dies before its first save would, with --resume, continue the
    previous run's weights and optimizer under its own options (and a sweep would reuse the old summary)."""
    output_dir, args = saved_run(tiny_bert, sst2_dir, tmp_path)
    assert (output_dir / "training_state").is_dir() and (output_dir / "summary.json").is_file()
    (output_dir / "tensorboard").mkdir()  # as an earlier run that logged would have left
    (output_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(b"")
    report = [output_dir / name for name in ("summary.md", "curves.png", "tensorboard")]
    assert all(path.exists() for path in report)

    recorded = (output_dir / "config.json").read_text()
    code, _, err = run_cli([*args, "--learning-rate", "1e-3", "--data", str(output_dir / "nowhere")], capsys)
    assert code == 2 and "nowhere" in err  # a command that fails before training changes nothing
    assert (output_dir / "config.json").read_text() == recorded and (output_dir / "training_state").is_dir()

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the new run is killed after config.json, before anything is saved

    monkeypatch.setattr(engine, "Trainer", dies)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--learning-rate", "1e-3"])
    monkeypatch.undo()
    assert json.loads((output_dir / "config.json").read_text())["learning_rate"] == 1e-3
    assert not (output_dir / "training_state").exists() and not (output_dir / "summary.json").exists()
    assert not any(path.exists() for path in report)  # no old numbers shown as this run's
    assert (
        "the previous run's training_state, summary.json, summary.md, curves.png, tensorboard, checkpoint, "
        "config.json moved to" in capsys.readouterr().out
    )
    kept = output_dir / "previous-run"  # nothing of the finished run is lost to the new one that died
    assert json.loads((kept / "config.json").read_text()) == json.loads(recorded)
    assert (kept / "summary.json").is_file() and (kept / "checkpoint" / "prompt_config.json").is_file()
    moved = ["training_state/state.json", "tensorboard/events.out.tfevents.1", "summary.md", "curves.png"]
    assert [name for name in moved if not (kept / name).is_file()] == []  # moved, each of them, not deleted
    code, out, err = run_cli([*args, "--learning-rate", "1e-3", "--resume"], capsys)
    assert code == 0, err
    # nothing of the old run to continue: it trains from the start (the paths it prints left out)
    assert "resumed after" not in out.replace(str(tmp_path.parent), "")


def test_resume_names_the_options_an_older_config_did_not_record(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    output_dir, args = saved_run(tiny_bert, sst2_dir, tmp_path)
    config_path = output_dir / "config.json"
    older = json.loads(config_path.read_text())
    del older["max_grad_norm"]  # as ptuning wrote it before the option existed
    config_path.write_text(json.dumps(older))

    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert "predates 1 option(s): the rest of it runs with max_grad_norm = 1.0" in out


def test_a_kept_finished_run_is_never_replaced_by_a_failed_attempt(tmp_path) -> None:
    """A finished run moved to previous-run; a retry that diverged (config and logs only) then replaced it, and
    the next fresh run deleted the finished run for good. Only an attempt that saved nothing is replaced."""

    def leave(files: dict[str, str]) -> None:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)

    finished = {"config.json": '{"run": 1}', "summary.json": "{}", "checkpoint/prompt_config.json": "{}"}
    leave(finished)
    engine.forget_previous_run(tmp_path, say=lambda message: None)
    for attempt in (2, 3):  # two retries that diverged before saving anything
        leave({"config.json": f'{{"run": {attempt}}}'})
        engine.forget_previous_run(tmp_path, say=lambda message: None)
    kept = tmp_path / "previous-run"
    assert (kept / "config.json").read_text() == '{"run": 1}' and (kept / "checkpoint").is_dir()
    assert (tmp_path / "previous-run-2" / "config.json").read_text() == '{"run": 3}'  # replaced attempt 2
    assert not (tmp_path / "previous-run-3").exists()


def test_resume_refuses_training_data_changed_since_the_state_was_saved(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    """Options alone were compared: a train file doubled in place resumed on a new schedule without a word."""
    data = tmp_path / "sst2"
    shutil.copytree(sst2_dir, data)
    output_dir, args = saved_run(tiny_bert, str(data), tmp_path)
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err  # the same data: it resumes
    lines = (data / "train.tsv").read_text().splitlines()
    (data / "train.tsv").write_text("\n".join(lines + lines[1:]) + "\n")
    state = (output_dir / "training_state" / "state.json").read_text()
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert (
        "--resume would continue the saved run on other training data (sst2: 32 examples there, 64 now" in err
    )
    assert (output_dir / "training_state" / "state.json").read_text() == state  # nothing saved over it


def flip_labels(split_file: Path) -> None:
    """Every label of an SST-2 file flipped: the same examples, the same count, other gold labels."""
    header, *rows = split_file.read_text().splitlines()
    flipped = [f"{1 - int(row[0])}{row[1:]}" for row in rows]
    split_file.write_text("\n".join([header, *flipped]) + "\n")


def forget_in_state(output_dir: Path, key: str) -> None:
    """The saved state as an older ptuning wrote it, without progress[key]."""
    path = output_dir / "training_state" / "state.json"
    meta = json.loads(path.read_text())
    del meta["progress"][key]
    path.write_text(json.dumps(meta))


def test_resume_refuses_dev_or_test_data_changed_since_the_state_was_saved(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    """Only train was compared: a resumed run scored epoch 2 on a changed dev file beside epoch 1's scores on
    the old one, and chose its best checkpoint across both."""
    data = tmp_path / "sst2"
    shutil.copytree(sst2_dir, data)
    output_dir, args = saved_run(tiny_bert, str(data), tmp_path)
    state = (output_dir / "training_state" / "state.json").read_text()
    for split in ("dev", "test"):
        original = (data / f"{split}.tsv").read_text()
        flip_labels(data / f"{split}.tsv")
        code, _, err = run_cli([*args, "--resume"], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert (
            f"--resume would continue the saved run on other evaluation data (sst2: {split} split '{split}' of "
            f"{data}, 16 examples there, 16 now; or the same number, changed)" in err
        )
        assert (output_dir / "training_state" / "state.json").read_text() == state  # nothing saved over it
        (data / f"{split}.tsv").write_text(original)

    flip_labels(data / "dev.tsv")
    forget_in_state(output_dir, "eval_data")  # a state saved before the dev and test digests were kept
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0 and "resumed after 2 of 2 batches" in out, err


def test_resume_refuses_other_weights_at_the_model_path(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    """Options compare the model's path only: other weights saved there resumed the prefix on another base."""
    model = tmp_path / "bert"
    shutil.copytree(tiny_bert, model)
    output_dir, args = saved_run(str(model), sst2_dir, tmp_path)
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0 and "resumed after" in out, err  # the same weights: it resumes
    shutil.rmtree(model)
    save_tiny_bert(model, seed=1, dropout=0.1)  # the same architecture, other weights, at the same path

    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"--resume would continue the saved run on another base model: {model} holds other weights" in err

    forget_in_state(output_dir, "base_model")  # a state saved before the fingerprint was kept
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0 and "resumed after 2 of 2 batches" in out, err


def test_resume_without_a_saved_state_keeps_the_finished_run_as_a_new_run_does(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    """With training_state/ pruned, --resume trained from scratch over the finished run's checkpoint, summary
    and config.json in place, and kept nothing of it."""
    output_dir, args = saved_run(tiny_bert, sst2_dir, tmp_path)
    finished = {
        name: (output_dir / name).read_bytes()
        for name in ("config.json", "summary.json", "checkpoint/prompt.safetensors")
    }
    shutil.rmtree(output_dir / "training_state")  # pruned to save space

    code, out, err = run_cli([*args, "--resume", "--learning-rate", "1e-3"], capsys)
    assert code == 0, err
    assert (
        f"{output_dir}: --resume found no saved training_state to continue, so a new run: the previous run's "
        f"summary.json, summary.md, curves.png, checkpoint, config.json moved to {output_dir / 'previous-run'}"
        in out
    )
    kept = output_dir / "previous-run"
    assert {name: (kept / name).read_bytes() for name in finished} == finished
    assert json.loads((output_dir / "config.json").read_text())["learning_rate"] == 1e-3

    empty = tmp_path / "empty"
    code, out, err = run_cli(
        [*train_args(tiny_bert, sst2_dir, empty, "--max-steps", "1"), "--resume"], capsys
    )
    assert code == 0, err
    assert f"{empty}: --resume found no saved training_state to continue: training from the start" in out


def test_a_multitask_data_folder_spelled_otherwise_is_the_same_option(
    sst2_dir, conll_dir, tmp_path, monkeypatch
) -> None:
    """config.json's derived ``multitask`` record kept --task-data's folders as typed and was compared as
    text: sst2=./sst2 refused a run started with sst2=sst2 although task_data itself is compared resolved."""
    shutil.copytree(sst2_dir, tmp_path / "sst2")
    shutil.copytree(sst2_dir, tmp_path / "other")
    monkeypatch.chdir(tmp_path)

    def options(sst2: str) -> dict:
        config = TrainConfig(
            model="unused",
            output_dir="run",
            tasks=["sst2", "conll2003"],
            task_data={"sst2": sst2, "conll2003": conll_dir},
        )
        return engine._run_config(config, engine.plan_tasks(config))

    saved = json.loads(json.dumps(options("sst2")))  # as config.json holds it
    assert option_changes(saved, options("./sst2")) == ([], [])
    assert option_changes(saved, options("other")) == (["multitask", "task_data"], [])


def test_relative_paths_are_read_from_the_directory_the_run_started_in(
    sst2_dir, tmp_path, monkeypatch
) -> None:
    """config.json kept --data and --model as typed and a resume read them from its own working directory:
    from anywhere but the first one no spelling was the same folder (relative ones named others, absolute
    ones differed from the saved relative ones), and a sweep retrained its finished cells."""
    started = tmp_path / "project"
    shutil.copytree(sst2_dir, started / "sst2")
    (tmp_path / "elsewhere").mkdir()

    def options(data_dir: str, model: str = "minilm") -> dict:
        config = TrainConfig(task="sst2", model=model, data_dir=data_dir, output_dir="run")
        return engine._run_config(config, engine.plan_tasks(config))

    monkeypatch.chdir(started)
    saved = json.loads(json.dumps(options("sst2")))  # as config.json holds it
    assert saved["working_dir"] == str(started)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert option_changes(saved, options(str(started / "sst2"))) == ([], [])
    assert option_changes(saved, options("../project/sst2/")) == ([], [])
    assert option_changes(saved, options("sst2")) == (["data_dir"], [])  # ./sst2 here is no such folder
    assert option_changes(saved, options(str(started / "sst2"), "other-model")) == (["model"], [])
    older = {key: value for key, value in saved.items() if key != "working_dir"}  # read from here, as before
    assert option_changes(older, options(str(started / "sst2"))) == (["data_dir"], [])


def test_a_presets_prefix_option_an_older_run_recorded_for_finetune_is_not_a_change() -> None:
    """Before presets' unread prefix options were dropped, `--preset conll2004-bert-large --method finetune`
    recorded the preset's prefix_dropout 0.2 (the run never read it); the same command now builds 0.1, and
    --resume refused it ("prefix_dropout: 0.2 there, 0.1 now") while a sweep retrained its finished cells."""
    now = TrainConfig(task="conll2004", model="unused", method="finetune").to_dict()
    older = {**now, "prefix_dropout": 0.2, "mlp_hidden_size": 64}
    assert option_changes(older, now) == ([], [])
    assert option_changes({**older, "learning_rate": 1.0}, now) == (["learning_rate"], [])
    deep = {**now, "method": "ptuning-v2"}
    assert option_changes({**deep, "prefix_dropout": 0.2}, deep) == (["prefix_dropout"], [])


def test_resume_refuses_a_run_whose_auto_backbone_dtype_stores_another_dtype_here(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """--backbone-dtype auto is bf16 on a CPU with bf16 instructions and fp32 elsewhere: a run saved on one
    machine and resumed on the other continued its second half on another backbone dtype, silently, since the
    option compared was the word "auto"."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # the machine that saved it
    output_dir = tmp_path / "run"
    args = train_args(tiny_bert, sst2_dir, output_dir, "--max-steps", "2", "--save-every-steps", "1")
    args += ["--backbone-dtype", "auto"]
    assert main(args) == 0
    assert json.loads((output_dir / "config.json").read_text())["backbone_dtype_stored"] == "bf16"

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # one without
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2
    assert 'backbone_dtype_stored: "bf16" there, "fp32" now' in err
