"""One training run per output folder at a time: a second ``ptuning train`` into a folder that a run is
training into is refused in one line before it moves anything (it moved the running run's checkpoint, state
and config to previous-run, and the folder ended a mix of both runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from training_tiny import run_cli, subprocess_env, train_args

import ptuning.training.engine as engine
from ptuning.core.folders import RUN_LOCK, exclusive_lock

HOLD = """
import sys
from pathlib import Path
from ptuning.core.folders import exclusive_lock
with exclusive_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


@pytest.fixture
def run(tiny_bert, sst2_dir, tmp_path, capsys) -> Path:
    """A finished 1-epoch run's folder."""
    output_dir = tmp_path / "run"
    assert run_cli(train_args(tiny_bert, sst2_dir, output_dir, "--epochs", "1"), capsys)[0] == 0
    return output_dir


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_into_a_folder_being_trained_into_is_refused_and_moves_nothing(
    run, tiny_bert, sst2_dir, capsys
) -> None:
    before = contents(run)
    training = subprocess.Popen(  # another process, holding the folder as a run does
        [sys.executable, "-c", HOLD, str(run / RUN_LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert training.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            code, _, err = run_cli(train_args(tiny_bert, sst2_dir, run, "--epochs", "1", *extra), capsys)
            assert code == 2, err
            assert f"another ptuning process is training into {run}" in err
            assert len(err.strip().splitlines()) == 1
            assert contents(run) == before  # no previous-run folder, no file rewritten
    finally:
        training.stdin.close()
        training.wait(timeout=60)
    # the holder is gone (however it ended, the system released its lock): the folder trains again
    code, _, err = run_cli(train_args(tiny_bert, sst2_dir, run, "--epochs", "1"), capsys)
    assert code == 0, err
    assert (run / "previous-run" / "summary.json").read_bytes() == before["summary.json"]
    assert (run / RUN_LOCK).is_file() and not (run / "previous-run" / RUN_LOCK).exists()  # not run content


def test_the_lock_is_released_when_a_run_ends_even_by_an_error(
    run, tiny_bert, sst2_dir, capsys, monkeypatch
) -> None:
    """A sweep's or --seeds' next cell, or a retry in the same process, must find the folder free."""
    with exclusive_lock(run / RUN_LOCK):  # free once the run has returned
        pass

    def crash(self) -> None:
        raise RuntimeError("crashed mid-training")

    monkeypatch.setattr(engine.Trainer, "run", crash)
    with pytest.raises(RuntimeError, match="crashed mid-training"):
        engine.train(engine.TrainConfig(task="sst2", model=tiny_bert, data_dir=sst2_dir, output_dir=str(run)))
    with exclusive_lock(run / RUN_LOCK):
        pass


def test_only_the_main_process_takes_the_lock(tmp_path) -> None:
    """The ranks of one data-parallel run share its folder: were each to take the lock, the second would be
    refused by the first. Rank 0 alone locks; the others follow its outcome."""
    other_rank = SimpleNamespace(is_main_process=False)
    with (
        exclusive_lock(tmp_path / RUN_LOCK),
        engine.claim_output_dir(tmp_path, other_rank),
    ):  # rank 0 holds it
        pass
