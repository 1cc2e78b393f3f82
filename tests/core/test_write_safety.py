"""What the writers leave when they race, fail or are pointed at the wrong place: whole files (the old or
the new), no staging leftovers, one-line errors naming the target, and nothing of the user's replaced.

Covers ``core/folders.py`` (one file whole), ``core/checkpoint.py`` (save), and the files that training writes
through them (``training/state.py``, ``training/report.py``); adapters are in tests/interop.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest
import torch
from core_tiny import build, tiny_backbone
from safetensors import SafetensorError

import ptuning.core.checkpoint as checkpoint
import ptuning.core.folders as folders
import ptuning.training.report as report
import ptuning.training.state as state
from ptuning.core.config import ConfigError

NO_SPACE = "No space left on device"


def full_disk(monkeypatch, name: str) -> None:
    """Every file opened for writing whose name contains ``name`` takes half of what is written to it, then
    fails as a full disk does (ENOSPC)."""
    real_open = io.open

    class Filling:
        def __init__(self, stream) -> None:
            self.stream = stream

        def write(self, data):
            self.stream.write(data[: len(data) // 2])
            self.stream.flush()
            raise OSError(errno.ENOSPC, NO_SPACE)

        def __getattr__(self, attribute):
            return getattr(self.stream, attribute)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.stream.close()

    def opened(file, mode="r", *args, **kwargs):
        stream = real_open(file, mode, *args, **kwargs)
        path = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else str(file)
        return Filling(stream) if "w" in mode and name in Path(path).name else stream

    monkeypatch.setattr(io, "open", opened)


def no_space(*args, **kwargs):
    """What safetensors raises when the disk fills while it writes."""
    raise SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error 28)")


# --- one file whole (config.json, summary.json, eval/predict --output) -------------------------------------


def test_a_second_writer_of_the_same_path_neither_fails_nor_cuts_the_first(tmp_path, monkeypatch) -> None:
    """Both writers staged at ``.<name>.partial``: the second swapped the first's staging file in, and the
    first then failed with FileNotFoundError (or a reader got a file that one writer was still writing)."""
    target = tmp_path / "predictions.jsonl"
    first, second = "A\n" * 1000, "B\n" * 1000
    real_replace = os.replace

    def another_writer_first(source, destination) -> None:
        monkeypatch.setattr(os, "replace", real_replace)
        folders.write_text_whole(target, second)  # another process writes the same path meanwhile
        assert target.read_text() == second
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", another_writer_first)
    folders.write_text_whole(target, first)
    assert target.read_text() == first  # the last swap wins, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_a_symlinked_output_is_written_through_and_keeps_its_link(tmp_path) -> None:
    """``predict --output latest.jsonl`` (a link to kept/v1.jsonl) replaced the link with a file, and v1
    kept the old predictions."""
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "v1.jsonl").write_text("old\n")
    (tmp_path / "latest.jsonl").symlink_to("kept/v1.jsonl")
    folders.write_text_whole(tmp_path / "latest.jsonl", "new\n")
    assert (tmp_path / "latest.jsonl").is_symlink()
    assert (tmp_path / "kept" / "v1.jsonl").read_text() == "new\n"
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["v1.jsonl"]


def test_a_full_disk_leaves_the_previous_file_and_no_staging_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "summary.json"
    target.write_text('{"old": 1}\n')
    full_disk(monkeypatch, "summary.json")
    with pytest.raises(OSError, match=NO_SPACE):
        folders.write_text_whole(target, json.dumps({"new": "x" * 1000}))
    assert target.read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_the_file_is_on_disk_before_it_is_swapped_in(tmp_path, monkeypatch) -> None:
    """Without fsync a power loss after the rename can leave an empty file where a whole one was."""
    events = record_syncs_and_swaps(monkeypatch, os, "replace")
    folders.write_text_whole(tmp_path / "config.json", "{}\n")
    (swap,) = [index for index, (kind, _) in enumerate(events) if kind == "swap"]
    staged = events[swap][1]
    assert ("sync", staged) in events[:swap], events


def record_syncs_and_swaps(monkeypatch, owner, swap_name: str) -> list[tuple[str, str]]:
    """("sync", path) for every fsync and ("swap", source) for every call of ``owner.swap_name``, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_swap = os.fsync, getattr(owner, swap_name)

    def fsync(descriptor: int) -> None:
        events.append(("sync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def swap(source, *args, **kwargs):
        events.append(("swap", str(source)))
        return real_swap(source, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(owner, swap_name, swap)
    return events


# --- save_checkpoint --------------------------------------------------------------------------------------


def test_save_checkpoint_never_replaces_a_file_or_a_folder_of_other_files(tmp_path) -> None:
    """The checkpoint is swapped in whole: a file at the path, or a run folder given by mistake (its
    config.json, summary.json and training_state/), was silently deleted."""
    model = build("bert").model
    (tmp_path / "notes.txt").write_text("my only copy\n")
    run = tmp_path / "run"
    (run / "training_state").mkdir(parents=True)
    (run / "config.json").write_text("{}\n")
    (run / "summary.json").write_text('{"dev": 1}\n')
    for target, message in (
        (tmp_path / "notes.txt", "is a file; a prompt checkpoint is a folder"),
        (run, "holds other files and no prompt_config.json"),
        (tmp_path / "notes.txt" / "ckpt", "which is a file"),
    ):
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.save_checkpoint(model, target)
    assert (tmp_path / "notes.txt").read_text() == "my only copy\n"
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "summary.json", "training_state"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run"]  # no staging folder left


def test_save_checkpoint_takes_a_new_or_empty_folder_or_a_checkpoint(tmp_path) -> None:
    model = build("bert").model
    (tmp_path / "empty").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / folders.RUN_LOCK).touch()  # a run's lock file is not content
    for target in (tmp_path / "new", tmp_path / "empty", tmp_path / "locked", tmp_path / "new"):
        checkpoint.save_checkpoint(model, target)
        assert checkpoint.load_checkpoint(target, backbone=tiny_backbone("bert")).tasks == ["t"]


def test_a_full_disk_while_a_checkpoint_is_saved_is_one_line_and_keeps_the_old_one(
    tmp_path, monkeypatch
) -> None:
    """Training on a full disk ended in a SafetensorError traceback that named no folder."""
    model = build("bert").model
    target = checkpoint.save_checkpoint(model, tmp_path / "checkpoint")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(checkpoint, "save_file", no_space)
    with torch.no_grad():
        model.prefixes["t"].embedding.weight.add_(1.0)
    with pytest.raises(checkpoint.CheckpointError) as raised:
        checkpoint.save_checkpoint(model, target)
    message = str(raised.value)
    assert message.startswith(f"{target}: not saved") and NO_SPACE in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# --- the resumable training state -------------------------------------------------------------------------


def small_optimizer() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.ones(3)
    optimizer.step()
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_the_training_state_is_on_disk_before_it_is_swapped_in(tmp_path, monkeypatch) -> None:
    """docs/ARCHITECTURE.md said so; the state was swapped in unsynced (a power loss: an empty file)."""
    optimizer, scheduler = small_optimizer()
    events = record_syncs_and_swaps(monkeypatch, state, "replace_dir")
    state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 1})
    (swap,) = [index for index, (kind, _) in enumerate(events) if kind == "swap"]
    synced = {Path(path).name for kind, path in events[:swap] if kind == "sync"}
    assert {"state.safetensors", "state.json"} <= synced, events


