"""Replacing a checkpoint folder: a crash (simulated by raising) at any step leaves a folder that loads,
either the old checkpoint or the new one, and the next load clears what the crash left behind."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from core_tiny import build, tiny_backbone

import ptuning.core.folders as folders
from ptuning.core.checkpoint import load_checkpoint, save_checkpoint
from ptuning.core.folders import replace_dir


class Crash(Exception):
    """Stands for the process dying at this point."""


def crash_on_call(function, number: int):
    """``function``, except that its ``number``-th call raises Crash instead of running."""
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == number:
            raise Crash(f"crash at call {number} of {function.__name__}")
        return function(*args, **kwargs)

    return wrapper


def table(folder: Path) -> torch.Tensor:
    return load_checkpoint(folder, backbone=tiny_backbone("bert")).prefixes["t"].table()


@pytest.fixture
def saved(tmp_path):
    """(target with the old checkpoint, staging folder with a complete new one, old table, new table)."""
    old, new = build("bert").model, build("bert").model
    with torch.no_grad():
        new.prefixes["t"].embedding.weight.add_(1.0)
    target = save_checkpoint(old, tmp_path / "ckpt")
    save_checkpoint(new, tmp_path / "elsewhere" / "new")
    staging = folders.staging_dir(target)
    for file in (tmp_path / "elsewhere" / "new").iterdir():
        shutil.copy(file, staging / file.name)
    shutil.rmtree(tmp_path / "elsewhere")
    return target, staging, old.prefixes["t"].table().detach(), new.prefixes["t"].table().detach()


# (swap kind, what crashes, which checkpoint the folder holds after recovery)
CRASH_POINTS = [
    ("fallback", ("os.replace", 1), "old"),  # before anything moved
    ("fallback", ("os.replace", 2), "old"),  # old moved aside, new not yet in: the target is missing
    ("fallback", ("rmtree", 1), "new"),  # swapped, the old folder not yet deleted
    ("exchange", ("exchange", 1), "old"),  # before the atomic exchange
    ("exchange", ("rmtree", 1), "new"),  # exchanged, the old folder (now in the staging place) not deleted
]


@pytest.mark.parametrize(("kind", "step", "expected"), CRASH_POINTS)
def test_a_crash_at_any_step_leaves_a_checkpoint_that_loads(kind, step, expected, saved, monkeypatch) -> None:
    target, staging, old_table, new_table = saved
    if kind == "fallback":
        monkeypatch.setattr(folders, "_exchange", lambda first, second: False)
    elif sys.platform != "linux":
        pytest.skip("renameat2(RENAME_EXCHANGE) is Linux-only")
    name, number = step
    with monkeypatch.context() as patch:
        if name == "os.replace":
            patch.setattr(folders.os, "replace", crash_on_call(os.replace, number))
        elif name == "rmtree":
            patch.setattr(folders.shutil, "rmtree", crash_on_call(shutil.rmtree, number))
        else:
            patch.setattr(folders, "_exchange", crash_on_call(folders._exchange, number))
        with pytest.raises(Crash):
            replace_dir(staging, target)
    monkeypatch.setattr(folders, "_writer_alive", lambda name: False)  # the crashed writer is gone
    assert torch.equal(table(target), old_table if expected == "old" else new_table)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt"]  # leftovers cleared by that load


def test_on_linux_the_swap_is_one_exchange_and_leaves_nothing_behind(saved) -> None:
    target, staging, _, new_table = saved
    if sys.platform != "linux":
        pytest.skip("renameat2(RENAME_EXCHANGE) is Linux-only")
    assert folders._renameat2() is not None
    replace_dir(staging, target)
    assert torch.equal(table(target), new_table)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt"]


def test_a_live_writers_staging_folder_is_left_alone(saved) -> None:
    target, staging, old_table, _ = saved
    assert torch.equal(table(target), old_table)  # runs recovery
    assert staging.is_dir()  # this process is alive: its staging folder may be mid-write


@pytest.mark.parametrize("umask, folder, file", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_a_saved_checkpoint_has_the_modes_the_umask_gives(tmp_path, umask, folder, file) -> None:
    """The staging folder came from mkdtemp (0700) and safetensors wrote its file 0600, so a checkpoint saved
    by one account could not be read by another (a server's) even under umask 022."""
    previous = os.umask(umask)
    try:
        target = save_checkpoint(build("bert").model, tmp_path / "ckpt")
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (target, *target.iterdir())}
    assert modes == {"ckpt": folder, "prompt.safetensors": file, "prompt_config.json": file}


@pytest.mark.parametrize("fallback", [False, True])
def test_saving_through_a_symlink_replaces_what_it_points_to_and_keeps_the_link(
    tmp_path, monkeypatch, fallback
) -> None:
    """The new folder was swapped in where the link sat: the link became a folder, its target stayed stale,
    and the staged old link could never be deleted (rmtree refuses a link)."""
    if fallback:
        monkeypatch.setattr(folders, "_exchange", lambda first, second: False)
    old, new = build("bert").model, build("bert").model
    with torch.no_grad():
        new.prefixes["t"].embedding.weight.add_(1.0)
    real = save_checkpoint(old, tmp_path / "store" / "ckpt")
    (tmp_path / "runs").mkdir()
    link = tmp_path / "runs" / "latest"
    link.symlink_to(real)
    save_checkpoint(new, link)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert torch.equal(table(real), new.prefixes["t"].table().detach())
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["latest"]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["ckpt"]


def test_recovery_deletes_a_leftover_link_in_a_staging_place(tmp_path, monkeypatch) -> None:
    target = save_checkpoint(build("bert").model, tmp_path / "ckpt")
    (tmp_path / ".ckpt.new-999999-x").symlink_to(tmp_path / "nowhere")
    monkeypatch.setattr(folders, "_writer_alive", lambda name: False)
    folders.recover_dir(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
