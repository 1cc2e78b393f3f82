"""``ptuning sweep``: one folder per (prefix length, learning rate), finished cells skipped on a rerun, the
best cell by dev score; and the variant runner's rules for reusing and resuming."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from training_tiny import run_cli, train_args

from ptuning.core.config import ConfigError
from ptuning.training.config import TrainConfig, build_config
from ptuning.training.engine import RunResult
from ptuning.training.presets import PRESETS
from ptuning.training.sweep import (
    VariantRun,
    grid_variants,
    run_variants,
    seed_variants,
    sweep_markdown,
    sweep_table,
)
from ptuning.training.trainer import TrainingDivergedError


def sweep_args(model: str, data: str, output_dir: Path, *extra: str) -> list[str]:
    """``ptuning sweep`` with train_args' options but the --learning-rate and --prefix-length the grid sets
    (refused beside its lists)."""
    argv = train_args(model, data, output_dir, *extra)
    for flag in ("--learning-rate", "--prefix-length"):
        del argv[argv.index(flag) : argv.index(flag) + 2]
    return ["sweep", *argv[1:]]


def sweep(
    tiny_bert: str, data: str, output_dir: Path, lengths: str, rates: str, capsys
) -> tuple[list, str, dict]:
    """``ptuning sweep`` of 2 updates a cell: (argv, stdout, sweep.json) after checking it exited 0."""
    argv = sweep_args(tiny_bert, data, output_dir, "--max-steps", "2", "--test-split", "none")
    argv = [*argv, "--prefix-lengths", lengths, "--learning-rates", rates]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    return argv, out, json.loads((output_dir / "sweep.json").read_text())


def test_sweep_runs_every_cell_then_skips_finished_ones(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    output_dir = tmp_path / "sweep"
    argv, out, table = sweep(tiny_bert, sst2_dir, output_dir, "2,4", "1e-2", capsys)
    assert "best: p" in out
    assert [cell["name"] for cell in table["cells"]] == ["p2-lr0.01", "p4-lr0.01"]
    best = max(table["cells"], key=lambda cell: cell["dev"])  # the first of equal scores
    assert table["best"] == best["name"]
    summaries = [output_dir / cell["name"] / "summary.json" for cell in table["cells"]]
    assert all(path.is_file() for path in summaries)
    assert json.loads(summaries[0].read_text())["updates"] == 2
    stamps = [path.stat().st_mtime_ns for path in summaries]

    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and out.count("finished earlier") == 2
    assert [path.stat().st_mtime_ns for path in summaries] == stamps
    assert "**best**" in (output_dir / "sweep.md").read_text()


def test_sweep_refuses_a_bad_cell_before_training_any(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = sweep_args(tiny_bert, sst2_dir, tmp_path / "sweep")
    code, _, err = run_cli([*argv, "--prefix-lengths", "4,0", "--learning-rates", "1e-2"], capsys)
    assert code == 2 and "prefix_length" in err and not (tmp_path / "sweep").exists()


def test_a_prefix_length_grid_without_a_prefix_is_refused(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    """linear-probe over --prefix-lengths 4,64 trained two byte-identical cells."""
    argv = sweep_args(tiny_bert, sst2_dir, tmp_path / "sweep", "--method", "linear-probe")
    code, _, err = run_cli([*argv, "--prefix-lengths", "4,64", "--learning-rates", "1e-2"], capsys)
    assert code == 2 and "method linear-probe has no prefix, so every length trains the same model" in err
    assert not (tmp_path / "sweep").exists()


class FakeTrain:
    """Records the configs it is given and 'trains' by writing config.json and summary.json."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.seen: list[TrainConfig] = []
        self.fail_at = fail_at

    def __call__(self, config: TrainConfig) -> RunResult:
        self.seen.append(config)
        output_dir = Path(config.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(config.to_dict()))
        if self.fail_at and output_dir.name == self.fail_at:
            raise KeyboardInterrupt  # cut off after starting: config.json written, no summary
        score = config.learning_rate * 10 + config.prefix_length / 100
        summary = {"primary_metric": "accuracy", "dev": {"accuracy": score}, "best_epoch": 1.0}
        (output_dir / "summary.json").write_text(json.dumps(summary))
        return RunResult(summary)


def base_config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(task="sst2", data_dir="data", output_dir=str(tmp_path / "grid"))


