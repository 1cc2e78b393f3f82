"""speed.py --time-to-target: the tables compare the committed series only (the task's default budget on MiniLM),
a --smoke run never writes into benchmarks/results, and ours' recipe overrides reach every system our loop
trains."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, replace
from typing import Any

from test_smoke import load_benchmark

HEADLINE = "| time to target dev score ≥ 2× faster than (a'') (issue 16) | "


def run(ttt, system: str, budget, model: str, steps: int, seconds: float) -> dict[str, Any]:
    """One reached run at lr 0.03, seed 42, as ``measure_time_to_target`` records it."""
    return {
        "task": budget.task,
        "system": system,
        "learning_rate": 0.03,
        "seed": 42,
        "budget": asdict(budget),
        "recipe": asdict(ttt.system_recipe(system)),
        "reached": True,
        "seconds_to_target": seconds,
        "steps_to_target": steps,
        "best_score": 0.85,
        "train_seconds": seconds,
        "steps": steps,
        "evaluations": [{"step": steps, "train_seconds": seconds, "score": 0.85}],
        "train_examples": 67349,
        "dev_examples": 872,
        "model": model,
        "threads": 1,
        "load_average": [1.0, 1.0],
        "measured_at": "2026-12-06T12:00:00",
    }


def test_runs_of_another_budget_or_model_leave_the_headline_and_table_unchanged(tmp_path):
    ttt = load_benchmark("speed_time_to_target")
    targets = load_benchmark("speed_targets")
    full = ttt.BUDGETS["sst2"]
    committed = [
        run(ttt, "ours", full, "minilm", 200, 40.0),
        run(ttt, "peft-trainer-grouped", full, "minilm", 300, 60.0),
    ]
    # a smoke run (tiny model, 8 steps of 4) and a --target-score 0.5 run, both of ours and much faster
    extra = [
        run(ttt, "ours", ttt.smoke_budget("sst2"), "tiny-bert0", 4, 0.5),
        run(ttt, "ours", replace(full, target=0.5), "minilm", 50, 10.0),
    ]
    results = tmp_path / "results"
    results.mkdir()
    runs = results / "time-to-target-sst2.jsonl"

    def render() -> tuple[str, list[str]]:
        headline = next(line for line in targets.render_targets(results) if line.startswith(HEADLINE))
        return headline, ttt.render_time_to_target(ttt.read_records(runs))

    runs.write_text("".join(json.dumps(r) + "\n" for r in committed))
    headline, table = render()
    assert headline.startswith(HEADLINE + "1.50×, clock 1.50× (40 vs 60 s) | not measured |")
    assert "* (a'') ÷ ours, each at its best lr, by the clock: 1.50x the time to target" in table

    runs.write_text("".join(json.dumps(r) + "\n" for r in committed + extra))
    assert render()[0] == headline  # mixed in, ours' median at lr 0.03 was 20.25 s: 2.96×
    mixed = render()[1]
    assert (
        mixed[: len(table) - 1] == table[:-1]
    )  # the same table, then the runs left out, then the blank line
    assert mixed[len(table) - 1 : -1] == [
        "* not compared (another budget or model: model tiny-bert0, train_examples 16, dev_examples 8, "
        "max_steps 8, eval_every 4, batch_size 4, eval_batch_size 4): ours (sdpa, dynamic padding, "
        "length-grouped), weight decay 0, gradients clipped to norm 1, lr 0.03: steps to target by seed "
        "42: 4 (median 4); best dev 85.0",
        "* not compared (another budget or model: target 0.5): ours (sdpa, dynamic padding, length-grouped), "
        "weight decay 0, gradients clipped to norm 1, lr 0.03: steps to target by seed 42: 50 (median 50); "
        "best dev 85.0",
    ]


def test_a_file_of_smoke_runs_only_compares_its_own_series(tmp_path):
    """A smoke run's own folder still renders its table (the first run's series), never mixed with another."""
    ttt = load_benchmark("speed_time_to_target")
    smoke = ttt.smoke_budget("sst2")
    records = [
        run(ttt, "ours", smoke, "tiny-bert0", 4, 0.5),
        run(ttt, "peft-trainer-grouped", smoke, "tiny-bert0", 8, 1.0),
        run(ttt, "peft-trainer-grouped", replace(smoke, max_steps=4), "tiny-bert0", 4, 0.1),
    ]
    table = ttt.render_time_to_target(records)
    assert "at most 8 steps of batch 4" in table[2]
    assert "* (a'') ÷ ours, each at its best lr, by the clock: 2.00x the time to target" in table
    assert table[-2].startswith("* not compared (another budget or model: max_steps 4): (a'')")


def capture_time_to_target(speed, monkeypatch) -> list[dict[str, Any]]:
    """speed.main's calls of measure_time_to_target, recorded instead of run."""
    calls: list[dict[str, Any]] = []

    def record(budget, folder, data_root, output, systems, learning_rates, seeds, recipes):
        calls.append({"budget": budget, "output": output, "systems": systems, "recipes": recipes})
        return []

    monkeypatch.setattr(speed, "measure_time_to_target", record)
    return calls


def test_a_smoke_run_writes_to_a_temporary_folder_unless_given_one(tmp_path, monkeypatch):
    speed = load_benchmark("speed")
    committed = tmp_path / "committed"
    monkeypatch.setattr(speed, "RESULTS_DIR", committed)  # stands for benchmarks/results/speed
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    calls = capture_time_to_target(speed, monkeypatch)
    common = ["--smoke", str(tmp_path / "tiny"), "--work-dir", str(tmp_path / "work"), "--threads", "1"]

    speed.main([*common, "--time-to-target", "sst2"])
    (output,) = [call["output"] for call in calls]
    assert output.parent.parent == tmp_path / "tmp" and output.parent.name.startswith("ptuning-speed-smoke-")
    assert not committed.exists()
    speed.main([*common, "--time-to-target", "sst2", "--results-dir", str(tmp_path / "mine")])
    assert calls[1]["output"] == tmp_path / "mine" / "time-to-target-sst2.jsonl"


def test_target_recipe_flags_reach_every_system_our_loop_trains(tmp_path, monkeypatch):
    speed = load_benchmark("speed")
    ttt = load_benchmark("speed_time_to_target")
    calls = capture_time_to_target(speed, monkeypatch)
    ours = [name for name in ttt.TRAINERS if not name.startswith("peft-trainer")]
    assert len(ours) == 8  # ours, ours-bf16, ours-mean-pooling, the diagnoses, --backbone-dropout 0
    command = ["--smoke", str(tmp_path / "tiny"), "--results-dir", str(tmp_path / "results")]
    command += ["--work-dir", str(tmp_path / "work"), "--time-to-target", "sst2", "--systems", *ttt.TRAINERS]
    speed.main([*command, "--target-max-grad-norm", "0", "--target-weight-decay", "0.05"])

    (call,) = calls
    assert call["systems"] == list(ttt.TRAINERS)
    # measure_time_to_target trains a system without an override with its own recipe (system_recipe)
    used = {name: asdict(call["recipes"].get(name, ttt.system_recipe(name))) for name in call["systems"]}
    assert used == {
        **{name: {"weight_decay": 0.05, "max_grad_norm": None} for name in ours},
        "peft-trainer-grouped": asdict(ttt.TRAINER_RECIPE),  # the Trainer's defaults, whatever ours' flags
        "peft-trainer-grouped-no-dropout": asdict(ttt.TRAINER_RECIPE),
    }
