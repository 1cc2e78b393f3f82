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


@pytest.mark.parametrize("config", ["fp32", "bf16+checkpointing", "int8+checkpointing"])
def test_the_small_shape_trains_and_reports_memory_and_speed(config: str) -> None:
    row = load("bench_memory").run_one("small", config)
    assert row["config"] == config and row["parameters"] > 0
    assert row["peak_rss_mb"] >= row["rss_after_build_mb"] > 0 and row["tokens_per_second"] > 0
    # the training peak restarts from the RSS after building: at least that, at most the process peak
    assert row["rss_after_build_mb"] - 1 <= row["training_peak_rss_mb"] <= row["peak_rss_mb"] + 1
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
        "--compile-backend",
        "eager",  # Dynamo traces the compiled variants; no kernels are built
    ]
    bench = load("bench_precision")
    assert bench.main(argv) == 0
    results = json.loads(output.read_text())["results"]
    assert list(results) == list(bench.VARIANTS)
    assert {"fp32-compiled", "bf16-compiled"} < set(results) and "int8-dynamic-per-tensor" in results
    assert results["fp32"]["predictions_changed_vs_fp32"] == 0
    assert results["fp32-compiled"]["predictions_changed_vs_fp32"] == 0
    assert results["bf16-compiled"]["backbone_mb"] == results["bf16"]["backbone_mb"]
    assert results["bf16"]["backbone_mb"] < results["fp32"]["backbone_mb"]
    assert (
        results["int8"]["backbone_mb"] < results["fp32"]["backbone_mb"]
    )  # the tiny BERT is mostly embeddings
    assert all(0 <= r["accuracy"] <= 1 and r["examples"] == 16 for r in results.values())


def test_the_table_gives_each_training_peak_against_peft_fp32_and_a_failed_row_its_error() -> None:
    rows = [
        {
            "config": "bf16+checkpointing",
            "rss_after_build_mb": 2484,
            "peak_rss_mb": 2758,
            "training_peak_rss_mb": 2760,
            "tokens_per_second": 9,
        },
        {"config": "fp32", "rss_after_build_mb": 4400, "peak_rss_mb": 5951, "tokens_per_second": 20},
        {
            "config": "peft-fp32",
            "rss_after_build_mb": 4582,
            "peak_rss_mb": 6000,
            "training_peak_rss_mb": 6000,
            "tokens_per_second": 20,
        },
        {
            "config": "peft-fp32+checkpointing",
            "error": "ValueError: PREFIX_TUNING does not work with gradient",
        },
    ]
    lines = load("bench_memory").table(rows).splitlines()
    assert lines[2] == "| bf16+checkpointing | 2,484 | 2,758 | 2,760 | 0.46 | 9 |"
    assert lines[3] == "| fp32 | 4,400 | 5,951 | - | - | 20 |"  # a row from before the training peak
    assert lines[4] == "| peft-fp32 | 4,582 | 6,000 | 6,000 | 1.00 | 20 |"
    assert lines[5].startswith("| peft-fp32+checkpointing | fails: ValueError: PREFIX_TUNING")


def test_a_run_adds_its_rows_to_the_results_file_and_keeps_the_others(tmp_path) -> None:
    """PEFT's rows come from another interpreter (transformers 5.23): one run must not erase the other's."""
    output = tmp_path / "small.json"
    peft_row = {"config": "peft-fp32", "rss_after_build_mb": 1, "peak_rss_mb": 800, "tokens_per_second": 1}
    output.write_text(json.dumps({"shape": "small", "runs": [peft_row]}))
    assert load("bench_memory").main(["--small", "--configs", "fp32", "--output", str(output)]) == 0
    runs = json.loads(output.read_text())["runs"]
    assert [run["config"] for run in runs] == ["fp32", "peft-fp32"] and runs[1] == peft_row


@pytest.mark.skipif(
    importlib.util.find_spec("peft") is None, reason="PEFT runs in the transformers 5.23 venv"
)
def test_peft_prefix_tuning_trains_the_small_shape_and_its_checkpointing_refusal_is_recorded(
    tmp_path,
) -> None:
    bench = load("bench_memory")
    row = bench.run_one("small", "peft-fp32")
    assert row["peft"] and row["peak_rss_mb"] > 0 and len(row["losses"]) == 3
    output = tmp_path / "small.json"
    assert bench.main(["--small", "--configs", "peft-fp32+checkpointing", "--output", str(output)]) == 0
    (failed,) = json.loads(output.read_text())["runs"]
    assert failed["error"] == "ValueError: PREFIX_TUNING does not work with gradient checkpointing."


def test_decoder_cache_benchmark_runs_both_variants_in_fresh_processes(tmp_path: Path) -> None:
    output = tmp_path / "decoder-cache.json"
    load("bench_decoder_cache").main(["--small", "--output", str(output)])
    result = json.loads(output.read_text())
    assert result["shape"] == "small" and result["layers"] == 2
    peaks = result["peak_above_resident_mb"]
    assert set(peaks) == {"default-cache", "ours"} and all(len(p) == 2 for p in peaks.values())
    assert all(peak >= 0 for p in peaks.values() for peak in p)
