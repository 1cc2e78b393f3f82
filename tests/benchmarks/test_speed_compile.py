"""Smoke run of benchmarks/speed_compile.py on a 2-layer random BERT, on a few SST-2 and CoNLL-2003 lines: every
code path (warm-up, interleaved rounds, summary, result file), traced by Dynamo with the ``eager`` backend so
that no kernels are built and the run takes seconds. No speed is checked beyond "the run produced it"."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_speed_packing_smoke import write_data
from tiny_models import save_tiny_bert

REPO = Path(__file__).resolve().parents[2]


def _load_speed_compile():
    if str(REPO / "benchmarks") not in sys.path:  # the script imports its sibling modules
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "benchmark_speed_compile", REPO / "benchmarks" / "speed_compile.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", ["sst2", "conll2003"])
def test_speed_compile_smoke_writes_both_modes_and_the_compile_counts(task: str, tmp_path: Path) -> None:
    model = save_tiny_bert(tmp_path / "tiny-bert", dropout=0.1)
    write_data(tmp_path / "data")  # SST-2 sentences and CoNLL-2003 sentences of different lengths
    results = tmp_path / "results"

    _load_speed_compile().main(
        ["--smoke", model, "--smoke-task", task, "--backend", "eager", "--threads", "1"]
        + [
            "--data-root",
            str(tmp_path / "data"),
            "--results-dir",
            str(results),
            "--work-dir",
            str(tmp_path / "w"),
        ]
    )

    result = json.loads((results / "compile-smoke.json").read_text())
    assert result["backend"] == "eager" and result["threads"] == 1 and result["workload"]["task"] == task
    for mode in ("train", "infer"):
        summary = result["summary"][mode]
        assert summary["examples_per_second"]["eager"] > 0 and summary["examples_per_second"]["compiled"] > 0
        assert len(result["rounds_examples_per_second"][mode]["compiled"]) == 2
    assert result["distinct_train_lengths"] > 1  # batches of different lengths went through one dynamic graph
    assert result["compile"]["graphs_at_warmup"] >= 1
