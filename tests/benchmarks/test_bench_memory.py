"""Smoke test of benchmarks/bench_memory.py: its --small shape, each backbone dtype with and without
gradient checkpointing, in this process (the script runs each in its own process to measure peak RSS)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench_memory():
    spec = importlib.util.spec_from_file_location(
        "benchmark_bench_memory", REPO / "benchmarks" / "bench_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", ["fp32", "bf16+checkpointing"])
def test_the_small_shape_trains_and_reports_memory_and_speed(config: str) -> None:
    row = bench_memory().run_one("small", config)
    assert row["config"] == config and row["parameters"] > 0
    assert row["peak_rss_mb"] >= row["rss_after_build_mb"] > 0 and row["tokens_per_second"] > 0
    assert len(row["losses"]) == 3 and all(loss == loss for loss in row["losses"])  # finite, not NaN


def test_unknown_configs_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        bench_memory().main(["--small", "--configs", "int3"])
    assert "unknown configs ['int3']" in capsys.readouterr().err
