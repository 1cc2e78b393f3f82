"""Run reports: summary.md from a summary dict, the curves PNG, and mean ± std over seeds."""

from __future__ import annotations

import math

import pytest

from ptuning.training.report import aggregate_seeds, seeds_markdown, summary_markdown, write_run_report

SUMMARY = {
    "task": "sst2",
    "method": "ptuning-v2",
    "model": "minilm",
    "seed": 42,
    "trainable_params": 1234,
    "total_params": 22_000_000,
    "trainable_percent": 0.0056,
    "primary_metric": "accuracy",
    "best_epoch": 2.0,
    "dev": {"accuracy": 0.8125},
    "test": {"accuracy": 0.75},
    "updates": 8,
    "train_examples_per_second": 100.0,
    "wall_seconds": 3.2,
    "checkpoint": "runs/x/checkpoint",
    "data": {"train": {"examples": 32, "skipped": 0, "unlabelled": 0, "truncated": 1, "notes": ["cut 1"]}},
    "history": [
        {"epoch": 1.0, "update": 4, "train_loss": 0.69, "dev": {"accuracy": 0.5}, "test": {"accuracy": 0.5}},
        {
            "epoch": 2.0,
            "update": 8,
            "train_loss": 0.41,
            "dev": {"accuracy": 0.8125},
            "test": {"accuracy": 0.75},
        },
    ],
}


def test_summary_markdown_holds_scores_history_and_data() -> None:
    text = summary_markdown(SUMMARY)
    assert "| dev | 0.8125 |" in text and "| test | 0.7500 |" in text
    assert "| 1.00 | 4 | 0.6900 | 0.5000 | 0.5000 |" in text
    assert "| train | 32 | 0 | 0 | 1 |" in text and "- cut 1" in text
    assert "1,234 of 22,000,000" in text


def test_run_report_writes_markdown_and_png(tmp_path) -> None:
    written = write_run_report(tmp_path, SUMMARY)
    assert [path.name for path in written] == ["summary.md", "curves.png"]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "![loss and accuracy curves](curves.png)" in (tmp_path / "summary.md").read_text()


def test_run_without_history_has_no_plot(tmp_path) -> None:
    written = write_run_report(tmp_path, {**SUMMARY, "history": []})
    assert [path.name for path in written] == ["summary.md"]


def test_seed_aggregate_is_mean_and_sample_std() -> None:
    summaries = {
        seed: {**SUMMARY, "seed": seed, "dev": {"accuracy": dev}, "test": {"accuracy": test}}
        for seed, dev, test in ((1, 0.7, 0.6), (2, 0.8, 0.7), (3, 0.9, 0.8))
    }
    aggregate = aggregate_seeds(summaries)
    assert aggregate["seeds"] == [1, 2, 3]
    assert aggregate["dev"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert aggregate["dev"]["accuracy"]["std"] == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert aggregate["test"]["accuracy"]["values"] == [0.6, 0.7, 0.8]
    assert "| dev | accuracy | 0.8000 ± 0.1000 | 0.7000 | 0.8000 | 0.9000 |" in seeds_markdown(aggregate)


def test_one_seed_has_zero_std_and_metrics_must_be_shared() -> None:
    one = aggregate_seeds({5: SUMMARY})
    assert one["dev"]["accuracy"] == {"mean": 0.8125, "std": 0.0, "values": [0.8125]}
    two = aggregate_seeds({1: SUMMARY, 2: {**SUMMARY, "test": None}})
    assert two["test"] == {} and math.isclose(two["dev"]["accuracy"]["mean"], 0.8125)
