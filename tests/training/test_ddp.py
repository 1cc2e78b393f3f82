"""Data parallel: ``torchrun --nproc_per_node 2 -m ptuning.cli train`` on CPU (gloo) trains the same prefix as
one process with the same global batch.

29 training examples in batches of 8 make a last batch of 5, split 3 + 2 between the processes, so the test
also covers the weighting that keeps uneven shares equal to the one-process gradient. Dropout is 0
everywhere: the processes draw different random numbers, so masks could never match.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed
from safetensors.torch import load_file
from training_tiny import subprocess_env, train_args

from ptuning.cli import main
from ptuning.training.schedule import process_share, window_weight

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available",
)


def run_args(model: str, data: str, output_dir, task: str = "sst2") -> list[str]:
    return train_args(
        model,
        data,
        output_dir,
        *("--epochs", "2", "--max-train-samples", "29", "--test-split", "none"),
        *("--prefix-dropout", "0", "--head-dropout", "0", "--seed", "5", "--save-every-steps", "1000"),
        task=task,
    )


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("task", "data", "updates"),
    [("sst2", "sst2_dir", 8), ("conll2003", "uneven_conll_dir", 4)],  # a mean over examples, over tokens
)
def test_two_processes_train_the_same_prefix_as_one(
    tiny_bert_no_dropout, task, data, updates, tmp_path, request
) -> None:
    """For tagging, shares of one batch hold different numbers of labelled tokens: each token must count
    alike, as in one process's mean over the whole batch."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    data = request.getfixturevalue(data)
    one, two = tmp_path / "one-process", tmp_path / "two-processes"
    assert main(run_args(tiny_bert_no_dropout, data, one, task)) == 0

    started = time.perf_counter()
    result = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(Path(__file__).parent / "cli_under_torchrun.py"),
        ]
        + run_args(tiny_bert_no_dropout, data, two, task),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=180,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stdout  # one gloo group, not two processes each training alone
    # the CLI destroys the group before exiting: left to interpreter teardown, gloo could abort a rank (SIGABRT)
    for rank in (0, 1):
        assert f"rank {rank}: process group open after the CLI returned: False" in result.stdout, (
            result.stdout
        )
    print(f"2-process run: {seconds:.1f} s")

    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (one, two)]
    assert summaries[0]["updates"] == summaries[1]["updates"] == updates  # global batches of 8, 2 epochs
    expected = load_file(one / "checkpoint" / "prompt.safetensors")
    parallel = load_file(two / "checkpoint" / "prompt.safetensors")
    assert expected.keys() == parallel.keys()
    for name in expected:
        torch.testing.assert_close(parallel[name], expected[name], rtol=0, atol=1e-5, msg=name)
    # and after the last update (the best-dev checkpoint above may be an earlier epoch)
    final = [load_file(folder / "training_state" / "state.safetensors") for folder in (one, two)]
    trained = [name for name in final[0] if name.startswith("model.")]
    assert trained
    for name in trained:
        torch.testing.assert_close(final[1][name], final[0][name], rtol=0, atol=1e-5, msg=name)
    # each process draws its own random numbers once training starts: set_seed gave both one stream, so
    # dropout drew the same masks on both shares of a batch (docs/CLI.md says they differ)
    ranks = final[1]["rng.torch.ranks"]
    assert ranks.shape[0] == 2 and not torch.equal(ranks[0], ranks[1])


def test_the_process_group_waits_longer_than_an_evaluation_rank_0_runs_alone(tiny_bert_no_dropout) -> None:
    """Only rank 0 evaluates while the others wait in a barrier; torch's 30-minute default ended the run of
    a longer evaluation (a large dev set, decoding on a CPU)."""
    from datetime import timedelta

    from ptuning.training.config import TrainConfig
    from ptuning.training.engine import PROCESS_GROUP_TIMEOUT, _accelerator

    accelerator = _accelerator(TrainConfig(task="sst2", model=tiny_bert_no_dropout))
    assert accelerator.init_handler is not None
    assert accelerator.init_handler.timeout == PROCESS_GROUP_TIMEOUT >= timedelta(hours=12)


def test_shards_split_every_global_batch_and_weight_uneven_shares() -> None:
    batches = [[0, 1, 2, 3], [4, 5, 6], [7]]
    assert [process_share(batch, 0, 2) for batch in batches] == [[0, 2], [4, 6], [7]]
    assert [process_share(batch, 1, 2) for batch in batches] == [[1, 3], [5], [7]]  # [7] again, weighted 0
    # per-example losses: a share of n of N examples weighs n * world / N (each batch its own window)
    weights = [[window_weight(n, "t", [("t", len(batch))], 2, 1) for n in shares] for batch, shares in
               zip(batches, ([2, 2], [2, 1], [1, 0]), strict=True)]  # fmt: skip
    assert weights == [[1.0, 1.0], [4 / 3, 2 / 3], [2.0, 0.0]]