@pytest.mark.parametrize(
    ("damaged", "kept"), [("state.safetensors", 0), ("state.safetensors", 0.5), ("state.json", 0.5)]
)
def test_a_damaged_training_state_is_one_line_naming_the_file(tmp_path, damaged, kept) -> None:
    """A cut state file (a crash or a full disk) ended --resume in a raw SafetensorError traceback."""
    optimizer, scheduler = small_optimizer()
    state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 1})
    path = tmp_path / state.STATE_DIR / damaged
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * kept)])
    readers = [state.load_training_state] + ([state.saved_progress] if damaged == "state.json" else [])
    for read in readers:
        with pytest.raises(ConfigError) as raised:
            read(tmp_path)
        message = str(raised.value)
        assert message.startswith(f"{path}: the resumable state is damaged") and "\n" not in message
        assert message.endswith(f"delete {tmp_path / state.STATE_DIR} to train from the start")


def test_a_full_disk_while_the_training_state_is_saved_is_one_line_and_keeps_the_old_one(
    tmp_path, monkeypatch
) -> None:
    optimizer, scheduler = small_optimizer()
    state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 1})
    monkeypatch.setattr(state, "save_file", no_space)
    with pytest.raises(ConfigError) as raised:
        state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 2})
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / state.STATE_DIR}: the resumable state was not saved")
    assert NO_SPACE in message
    monkeypatch.undo()
    assert state.saved_progress(tmp_path) == {"micro": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.STATE_DIR]


# --- reports (summary.md, curves.png, seeds.md / sweep.md) ------------------------------------------------

SUMMARY = {
    "task": "sst2",
    "primary_metric": "accuracy",
    "history": [{"epoch": 1.0, "update": 4, "train_loss": 0.7, "dev": {"accuracy": 0.5}}],
}


def test_a_full_disk_while_the_curves_are_drawn_keeps_the_previous_png(tmp_path, monkeypatch) -> None:
    """A full disk left a 0-byte curves.png where a whole one was."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    report.write_run_report(tmp_path, SUMMARY)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_savefig = Figure.savefig

    def savefig_on_a_full_disk(self, target, **kwargs):
        rendered = io.BytesIO()
        real_savefig(self, rendered, **{**kwargs, "format": "png"})
        cut = rendered.getvalue()[:100]  # the blocks that fitted
        if hasattr(target, "write"):
            target.write(cut)
        else:
            Path(target).write_bytes(cut)
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(Figure, "savefig", savefig_on_a_full_disk)
    with pytest.raises(OSError, match=NO_SPACE):
        report.write_run_report(tmp_path, {**SUMMARY, "task": "rte"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("name", [report.SUMMARY_MD, report.SEEDS_MD])
def test_a_full_disk_while_a_report_is_written_keeps_the_previous_one(tmp_path, monkeypatch, name) -> None:
    def write(task: str) -> None:
        if name == report.SUMMARY_MD:
            report.write_run_report(tmp_path, {"task": task})
        else:
            aggregate = report.aggregate_seeds({1: {"task": task, "dev": {"accuracy": 0.5}}})
            report.write_seed_report(tmp_path, aggregate)

    write("sst2")
    before = (tmp_path / name).read_text()
    full_disk(monkeypatch, name)
    with pytest.raises(OSError, match=NO_SPACE):
        write("a-much-longer-task-name-" * 20)
    assert (tmp_path / name).read_text() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
