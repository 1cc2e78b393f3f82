"""``torchrun --nproc_per_node 2 -m ptuning.cli train --shard-backbone`` on CPU (gloo): the frozen backbone is
split between the processes (FSDP2), prefixes and heads are replicated, and the run trains the same prompt as
one process with the same global batch, with the same loss history; stopped and resumed, it continues
identically.

29 training examples in batches of 8 make a last batch of 5 (3 + 2 rows), so uneven shares are covered too.
Dropout is 0 everywhere: the processes draw different random numbers, so masks could never match.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed
from safetensors.torch import load_file
from training_tiny import run_cli, subprocess_env, train_args

from ptuning.cli import main

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available",
)

STOP_AT_SAVE = 3  # the training state of update 3 is never written: the resumed run starts after update 2
STOPPER = f"""
import os, sys
from ptuning.training import trainer
from ptuning.cli import main

original, calls = trainer.rng_states, [0]

def save_or_stop(*args, **kwargs):  # every process saves its RNG states first: all stop at the same point
    calls[0] += 1
    if calls[0] == {STOP_AT_SAVE}:
        os._exit(3)
    return original(*args, **kwargs)

trainer.rng_states = save_or_stop
sys.exit(main(sys.argv[1:]))
"""


def run_args(model: str, data: str, output_dir: Path, *extra: str) -> list[str]:
    return train_args(
        model,
        data,
        output_dir,
        *("--epochs", "2", "--max-train-samples", "29", "--test-split", "none"),
        *("--prefix-dropout", "0", "--head-dropout", "0", "--seed", "5", "--save-every-steps", "1"),
        *extra,
    )


def torchrun(program: list[str], args: list[str]) -> subprocess.CompletedProcess:
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("torchrun is not installed next to this Python")
    return subprocess.run(
        [launcher, "--standalone", "--nproc_per_node", "2", *program, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=180,
    )


@pytest.fixture(scope="module")
def one_process(tiny_bert_no_dropout, sst2_dir, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("one-process")
    assert main(run_args(tiny_bert_no_dropout, sst2_dir, output_dir)) == 0
    return output_dir


def assert_same_run(run: Path, reference: Path, atol: float = 1e-5) -> None:
    """Same loss and dev history, same saved prompt, same trained tensors after the last update (``atol``)."""
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (run, reference)]
    assert summaries[0]["updates"] == summaries[1]["updates"] == 8  # 4 global batches per epoch
    history, expected = summaries[0]["history"], summaries[1]["history"]
    assert [h["update"] for h in history] == [h["update"] for h in expected] == [4, 8]
    for entry, wanted in zip(history, expected, strict=True):
        assert entry["train_loss"] == pytest.approx(wanted["train_loss"], abs=atol)
        assert entry["dev"] == pytest.approx(wanted["dev"], abs=1e-6)
    prompts = [load_file(folder / "checkpoint" / "prompt.safetensors") for folder in (run, reference)]
    assert prompts[0].keys() == prompts[1].keys() and any(k.startswith("prefixes.") for k in prompts[1])
    for name in prompts[1]:
        torch.testing.assert_close(prompts[0][name], prompts[1][name], rtol=0, atol=atol, msg=name)
    final = [load_file(folder / "training_state" / "state.safetensors") for folder in (run, reference)]
    trained = [name for name in final[1] if name.startswith("model.")]
    assert trained and not any(".backbone." in name or name.startswith("model.backbone") for name in trained)
    for name in trained:
        torch.testing.assert_close(final[0][name], final[1][name], rtol=0, atol=atol, msg=name)


@pytest.mark.ddp
def test_a_sharded_backbone_on_two_processes_trains_like_one(
    tiny_bert_no_dropout, sst2_dir, one_process, tmp_path
) -> None:
    two = tmp_path / "sharded"
    result = torchrun(
        ["-m", "ptuning.cli"], run_args(tiny_bert_no_dropout, sst2_dir, two, "--shard-backbone")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backbone sharded layer by layer over 2 processes" in result.stdout
    assert_same_run(two, one_process)


@pytest.mark.ddp
def test_a_stopped_sharded_run_resumes_like_an_uninterrupted_one(
    tiny_bert_no_dropout, sst2_dir, one_process, tmp_path
) -> None:
    two, stopper = tmp_path / "sharded", tmp_path / "stop_at_save.py"
    stopper.write_text(STOPPER)
    args = run_args(tiny_bert_no_dropout, sst2_dir, two, "--shard-backbone")
    stopped = torchrun([str(stopper)], args)
    assert stopped.returncode != 0
    assert not (two / "summary.json").exists()
    state = json.loads((two / "training_state" / "state.json").read_text())["progress"]
    assert state["update"] == STOP_AT_SAVE - 1
    resumed = torchrun(["-m", "ptuning.cli"], [*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed after {STOP_AT_SAVE - 1} of 8 batches" in resumed.stdout
    assert_same_run(two, one_process)


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("extra", "atol"),
    [
        (("--gradient-checkpointing",), 1e-5),
        # bf16: a matmul over a process's 4 rows instead of 8 may round a hidden state by one bf16 step
        # (2**-8 relative, against 2**-24 in fp32); the loss, prefixes and heads stay fp32
        (("--backbone-dtype", "bf16", "--mixed-precision", "bf16"), 1e-4),
    ],
    ids=["gradient-checkpointing", "bf16-backbone-and-autocast"],
)
def test_a_sharded_backbone_with_checkpointing_or_bf16_trains_like_one_process(
    extra, atol, tiny_bert_no_dropout, sst2_dir, one_process, tmp_path
) -> None:
    one, two = tmp_path / "one-process", tmp_path / "sharded"
    single = subprocess.run(  # its own process: accelerate keeps one mixed-precision setting per process
        [sys.executable, "-m", "ptuning.cli", *run_args(tiny_bert_no_dropout, sst2_dir, one, *extra)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=180,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    args = run_args(tiny_bert_no_dropout, sst2_dir, two, "--shard-backbone", *extra)
    result = torchrun(["-m", "ptuning.cli"], args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backbone sharded layer by layer over 2 processes" in result.stdout
    assert_same_run(two, one, atol)
    if "bf16" in extra:  # really trained in bf16: the trained prompt moved away from the fp32 run's
        prompts = [load_file(run / "checkpoint" / "prompt.safetensors") for run in (two, one_process)]
        largest = max((prompts[0][name] - prompts[1][name]).abs().max().item() for name in prompts[1])
        assert largest > 2 * atol, largest  # 0.04 measured


@pytest.mark.parametrize(
    ("extra", "world", "expected"),
    [
        ((), "1", "--shard-backbone needs several processes to shard over"),
        (
            ("--method", "finetune"),
            "2",
            "--shard-backbone shards a frozen backbone; method finetune trains it",
        ),
        (
            ("--method", "prompt-tuning"),  # crashed at the first step (a DTensor embedding table)
            "2",
            "--shard-backbone does not take method prompt-tuning",
        ),
        (
            ("--backbone-dtype", "fp16"),
            "2",
            "--shard-backbone with --backbone-dtype fp16 does not train the same prompt as one process",
        ),
    ],
)
def test_sharding_is_refused_without_processes_or_with_a_trained_backbone(
    extra, world, expected, tiny_bert_no_dropout, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", world)
    code, _, err = run_cli(
        run_args(tiny_bert_no_dropout, sst2_dir, tmp_path / "run", "--shard-backbone", *extra), capsys
    )
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything loaded
