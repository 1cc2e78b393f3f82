"""``accelerate launch --use_deepspeed`` / ``--use_fsdp`` are not wired into ``ptuning train``: refused in one
line, before the output folder is touched (on CPU accelerate silently ran them as plain DDP)."""

from __future__ import annotations

import pytest

from ptuning.cli import main


@pytest.mark.parametrize(
    ("variable", "flag"),
    [("ACCELERATE_USE_DEEPSPEED", "--use_deepspeed"), ("ACCELERATE_USE_FSDP", "--use_fsdp")],
)
def test_a_deepspeed_or_fsdp_launch_is_refused_before_anything_is_written(
    tiny_bert, sst2_dir, tmp_path, monkeypatch, capsys, variable, flag
) -> None:
    monkeypatch.setenv(variable, "true")
    run = tmp_path / "run"
    argv = ["train", "--task", "sst2", "--model", tiny_bert, "--data", sst2_dir, "--output-dir", str(run)]
    assert main(argv) == 2
    assert f"accelerate launch {flag} is not wired into ptuning train" in capsys.readouterr().err
    assert not run.exists()
