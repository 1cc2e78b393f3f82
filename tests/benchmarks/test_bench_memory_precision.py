"""Smoke tests of benchmarks/bench_memory.py (its --small shape, in this process; the script runs each
configuration in its own process to measure peak RSS) and benchmarks/bench_precision.py (a tiny BERT on 16
SST-2 sentences through every backbone variant)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tiny_models import save_tiny_bert

REPO = Path(__file__).resolve().parents[2]


def load(name: str):
    """Import benchmarks/<name>.py (a script, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", ["fp32", "bf16+checkpointing"])
def test_the_small_shape_trains_and_reports_memory_and_speed(config: str) -> None:
    row = load("bench_memory").run_one("small", config)
    assert row["config"] == config and row["parameters"] > 0
    assert row["peak_rss_mb"] >= row["rss_after_build_mb"] > 0 and row["tokens_per_second"] > 0
    assert len(row["losses"]) == 3 and all(loss == loss for loss in row["losses"])  # finite, not NaN


def test_unknown_configs_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        load("bench_memory").main(["--small", "--configs", "int3"])
    assert "unknown configs ['int3']" in capsys.readouterr().err


def test_bench_precision_scores_one_prompt_on_every_backbone_variant(tmp_path) -> None:
    model = save_tiny_bert(tmp_path / "tiny-bert")
    (tmp_path / "sst2").mkdir()
    rows = [
        "label\tsentence",
        *(f"{i % 2}\t{'a fine' if i % 2 else 'a dull'} film number {i}" for i in range(16)),
    ]
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "sst2" / name).write_text("\n".join(rows) + "\n")
    output = tmp_path / "precision.json"
    argv = [
        "--model",
        model,
        "--data",
        str(tmp_path / "sst2"),
        "--max-train-samples",
        "16",
        "--output",
        str(output),
    ]
    assert load("bench_precision").main(argv) == 0
    results = json.loads(output.read_text())["results"]
    assert list(results) == ["fp32", "bf16", "int8", "int8-dynamic", "int8-dynamic-per-tensor"]
    assert results["fp32"]["predictions_changed_vs_fp32"] == 0
    assert results["bf16"]["backbone_mb"] < results["fp32"]["backbone_mb"]
    assert results["int8"]["backbone_mb"] < results["fp32"]["backbone_mb"]  # the tiny BERT is mostly embeddings
    assert all(0 <= r["accuracy"] <= 1 and r["examples"] == 16 for r in results.values())