def test_an_interrupted_cell_resumes_and_finished_cells_are_reused(tmp_path) -> None:
    variants = grid_variants(base_config(tmp_path), [4, 8], [1e-2, 2e-2])
    first = FakeTrain(fail_at="p8-lr0.01")
    with pytest.raises(KeyboardInterrupt):
        run_variants(variants, first, log=lambda _: None, is_main=False)
    assert [c.output_dir.rsplit("/", 1)[-1] for c in first.seen] == ["p4-lr0.01", "p4-lr0.02", "p8-lr0.01"]

    second = FakeTrain()
    runs = run_variants(variants, second, log=lambda _: None, is_main=False)
    assert [(c.prefix_length, c.learning_rate, c.resume) for c in second.seen] == [
        (8, 0.01, True),
        (8, 0.02, False),
    ]
    assert [run.reused for run in runs] == [True, True, False, False]
    assert sweep_table(runs)["best"] == "p8-lr0.02"


def test_a_cell_whose_summary_was_cut_short_is_trained_again(tmp_path) -> None:
    """A summary.json cut by a crash (it was written in place) stopped the sweep with a JSON traceback."""
    variants = grid_variants(base_config(tmp_path), [4], [1e-2, 2e-2])
    run_variants(variants, FakeTrain(), log=lambda _: None, is_main=False)
    cut = tmp_path / "grid" / "p4-lr0.01" / "summary.json"
    cut.write_text(cut.read_text()[:10])
    said, again = [], FakeTrain()
    runs = run_variants(variants, again, log=said.append, is_main=False)
    assert [(c.learning_rate, c.resume) for c in again.seen] == [(0.01, True)]  # resumed, not from scratch
    assert [run.reused for run in runs] == [False, True]
    assert f"{cut} cannot be read (JSONDecodeError); training it again" in said


def test_a_path_spelled_otherwise_is_the_same_option(tmp_path) -> None:
    """--data ./data/ after --data data retrained the finished cell (and --resume refused it): paths are
    compared as the files they name."""
    variants = grid_variants(base_config(tmp_path), [4], [1e-2])
    run_variants(variants, FakeTrain(), log=lambda _: None, is_main=False)
    respelled = TrainConfig(**{**base_config(tmp_path).to_dict(), "data_dir": "./data/"})
    again = FakeTrain()
    runs = run_variants(grid_variants(respelled, [4], [1e-2]), again, log=lambda _: None, is_main=False)
    assert again.seen == [] and runs[0].reused
    elsewhere = TrainConfig(**{**base_config(tmp_path).to_dict(), "data_dir": "other"})
    runs = run_variants(grid_variants(elsewhere, [4], [1e-2]), again, log=lambda _: None, is_main=False)
    assert len(again.seen) == 1 and not runs[0].reused  # another folder is another option


@pytest.mark.parametrize(
    "lengths, rates, repeated",
    [
        ([4, 4], [1e-2], "--prefix-lengths names 4"),
        ([4], [0.01, 0.0100000001], "--learning-rates names 0.01"),
    ],
)
def test_a_value_given_twice_is_refused_rather_than_collapsed(tmp_path, lengths, rates, repeated) -> None:
    """Cells are named p{P}-lr{lr:g}: 4,4 x 0.01,1e-2,0.0100000001 made one cell of six, named for a rate
    other than the one it trained with."""
    with pytest.raises(ConfigError, match=f"{repeated} more than once"):
        grid_variants(base_config(tmp_path), lengths, rates)
    with pytest.raises(ConfigError, match="--seeds names 1 more than once"):
        seed_variants(base_config(tmp_path), [1, 2, 1])


def test_a_cell_trained_with_other_options_is_trained_again(tmp_path) -> None:
    variants = grid_variants(base_config(tmp_path), [4], [1e-2])
    run_variants(variants, FakeTrain(), log=lambda _: None, is_main=False)
    changed = grid_variants(TrainConfig(**{**base_config(tmp_path).to_dict(), "epochs": 5.0}), [4], [1e-2])
    again = FakeTrain()
    runs = run_variants(changed, again, log=lambda _: None, is_main=False)
    assert len(again.seen) == 1 and again.seen[0].resume is False and not runs[0].reused


