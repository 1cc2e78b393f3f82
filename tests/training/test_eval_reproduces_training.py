"""``ptuning eval`` on a run's checkpoint gives the dev score the run reported, to the last digit, also when the
run trained under --mixed-precision bf16 (autocast) or on packed rows: the run scores dev the way eval does.

STS-B regression makes the check sharp: a Pearson correlation moves with any change in the outputs, where an
accuracy on a few examples could hide it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from training_tiny import run_cli, train_args

from ptuning.training.trainer import _plain_forward

WORDS = [
    "good",
    "bad",
    "film",
    "actor",
    "plot",
    "slow",
    "fast",
    "warm",
    "cold",
    "funny",
    "dull",
    "great",
    "awful",
    "fine",
    "long",
    "short",
]


def write_stsb(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", 48, 0), ("dev", 40, 1)):
        rng = random.Random(seed)
        rows = [
            f"{' '.join(rng.choices(WORDS, k=rng.randint(2, 9)))}\t"
            f"{' '.join(rng.choices(WORDS, k=rng.randint(2, 9)))}\t{rng.uniform(0, 5):.2f}"
            for _ in range(count)
        ]
        (folder / f"{name}.tsv").write_text("sentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    return str(folder)


@pytest.mark.parametrize("option", [["--mixed-precision", "bf16"], [], ["--pack-sequences"]])
def test_eval_gives_the_dev_score_the_run_reported(option, tiny_bert, tmp_path, capsys) -> None:
    """On a backbone with dropout 0.1, so that scoring in training mode could not go unnoticed; the bf16 run
    comes before the others in one process (a second run with another --mixed-precision must start)."""
    data = write_stsb(tmp_path / "stsb")
    output = tmp_path / "run"
    argv = train_args(tiny_bert, data, output, "--test-split", "none", *option, task="stsb")
    code, _, err = run_cli([*argv, "--eval-every-steps", "3"], capsys)  # evaluations between updates too
    assert code == 0, err
    reported = json.loads((output / "summary.json").read_text())["dev"]["pearson"]
    code, out, err = run_cli(["eval", "--checkpoint", str(output / "checkpoint"), "--data", data], capsys)
    assert code == 0, err
    assert json.loads(out)["pearson"] == reported


def test_evaluation_leaves_the_autocast_forward_in_place() -> None:
    """The wrapped forward comes back after evaluating (training goes on under autocast), error or not."""

    class Model:
        def forward(self) -> str:
            return "plain"

    model = Model()
    model.forward = lambda: "autocast"
    with pytest.raises(RuntimeError), _plain_forward(model):
        assert model.forward() == "plain"
        raise RuntimeError
    assert model.forward() == "autocast"


def test_a_run_whose_dev_score_is_never_a_number_writes_strict_json_and_says_which_checkpoint(
    tiny_bert, tmp_path, capsys
) -> None:
    """One dev gold score for every pair: Pearson is undefined (nan) at every evaluation. summary.json held bare
    NaN literals, which strict JSON readers refuse, and named the kept checkpoint "best dev pearson" where it
    is the last evaluation's (no nan beats another)."""
    data = Path(write_stsb(tmp_path / "stsb"))
    dev = (data / "dev.tsv").read_text().splitlines()
    constant = [line.rsplit("\t", 1)[0] + "\t2.50" for line in dev[1:]]
    (data / "dev.tsv").write_text("\n".join([dev[0], *constant]) + "\n")
    output = tmp_path / "run"
    code, _, err = run_cli(
        train_args(tiny_bert, str(data), output, "--test-split", "none", task="stsb"), capsys
    )
    assert code == 0, err

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    summary = json.loads((output / "summary.json").read_text(), parse_constant=refuse)
    assert summary["dev"]["pearson"] is None and summary["history"][-1]["dev"]["pearson"] is None
    assert summary["data_plan"]["checkpoint"] == "last evaluation (no dev score was a number)"
    # read back (--resume of the finished run, a sweep reusing the seed) the nulls print and average as nan
    code, out, err = run_cli(
        [*train_args(tiny_bert, str(data), output, "--test-split", "none", task="stsb"), "--resume"], capsys
    )
    assert code == 0, err
    assert "dev pearson nan" in out
    code, out, err = run_cli(
        [
            *train_args(tiny_bert, str(data), tmp_path / "seeds", "--test-split", "none", task="stsb"),
            "--seeds",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = run_cli(
        [
            *train_args(tiny_bert, str(data), tmp_path / "seeds", "--test-split", "none", task="stsb"),
            "--seeds",
            "1,2",
        ],
        capsys,
    )
    assert code == 0, err
    aggregate = json.loads((tmp_path / "seeds" / "seeds.json").read_text(), parse_constant=refuse)
    assert aggregate["dev"]["pearson"]["values"] == [None, None]
