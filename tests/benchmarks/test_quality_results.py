"""What the quality tables read from the results files: which setting a sweep chooses when a run has no real dev
score or two runs tie, and how a malformed results line is reported."""

from __future__ import annotations

import json
import math
import re

import pytest
import quality_protocol
import quality_results
import quality_tables
from test_quality_plan import write_records

SWEEP = quality_protocol.SWEEPS["ptuning-v2"]  # lr 5e-3 / 1e-2 / 3e-2 / 1e-1, P 16


def sst2_sweep(tmp_path, devs: tuple[float | None, ...]) -> quality_results.Bench:
    """A MiniLM results folder holding only SST-2's P-tuning v2 sweep, with these dev accuracies in sweep order."""
    bench = quality_results.Bench(results_dir=tmp_path)
    write_records(
        bench,
        "sst2",
        [{"method": "ptuning-v2", "setting": s, "dev": d} for s, d in zip(SWEEP, devs, strict=True)],
    )
    return bench


def ptuning_row(bench: quality_results.Bench) -> str:
    """P-tuning v2's row of SST-2's table."""
    return next(
        line for line in quality_tables.render_task(bench, "sst2") if line.startswith("| P-tuning v2 |")
    )


@pytest.mark.parametrize(
    ("devs", "missing"),
    [
        ((math.nan, 0.80, 0.85, 0.50), 0),  # first: max() kept it, since nothing compares greater than NaN
        ((0.80, math.nan, 0.85, 0.50), 1),
        ((None, 0.80, 0.85, 0.50), 0),
    ],
)
def test_a_sweep_run_without_a_real_dev_score_is_never_chosen_wherever_it_stands(tmp_path, devs, missing):
    bench = sst2_sweep(tmp_path, devs)
    assert quality_results.chosen_setting(bench, "sst2", "ptuning-v2") == SWEEP[2]  # the 85 %
    run = quality_results.sweep_runs(bench, "sst2", "ptuning-v2")[missing]
    assert quality_results.dev_score(run, bench.budgets["sst2"]) == float("-inf")
    assert f"lr {SWEEP[missing]['learning_rate']:g}, P 16: no score;" in ptuning_row(bench)


def test_a_tie_keeps_the_first_setting_of_the_sweep_and_the_table_marks_the_tied_ones(tmp_path):
    bench = sst2_sweep(tmp_path, (0.50, 0.85, 0.80, 0.85))
    assert quality_results.chosen_setting(bench, "sst2", "ptuning-v2") == SWEEP[1]
    assert quality_results.tied_settings(bench, "sst2", "ptuning-v2") == [SWEEP[1], SWEEP[3]]
    row = ptuning_row(bench)
    assert row.startswith("| P-tuning v2 | lr 0.01, P 16 |")
    assert row.endswith(
        "| lr 0.005, P 16: 50.0; lr 0.01, P 16: 85.0 (tie, chosen); lr 0.03, P 16: 80.0; lr 0.1, P 16: 85.0 (tie) |"
    )


def test_a_unique_best_marks_no_tie(tmp_path):
    bench = sst2_sweep(tmp_path, (0.50, 0.85, 0.80, 0.84))
    assert quality_results.tied_settings(bench, "sst2", "ptuning-v2") == []
    assert "tie" not in ptuning_row(bench)


def test_a_last_line_still_being_appended_is_left_out(tmp_path):
    path = tmp_path / "sst2.jsonl"
    path.write_text(json.dumps({"seed": 42}) + "\n" + '{"seed": 4')
    assert quality_results.read_jsonl(path) == [{"seed": 42}]


def test_a_cut_line_before_the_last_names_its_file_and_line(tmp_path):
    """A run killed mid-line leaves a fragment; the next run's line is appended right after it."""
    path = tmp_path / "sst2.jsonl"
    path.write_text(json.dumps({"seed": 42}) + "\n" + '{"seed": 4' + json.dumps({"seed": 44}) + "\n")
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(path))}:2: expected one run per line as a JSON object; Expecting"
    ):
        quality_results.read_jsonl(path)


def test_a_line_that_is_json_but_not_a_run_names_its_file_and_line(tmp_path):
    path = tmp_path / "sst2.jsonl"
    path.write_text("\n" + json.dumps({"seed": 42}) + "\n[1, 2]\n")
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(path))}:3: expected one run per line as a JSON object, got '\[1, 2\]'",
    ):
        quality_results.read_jsonl(path)