def test_a_cell_that_differs_only_in_how_it_evaluates_is_reused(tmp_path) -> None:
    """The sweep judges 'same options' as --resume does: the evaluation batch changes no trained weight."""
    variants = grid_variants(base_config(tmp_path), [4], [1e-2])
    run_variants(variants, FakeTrain(), log=lambda _: None, is_main=False)
    changed = grid_variants(
        TrainConfig(**{**base_config(tmp_path).to_dict(), "eval_batch_size": 16}), [4], [1e-2]
    )
    again = FakeTrain()
    runs = run_variants(changed, again, log=lambda _: None, is_main=False)
    assert again.seen == [] and runs[0].reused


class DivergingTrain(FakeTrain):
    """Diverges in the cell named ``diverge_at`` (a learning rate too high), trains the others."""

    def __init__(self, diverge_at: str) -> None:
        super().__init__()
        self.diverge_at = diverge_at

    def __call__(self, config: TrainConfig) -> RunResult:
        if Path(config.output_dir).name == self.diverge_at:
            self.seen.append(config)
            Path(config.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(config.output_dir) / "config.json").write_text(json.dumps(config.to_dict()))
            raise TrainingDivergedError("training diverged at update 2: the sst2 training loss is nan")
        return super().__call__(config)


def test_a_diverging_cell_is_recorded_and_the_sweep_goes_on_and_skips_it_on_a_rerun(tmp_path) -> None:
    variants = grid_variants(base_config(tmp_path), [4], [1e-2, 1e37, 2e-2])
    first = DivergingTrain(diverge_at="p4-lr1e+37")
    runs = run_variants(variants, first, log=lambda _: None, record_divergence=True)
    assert len(first.seen) == 3 and [run.diverged is not None for run in runs] == [False, True, False]
    table = sweep_table(runs)
    assert table["best"] == "p4-lr0.02" and table["primary_metric"] == "accuracy"
    assert "| p4-lr1e+37 | 4 | 1e+37 | – | – | None | diverged |" in sweep_markdown(table)

    again = DivergingTrain(diverge_at="p4-lr1e+37")
    runs = run_variants(variants, again, log=lambda _: None, record_divergence=True)
    assert again.seen == [] and "loss is nan" in runs[1].diverged  # not trained into the same NaN again
    with pytest.raises(TrainingDivergedError):  # seeds of one setting: a divergence ends the command
        run_variants(grid_variants(base_config(tmp_path / "seeds"), [4], [1e37]), again, log=lambda _: None)


def test_a_nan_dev_score_is_never_the_best_cell(tmp_path) -> None:
    """Pearson of constant predictions is NaN; max() keeps a leading NaN, as nothing compares above it."""
    config = base_config(tmp_path)
    runs = [
        VariantRun(name, config, {"primary_metric": "pearson", "dev": {"pearson": score}}, reused=False)
        for name, score in (("a", math.nan), ("b", 0.62), ("c", 0.71))
    ]
    assert sweep_table(runs)["best"] == "c"


