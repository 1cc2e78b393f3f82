"""Smoke run of benchmarks/speed_packing.py on a 2-layer random BERT: every layout trains and infers, the
result file holds each layout's rate, padding share and dev accuracy. No speed is asserted (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_smoke import load_benchmark

CONLL = (
    "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O\n\nPeter NNP B-NP B-PER\n"
)


def write_data(root: Path) -> None:
    (root / "sst2").mkdir(parents=True)
    rows = ["label\tsentence"] + [
        f"{i % 2}\ta {'fine' if i % 2 else 'dull'} film {'truly ' * (i % 5)}" for i in range(24)
    ]
    for name in ("train.tsv", "dev.tsv"):
        (root / "sst2" / name).write_text("\n".join(rows) + "\n")
    (root / "conll2003").mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (root / "conll2003" / name).write_text("-DOCSTART- -X- -X- O\n\n" + (CONLL + "\n") * 6)


@pytest.mark.parametrize("workload", ["sst2-minilm", "conll2003-minilm"])
def test_speed_packing_measures_every_layout(workload, tiny_model, tmp_path) -> None:
    packing = load_benchmark("speed_packing")
    write_data(tmp_path / "data")
    output = tmp_path / "packing.json"
    argv = ["--workload", workload, "--model", tiny_model, "--data-root", str(tmp_path / "data")]
    argv += ["--repeats", "1", "--train-examples", "16", "--eval-examples", "12", "--pack-lengths", "64,8"]
    assert packing.main([*argv, "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["layouts"] == ["grouped", "packed-64", "packed-8"]
    for mode in ("train", "infer"):
        entries = result["summary"][mode]
        assert all(entries[name]["examples_per_second"] > 0 for name in result["layouts"])
        assert entries["grouped"]["ratio_to_grouped"] == 1.0
        assert all(0 <= entries[name]["padding_fraction"] < 1 for name in result["layouts"])
    assert set(result["summary"]["dev_accuracy"]) == set(result["layouts"])


def test_speed_packing_quality_ab_trains_both_layouts_per_seed(tiny_model, tmp_path) -> None:
    packing = load_benchmark("speed_packing")
    write_data(tmp_path / "data")
    output = tmp_path / "quality.json"
    sets = [f"model={tiny_model}", "max_steps=1", "max_train_samples=16"]

    def in_process(preset, kind, seed, data_root, sets):  # fresh processes would cost a minute here
        return packing.train_one(preset, kind == "packed", seed, data_root, packing.parse_sets(sets))

    packing.quality(["sst2-minilm"], [1], tmp_path / "data", sets, output, runner=in_process)
    summary = json.loads(output.read_text())["summary"]["sst2-minilm"]
    assert set(summary) == {"grouped", "packed"}
    assert all(
        entry["primary_metric"] == "accuracy" and 0 <= entry["mean_dev"] <= 1 for entry in summary.values()
    )
