"""The time-to-target benchmark trains ``ours`` with the recipe ``ptuning train`` uses, records it, and never
compares runs of two recipes (issue 16: the old loop had torch's AdamW weight_decay=0.01, the engine 0.0)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from test_smoke import load_benchmark

from ptuning.training.config import TrainConfig


class SpyAdamW(torch.optim.AdamW):
    """torch's AdamW that remembers every instance (to read the weight decay it was built with)."""

    built: list[torch.optim.AdamW] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        SpyAdamW.built.append(self)


def run_ours(ttt, tiny_model: str, data_root: Path, recipe) -> None:
    from transformers import AutoTokenizer

    budget = replace(ttt.smoke_budget("sst2"), target=1.01)  # never reached: all 8 steps run
    data, dev = ttt.load_target_data(budget, AutoTokenizer.from_pretrained(tiny_model), data_root)
    ttt.train_ours(tiny_model, data, dev, budget, 0.01, 42, recipe)


def test_ours_trains_with_the_engine_recipe_and_records_it(tiny_model, data_root, tmp_path, monkeypatch):
    ttt = load_benchmark("speed_time_to_target")
    SpyAdamW.built.clear()
    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)

    output = tmp_path / "time-to-target-sst2.jsonl"
    ttt.measure_time_to_target(ttt.smoke_budget("sst2"), tiny_model, data_root, output, ["ours"], [0.01])

    assert [group["weight_decay"] for group in SpyAdamW.built[0].param_groups] == [TrainConfig().weight_decay]
    assert TrainConfig().weight_decay == 0.0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert TrainConfig().max_grad_norm == 1.0  # clipping is ptuning train's default, as the Trainer's
    assert record["recipe"] == {"weight_decay": 0.0, "max_grad_norm": 1.0} == asdict(ttt.TRAINER_RECIPE)


def test_gradient_clipping_applies_the_recipe_norm(tiny_model, data_root, monkeypatch):
    ttt = load_benchmark("speed_time_to_target")
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        total = clip(parameters, max_norm, *args, **kwargs)
        norms.append(max_norm)
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run_ours(ttt, tiny_model, data_root, ttt.Recipe(weight_decay=0.0, max_grad_norm=None))
    assert norms == []  # no clipping asked, none done
    run_ours(ttt, tiny_model, data_root, ttt.Recipe(weight_decay=0.0, max_grad_norm=0.5))
    assert norms == [0.5] * 8  # before every optimizer step of the smoke budget


def test_runs_of_another_recipe_are_kept_apart(tiny_model, data_root, tmp_path):
    ttt = load_benchmark("speed_time_to_target")
    output = tmp_path / "time-to-target-sst2.jsonl"
    budget = ttt.smoke_budget("sst2")
    ttt.measure_time_to_target(budget, tiny_model, data_root, output, ["ours"], [0.01])
    legacy = ttt.Recipe(weight_decay=0.01, max_grad_norm=None)
    # Same system, lr, seed and budget, another recipe: a new run, not "in the file already".
    ttt.measure_time_to_target(
        budget, tiny_model, data_root, output, ["ours"], [0.01], recipes={"ours": legacy}
    )
    records = ttt.read_records(output)
    assert [r["recipe"]["weight_decay"] for r in records] == [0.0, 0.01]
    # A line written before recipes were recorded is the old loop's (torch's default weight decay 0.01).
    old = {key: value for key, value in records[1].items() if key != "recipe"}
    assert ttt.recipe_of(old) == {"weight_decay": 0.01, "max_grad_norm": None}
    assert ttt.run_key(old) == ttt.run_key(records[1]) != ttt.run_key(records[0])
    assert [ttt.is_current(r) for r in (records[0], records[1], old)] == [True, False, False]

    table = "\n".join(ttt.render_time_to_target(records))
    assert table.count("| ours (sdpa") == 1  # only the current recipe's run is in the compared table
    assert (
        "* not compared (another recipe): ours (sdpa, dynamic padding, length-grouped), weight decay 0.01"
        in table
    )