def test_ptuning_sweep_finishes_its_grid_past_a_diverging_learning_rate(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    _, out, table = sweep(tiny_bert, sst2_dir, tmp_path / "sweep", "4", "1e37,1e-2", capsys)
    assert "best: p4-lr0.01" in out
    assert "diverged" in table["cells"][0]["diverged"] and table["cells"][1]["dev"] is not None


@pytest.mark.parametrize("command", ["sweep", "seeds"])
def test_an_output_dir_that_is_a_file_is_one_line_for_sweeps_and_seeds(
    tiny_bert, sst2_dir, tmp_path, capsys, command
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    argv = (
        [
            *sweep_args(tiny_bert, sst2_dir, afile, "--max-steps", "1"),
            "--prefix-lengths",
            "4",
            "--learning-rates",
            "1e-2",
        ]
        if command == "sweep"
        else [*train_args(tiny_bert, sst2_dir, afile, "--max-steps", "1"), "--seeds", "1,2"]
    )
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "is a file; expected a folder" in err and "Traceback" not in err
    assert afile.read_text() == "mine\n"


def test_a_flag_the_seeds_or_the_grid_would_override_is_refused(tmp_path) -> None:
    """``train --seeds 1 --seed 99`` trained seed 1 alone without a word; the grid dropped --learning-rate and
    --prefix-length the same way."""
    base = {"task": "sst2", "data_dir": "data", "output_dir": str(tmp_path / "grid")}
    flagged = build_config([("flags", {**base, "seed": "99"})])
    with pytest.raises(
        ConfigError, match="^--seed 99 and --seeds 1,2: every run takes its seed from --seeds; "
    ):
        seed_variants(flagged, [1, 2])
    flagged = build_config([("flags", {**base, "learning_rate": "3e-2"})])
    with pytest.raises(ConfigError, match="^--learning-rate 0.03 and --learning-rates 0.01,0.02: every run "):
        grid_variants(flagged, [4], [1e-2, 2e-2])
    flagged = build_config([("flags", {**base, "prefix_length": "8"})])
    with pytest.raises(
        ConfigError, match="^--prefix-length 8 and --prefix-lengths 4: .* drop --prefix-length$"
    ):
        grid_variants(flagged, [4], [1e-2])
    # a preset's or a file's value is what flags override: the lists win, as the layering says
    preset = PRESETS["copa-bert-large"]  # seed 44, learning rate 1e-2, prefix length 16
    layered = build_config(
        [(f"preset {preset.name}", preset.options), ("run.yaml", {"learning_rate": 5e-3}), ("flags", base)]
    )
    assert [config.seed for config in seed_variants(layered, [1, 2]).values()] == [1, 2]
    cell = grid_variants(layered, [4], [2e-2])["p4-lr0.02"]
    assert (cell.prefix_length, cell.learning_rate) == (4, 0.02)


def test_resume_continues_every_unfinished_cell_as_train_resume_does(tmp_path) -> None:
    """--resume with --seeds or a sweep was replaced by each cell's own judgement: a cell whose options changed
    was trained again from scratch (its state moved to previous-run) where ``train --resume`` refuses."""
    variants = grid_variants(base_config(tmp_path), [4], [1e-2, 2e-2])
    with pytest.raises(KeyboardInterrupt):
        run_variants(variants, FakeTrain(fail_at="p4-lr0.02"), log=lambda _: None, is_main=False)
    changed = TrainConfig(**{**base_config(tmp_path).to_dict(), "epochs": 5.0, "resume": True})
    again = FakeTrain()
    run_variants(grid_variants(changed, [4], [1e-2, 2e-2]), again, log=lambda _: None, is_main=False)
    assert [(c.learning_rate, c.resume) for c in again.seen] == [(0.01, True), (0.02, True)]
    same = TrainConfig(**{**changed.to_dict(), "eval_batch_size": 16})  # finished cells are still reused
    runs = run_variants(grid_variants(same, [4], [1e-2, 2e-2]), FakeTrain(), log=lambda _: None)
    assert [run.reused for run in runs] == [True, True]


def test_seeds_with_resume_refuse_a_cell_saved_under_other_options(
    tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    """The audit's case: a seed's run cut short after its state was saved, then ``--seeds 1 --resume`` with
    another learning rate trained it afresh ("a new run (not --resume)")."""
    argv = [*train_args(tiny_bert, sst2_dir, tmp_path / "seeds", "--max-steps", "1"), "--seeds", "1"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    (tmp_path / "seeds" / "seed-1" / "summary.json").unlink()  # as if it had been cut off after its save
    argv[argv.index("--learning-rate") + 1] = "5e-2"
    code, out, err = run_cli([*argv, "--resume"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert "--resume would continue the run saved in" in err and "learning_rate: 0.03 there, 0.05 now" in err
    assert (
        "a new run" not in out.replace(str(tmp_path.parent), "")
        and not (tmp_path / "seeds" / "seed-1" / "previous-run").exists()
    )


def test_a_reused_cell_whose_report_is_missing_gets_it_written(tmp_path) -> None:
    """A report that failed to write ended the sweep; the rerun reused the cell and never wrote it."""
    variants = grid_variants(base_config(tmp_path), [4], [1e-2])
    run_variants(variants, FakeTrain(), log=lambda _: None)
    report = tmp_path / "grid" / "p4-lr0.01" / "summary.md"
    assert report.is_file()
    report.unlink()
    said, again = [], FakeTrain()
    runs = run_variants(variants, again, log=said.append)
    assert again.seen == [] and runs[0].reused and report.is_file()
    assert "accuracy" in report.read_text() and "p4-lr0.01: wrote its missing summary.md" in said
