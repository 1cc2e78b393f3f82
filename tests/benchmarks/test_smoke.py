"""Smoke versions of the benchmarks: every code path of benchmarks/quality.py and benchmarks/speed.py on a
2-layer random BERT and a 16-line SST-2, so that CI notices when a benchmark breaks. No numbers are checked
beyond "the run produced them"."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import quality
import quality_protocol
import quality_results
import quality_runner
import quality_tables
import torch

from ptuning.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    """Import benchmarks/<name>.py (a script folder, not a package) as a module."""
    if str(REPO / "benchmarks") not in sys.path:  # the scripts import their sibling modules
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quality_cells_run_resume_and_render(tiny_model, data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(quality_protocol.SWEEPS, "ptuning-v2", [{"learning_rate": 1e-2, "prefix_length": 4}])
    monkeypatch.setattr(quality_results, "EXTRA_SEEDS", (43,))  # where cell_runs reads it
    results = tmp_path / "results"
    common = ["--scale", "smoke", "--results-dir", str(results), "--data-root", str(data_root)]
    common += ["--model", tiny_model]

    quality.main([*common, "--cell", "sst2:ptuning-v2:sweep"])
    quality.main([*common, "--cell", "sst2:ptuning-v2:sweep"])  # done already: skipped
    quality.main([*common, "--cell", "sst2:ptuning-v2:seeds"])
    records = [json.loads(line) for line in (results / "sst2.jsonl").read_text().splitlines()]
    assert [(r["cell"], r["seed"]) for r in records] == [
        ("sst2:ptuning-v2:sweep", 42),
        ("sst2:ptuning-v2:seeds", 43),
    ]
    assert 0.0 <= records[0]["dev"]["accuracy"] <= 1.0 and records[0]["trainable_params"] > 0

    capsys.readouterr()
    quality.main([*common, "--table"])
    tables = capsys.readouterr().out
    assert "| P-tuning v2 | lr 0.01, P 4 |" in tables
    assert "Pending cells" in tables and "`sst2:finetune:sweep`" in tables


def test_a_killed_run_continues_where_its_state_was_saved_and_scores_as_if_uninterrupted(
    tiny_model, data_root, tmp_path, monkeypatch, capsys
):
    """An MPNet run on SQuAD outlives the machine's loan: started again, it must pick up its saved state and
    end with the record an uninterrupted run writes (the engine restores optimizer, RNG and data order)."""
    from ptuning.training.trainer import Trainer

    longer = {"learning_rate": 1e-2, "prefix_length": 4, "epochs_factor": 3}  # 3 epochs of 2 batches
    monkeypatch.setitem(quality_protocol.SWEEPS, "ptuning-v2", [longer])
    monkeypatch.setattr(quality_runner, "SAVE_EVERY_UPDATES", 1)

    def command(results: Path) -> list[str]:
        common = ["--scale", "smoke", "--results-dir", str(results), "--data-root", str(data_root)]
        return [*common, "--model", tiny_model, "--cell", "sst2:ptuning-v2:sweep"]

    quality.main(command(tmp_path / "whole"))
    (whole,) = [json.loads(line) for line in (tmp_path / "whole" / "sst2.jsonl").read_text().splitlines()]

    advance = Trainer._advance

    def killed_after_three(self, micro, name, loss):
        advance(self, micro, name, loss)
        if micro == 3:
            raise KeyboardInterrupt  # as a kill would, mid-epoch, after the state of batch 3 was saved

    results = tmp_path / "halves"
    monkeypatch.setattr(Trainer, "_advance", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        quality.main(command(results))
    assert not (results / "sst2.jsonl").exists()
    (folder,) = (results / quality_runner.IN_PROGRESS).iterdir()
    assert folder.name.startswith("sst2-ptuning-v2-seed42-")

    monkeypatch.setattr(Trainer, "_advance", advance)
    capsys.readouterr()
    quality.main(command(results))
    assert "after 3 batches" in capsys.readouterr().out
    (resumed,) = [json.loads(line) for line in (results / "sst2.jsonl").read_text().splitlines()]
    assert resumed["resumed_at_batch"] == 3 and whole["resumed_at_batch"] is None
    assert resumed["updates"] == whole["updates"] > 3
    assert resumed["curve"] == whole["curve"] and resumed["dev"] == whole["dev"]
    assert list((results / quality_runner.IN_PROGRESS).iterdir()) == []  # removed once recorded


def test_a_run_already_training_in_another_process_is_refused(tmp_path):
    folder = tmp_path / "run"
    held = quality_runner.claimed(folder)
    with held, pytest.raises(SystemExit, match="already training"), quality_runner.claimed(folder):
        pass


def test_a_run_outside_the_grid_changes_the_budget_and_keeps_out_of_the_tables(
    tiny_model, data_root, tmp_path
):
    results = tmp_path / "results"
    common = ["--scale", "smoke", "--results-dir", str(results), "--data-root", str(data_root)]
    common += ["--model", tiny_model]
    record_file = tmp_path / "reruns" / "long.jsonl"
    setting = {"learning_rate": 0.01, "prefix_length": 4, "epochs_factor": 2, "warmup_ratio": 0.1}
    extra = ["--extra", "sst2:ptuning-v2", "--seed", "43", "--setting", json.dumps(setting)]

    assert quality.main([*common, *extra, "--record", str(record_file)]) == 0

    (record,) = [json.loads(line) for line in record_file.read_text().splitlines()]
    budget = quality_protocol.smoke_budgets()["sst2"]
    assert record["setting"] == setting and record["seed"] == 43
    assert len(record["curve"]) == 2 * budget.epochs  # evaluated every epoch of twice the budget
    assert not results.exists() or not list(results.glob("*.jsonl"))  # the tables' files are untouched
    with pytest.raises(SystemExit):  # nor may --record point into them
        quality.main([*common, *extra, "--record", str(results / "sst2.jsonl")])


def test_quality_run_all_runs_jobs_in_parallel_and_waits_for_sweeps(
    tiny_model, data_root, tmp_path, monkeypatch
):
    # run_all starts each run as a subprocess of this script, which reads the real SWEEPS: restrict by task
    # and method through the results instead, and check what the subprocesses appended.
    results = tmp_path / "results"
    common = ["--scale", "smoke", "--results-dir", str(results), "--data-root", str(data_root)]
    common += ["--model", tiny_model]
    monkeypatch.setattr(
        quality_runner,
        "all_cells",
        lambda bench: [quality_protocol.Cell("sst2", "linear-probe", p) for p in ("sweep", "seeds")],
    )

    assert quality.main([*common, "--run-all", "--jobs", "2"]) == 0

    records = [json.loads(line) for line in (results / "sst2.jsonl").read_text().splitlines()]
    sweep = [r for r in records if r["phase"] == "sweep"]
    seeds = [r for r in records if r["phase"] == "seeds"]
    assert len(sweep) == len(quality_protocol.SWEEPS["linear-probe"]) and len(seeds) == len(
        quality_protocol.EXTRA_SEEDS
    )
    assert max(r["finished_at"] for r in sweep) <= min(r["finished_at"] for r in seeds)
    assert all(r["device"] == "cpu" for r in records)
    assert (
        quality_runner.pending_runs(quality_results.Bench(results, data_root, tiny_model, "smoke"), None)
        == []
    )


def test_quality_rejects_a_malformed_cell():
    with pytest.raises(ValueError, match="task:method:phase"):
        quality_protocol.Cell.parse("sst2:ptuning-v2")
    with pytest.raises(ValueError, match="unknown method"):
        quality_protocol.Cell.parse("sst2:adapters:sweep")
    with pytest.raises(ValueError, match="unknown ablation"):
        quality_protocol.Cell.parse("sst2:ptuning-v2:ablation-more-layers")


def test_ablations_that_set_the_pooling_apply_to_pooled_heads_only():
    names = quality_protocol.SCALING_ABLATIONS
    pooled = {"pooling", "pooling-warmup", "pooler-no-dropout"}
    assert set(quality_protocol.ablations_for("sst2", names)) >= pooled
    assert not pooled & set(quality_protocol.ablations_for("conll2004", names))
    assert {"long-prefix", "warmup", "top-layers-warmup"} <= set(
        quality_protocol.ablations_for("conll2004", names)
    )
    assert quality_protocol.ablation_changes("pooler-no-dropout", 6) == [
        {"pooling": "pooler", "prefix_dropout": 0.0}
    ]


def test_quality_large_scale_has_its_own_budgets_cells_and_doc_section(tmp_path, capsys):
    large = quality_results.Bench(tmp_path, tmp_path, "minilm", "large")
    full = quality_results.Bench(tmp_path, tmp_path, "minilm", "full")
    cells = quality_results.all_cells(large)
    assert {c.task for c in cells} == set(quality_protocol.LARGE_BUDGETS)
    assert {c.method for c in cells} == set(quality_protocol.LARGE_SWEEPS) and all(
        c.phase in ("sweep", "seeds") for c in cells
    )
    for task, budget in quality_protocol.LARGE_BUDGETS.items():  # a different budget, so results never mix
        assert budget.fingerprint("minilm") != quality_protocol.BUDGETS[task].fingerprint("minilm")
    assert any(c.phase == "ablation-prefix-layers" for c in quality_results.all_cells(full))
    with pytest.raises(SystemExit):
        quality.main(
            ["--scale", "large", "--results-dir", str(tmp_path), "--cell", "sst2:linear-probe:sweep"]
        )
    doc = tmp_path / "RESULTS.md"
    doc.write_text(
        "a\n<!-- quality-tables:start -->\nold 1x\n<!-- quality-tables:end -->\n"
        "<!-- quality-large-tables:start -->\nold large\n<!-- quality-large-tables:end -->\n"
    )
    capsys.readouterr()
    quality.main(["--scale", "large", "--results-dir", str(tmp_path), "--table", "--update-doc", str(doc)])
    text = doc.read_text()
    assert "old 1x" in text and "old large" not in text and "Larger budgets" in text
    assert "all 67,349 train sentences" in text and "ablations" not in text


def test_quality_minilm_tables_cells_and_budget_ids_are_unchanged_by_backbones():
    doc = (REPO / "docs" / "RESULTS.md").read_text()
    for scale in ("full", "large"):  # what docs/RESULTS.md holds is what --table renders, to the character
        start, end = quality_tables.TABLE_MARKERS[scale]
        committed = doc.split(start)[1].split(end)[0]
        assert committed == "\n" + quality_tables.render_tables(quality_results.Bench(scale=scale))
    real = [
        json.loads(line) for line in (quality_results.RESULTS_DIR / "sst2.jsonl").read_text().splitlines()
    ]
    assert quality_results.Bench().budget_id("sst2") in {r["budget_id"] for r in real}
    cells = [c.name for c in quality_results.all_cells(quality_results.Bench())]
    assert len(cells) == 88 and not any("pooling" in c or "long-prefix" in c for c in cells)
    assert quality_protocol.ablation_changes("prefix-layers", 6) == [
        {"prefix_layers": [3, 4, 5]},
        {"prefix_layers": [0, 1, 2]},
    ]


def test_quality_mpnet_backbone_has_its_own_results_cells_and_layer_halves(tmp_path, capsys, monkeypatch):
    mpnet = quality_results.Bench(results_dir=tmp_path, model="minilm", backbone="mpnet")
    assert mpnet.budget_id("sst2") != quality_results.Bench().budget_id(
        "sst2"
    )  # even with the same model string
    assert quality_protocol.ablation_changes("prefix-layers", mpnet.spec.num_layers) == [
        {"prefix_layers": list(range(6, 12))},
        {"prefix_layers": list(range(6))},
    ]
    # MPNet's MLP sweep has one rate more, below the grid (its best was the lowest); MiniLM's is as measured
    assert [s["learning_rate"] for s in mpnet.sweeps["prefix-mlp"]] == [3e-4, 1e-3, 3e-3, 1e-4]
    assert [s["learning_rate"] for s in quality_results.Bench().sweeps["prefix-mlp"]] == [3e-4, 1e-3, 3e-3]
    assert mpnet.sweeps["ptuning-v2"] == quality_results.Bench().sweeps["ptuning-v2"]
    cells = {c.name for c in quality_results.all_cells(mpnet)}
    assert {"sst2:finetune:ablation-pooling", "superglue-rte:ptuning-v2:ablation-pooling"} <= cells
    assert "conll2004:ptuning-v2:ablation-long-prefix" in cells
    assert "conll2004:ptuning-v2:ablation-pooling" not in cells  # a tagging head reads every token
    # COPA is an ablation task at 110 M only (every method is at chance on it at 22 M)
    assert {"copa:ptuning-v2:ablation-quadruple-epochs", "copa:ptuning-v2:confirm-warmup"} <= cells
    assert not any(
        c.task == "copa" and "ablation" in c.phase for c in quality_results.all_cells(quality_results.Bench())
    )
    with pytest.raises(ValueError, match="pooled head"):
        quality_protocol.Cell.parse("conll2004:ptuning-v2:ablation-pooling")
    with pytest.raises(ValueError, match="pooling also for finetune"):
        quality_protocol.Cell.parse("sst2:finetune:ablation-long-prefix")
    minilm_with = quality_results.Bench(scaling_ablations=True)
    assert "sst2:finetune:ablation-pooling" in {c.name for c in quality_results.all_cells(minilm_with)}

    from ptuning.core import backbones  # the runner refuses before any run when the package is absent

    monkeypatch.delattr(backbones, "PACKAGED_MPNET", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        quality.main(
            ["--backbone", "mpnet", "--results-dir", str(tmp_path), "--cell", "sst2:ptuning-v2:sweep"]
        )
    assert refused.value.code == 2 and "packaged short name 'mpnet'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_cure_for_collapses_runs_every_seed_in_its_ablation_cell_and_has_no_confirm_cell(
    tmp_path, monkeypatch
):
    mpnet = quality_results.Bench(results_dir=tmp_path, backbone="mpnet")
    chosen = {"learning_rate": 0.03, "prefix_length": 16}
    monkeypatch.setattr(quality_results, "chosen_setting", lambda bench, task, method: dict(chosen))
    clipped = {**chosen, "max_grad_norm": 1.0}
    runs = quality_results.cell_runs(
        mpnet, quality_protocol.Cell.parse("conll2004:ptuning-v2:ablation-grad-clip")
    )
    assert runs == [(clipped, 42), (clipped, 43), (clipped, 44)]
    warmup = quality_results.cell_runs(
        mpnet, quality_protocol.Cell.parse("conll2004:ptuning-v2:ablation-warmup")
    )
    assert warmup == [
        ({**chosen, "warmup_ratio": 0.1}, 42)
    ]  # the other ablations: seed 42, then confirm-NAME
    cells = {c.name for c in quality_results.all_cells(mpnet)}
    assert {"conll2004:ptuning-v2:ablation-grad-clip", "conll2004:prefix-mlp:ablation-grad-clip"} <= cells
    assert "conll2004:ptuning-v2:confirm-grad-clip" not in cells
    assert "conll2004:ptuning-v2:confirm-warmup" in cells


@pytest.mark.parametrize(
    ("preset_name", "task", "ablation"),
    [
        ("sst2-mpnet", "sst2", "pooling-warmup"),
        ("conll2004-mpnet", "conll2004", "warmup"),
        ("conll2003-mpnet", "conll2003", "top-layers-warmup"),
    ],
)
def test_mpnet_presets_are_the_runs_the_campaign_measured(preset_name, task, ablation, tmp_path):
    """A preset that quotes a score must train exactly the runs that scored it, and quote what they scored."""
    from ptuning.training.config import TrainConfig
    from ptuning.training.presets import get_preset

    spec = quality_protocol.BACKBONES["mpnet"]
    bench = quality_results.Bench(
        quality_results.RESULTS_DIR / spec.results_subdir, model=spec.model, backbone="mpnet"
    )
    preset = get_preset(preset_name)
    chosen = quality_results.chosen_setting(bench, task, "ptuning-v2")
    measured = {**chosen, **quality_protocol.ablation_changes(ablation, spec.num_layers)[0]}
    runner = quality_runner.run_config(bench, bench.budgets[task], "ptuning-v2", measured, 42, tmp_path)
    user = TrainConfig(**preset.options, data_dir=runner.data_dir, output_dir=str(tmp_path))
    runner_only = {"eval_batch_size", "save_every_steps", "resume", "log_tensorboard"}  # not scores
    assert user.model_dump(exclude=runner_only) == runner.model_dump(exclude=runner_only)
    for setting in (measured, chosen):
        scores = quality_results.seed_scores(bench, task, "ptuning-v2", setting)
        assert scores is not None and quality_tables.mean_std(scores) in preset.note


@pytest.mark.parametrize(("preset_name", "task"), [("sst2-mpnet-mlp", "sst2"), ("copa-mpnet-mlp", "copa")])
def test_mpnet_prefix_mlp_presets_are_the_method_s_chosen_runs(preset_name, task, tmp_path):
    """The same for the prefix-tuning (MLP) presets: its sweep's chosen setting, over its three seeds."""
    from ptuning.training.config import TrainConfig
    from ptuning.training.presets import get_preset

    spec = quality_protocol.BACKBONES["mpnet"]
    bench = quality_results.Bench(
        quality_results.RESULTS_DIR / spec.results_subdir, model=spec.model, backbone="mpnet"
    )
    preset = get_preset(preset_name)
    chosen = quality_results.chosen_setting(bench, task, "prefix-mlp")
    runner = quality_runner.run_config(bench, bench.budgets[task], "prefix-mlp", chosen, 42, tmp_path)
    user = TrainConfig(**preset.options, data_dir=runner.data_dir, output_dir=str(tmp_path))
    runner_only = {"eval_batch_size", "save_every_steps", "resume", "log_tensorboard"}
    assert user.model_dump(exclude=runner_only) == runner.model_dump(exclude=runner_only)
    scores = quality_results.seed_scores(bench, task, "prefix-mlp", chosen)
    assert scores is not None and quality_tables.mean_std(scores) in preset.note


def test_quality_scaling_ablations_run_and_render_on_a_tiny_model(
    tiny_model, data_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(quality_protocol.SWEEPS, "ptuning-v2", [{"learning_rate": 1e-2, "prefix_length": 4}])
    monkeypatch.setitem(quality_protocol.SWEEPS, "finetune", [{"learning_rate": 1e-4}])
    results = tmp_path / "results"
    common = ["--backbone", "mpnet", "--scale", "smoke", "--results-dir", str(results)]
    common += ["--data-root", str(data_root), "--model", tiny_model]
    for cell in ("ptuning-v2:sweep", "finetune:sweep", "ptuning-v2:ablation-pooling"):
        quality.main([*common, "--cell", f"sst2:{cell}"])
    quality.main([*common, "--cell", "sst2:finetune:ablation-pooling"])
    quality.main([*common, "--cell", "sst2:ptuning-v2:ablation-long-prefix"])

    records = [json.loads(line) for line in (results / "sst2.jsonl").read_text().splitlines()]
    assert [(r["method"], r["setting"]) for r in records[2:]] == [
        ("ptuning-v2", {"learning_rate": 1e-2, "prefix_length": 4, "pooling": "mean"}),
        ("ptuning-v2", {"learning_rate": 1e-2, "prefix_length": 4, "pooling": "pooler"}),
        ("finetune", {"learning_rate": 1e-4, "pooling": "mean"}),
        ("finetune", {"learning_rate": 1e-4, "pooling": "pooler"}),
        ("ptuning-v2", {"learning_rate": 1e-2, "prefix_length": 128}),
    ]
    bench = quality_results.Bench(results, data_root, tiny_model, "smoke", backbone="mpnet")
    assert {r["budget_id"] for r in records} == {bench.budget_id("sst2")}
    assert all(r["backbone"] == "mpnet" and r["eval_batch_size"] == 64 for r in records)
    assert records[6]["trainable_params"] > records[0]["trainable_params"]  # P 128 against P 4
    # the pooler is frozen with P-tuning v2's backbone and trained with fine-tuning's (32 x 32 + 32)
    assert records[3]["trainable_params"] == records[0]["trainable_params"]
    assert records[5]["trainable_params"] == records[1]["trainable_params"] + 32 * 32 + 32

    capsys.readouterr()
    quality.main([*common, "--table"])
    tables = capsys.readouterr().out
    assert "all-mpnet-base-v2" in tables
    assert "| SST-2 | pooling: pooling mean |" in tables
    assert "| SST-2 | pooling (fine-tuning): pooling mean |" in tables
    assert "| SST-2 | pooling: pooling pooler |" in tables
    assert "| SST-2 | long-prefix: P 128 |" in tables


def test_quality_plan_estimates_every_mpnet_cell_from_minilm_runs(tmp_path, capsys):
    plan = load_benchmark("quality_plan")
    mpnet = quality_results.Bench(
        results_dir=tmp_path, model="mpnet", backbone="mpnet"
    )  # no MPNet run measured yet
    assert plan.flops_ratio(mpnet.spec) == 8.0
    rows = {r["cell"]: r for r in plan.cell_estimates(mpnet)}
    assert set(rows) == {c.name for c in quality_results.all_cells(mpnet)}
    # one MPNet SST-2 P-tuning v2 run: 8x MiniLM's median CPU rate (its SST-2 runs took 92-946 s)
    per_run = rows["sst2:ptuning-v2:sweep"]["cpu_seconds"] / rows["sst2:ptuning-v2:sweep"]["runs"]
    tokens = plan.load_tokens()
    minilm_rate = plan.cpu_rates(tokens)["ptuning-v2"]
    units = plan.work(tokens["full"]["sst2"], quality_protocol.BUDGETS["sst2"].epochs)
    assert rows["sst2:ptuning-v2:sweep"]["time_from"] == "FLOP estimate"  # no MPNet run in tmp_path
    assert per_run == pytest.approx(8 * minilm_rate * units)
    assert 8 * 90 < per_run < 8 * 1000
    assert rows["sst2:ptuning-v2:ablation-quadruple-epochs"]["cpu_seconds"] == pytest.approx(4 * per_run, 0.3)

    capsys.readouterr()
    quality.main(["--backbone", "mpnet", "--results-dir", str(tmp_path), "--plan"])
    text = capsys.readouterr().out
    assert "**Total**" in text and "`sst2:finetune:ablation-pooling`" in text
    assert "--backbone mpnet --run-all --jobs 2 --threads 1 --tasks sst2 conll2003" in text
    assert "--backbone mpnet --run-all --jobs 12" in text


def test_scaling_figure_renders_the_minilm_gaps_and_marks_the_rest(tmp_path, capsys):
    scaling = load_benchmark("quality_scaling")
    figure, curves = tmp_path / "scaling.png", tmp_path / "curves.png"
    doc = tmp_path / "RESULTS.md"
    doc.write_text(
        "a\n<!-- quality-standing:start -->\nold\n<!-- quality-standing:end -->\n"
        "<!-- quality-scaling:start -->\nold\n<!-- quality-scaling:end -->\n"
        "<!-- quality-curves:start -->\nold\n<!-- quality-curves:end -->\n"
        "<!-- quality-outside-grid:start -->\nold\n<!-- quality-outside-grid:end -->\nb\n"
    )

    scaling.main(["--figure", str(figure), "--curves-figure", str(curves), "--update-doc", str(doc)])

    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = doc.read_text()
    assert "| SST-2 | -5.4 ± 1.2 | " in table and "| -3.8 (1/1 seeds) |" in table  # MiniLM's committed runs
    assert "| SST-2 | 1x budget | 22.6 M (minilm) | P-tuning v2 | lr 0.03, P 16 | 3 | " in table
    assert "pending (sweeps: " in table and "PT-2 86.6 (no FT anchor)" in table and "old" not in table
    assert (
        "| RTE | 109.5 M (mpnet) | P-tuning v2 | lr 0.01, P 16, warmup 0.1, epochs x4, backbone bf16 | 42 |"
        in table
    )


def test_speed_benchmarks_produce_every_result(tiny_model, data_root, tmp_path):
    speed = load_benchmark("speed")
    results = tmp_path / "results"
    common = ["--smoke", tiny_model, "--data-root", str(data_root), "--results-dir", str(results)]
    common += ["--work-dir", str(tmp_path / "work"), "--threads", "1"]
    systems = ["ours", "ours-bf16", "reference", "peft-our-batching", "peft-trainer", "peft-trainer-grouped"]
    systems += ["peft-trainer-grouped-bf16", "ours-mean-pooling"]

    speed.main([*common, "--throughput", "--profile", "--scaling", "--work", "--systems", *systems])
    speed.main([*common, "--memory", "--memory-modes", "train", "--systems", "ours", "--table"])

    throughput = json.loads((results / "throughput-smoke.json").read_text())
    peft = load_benchmark("speed_common").peft_available()
    expected = systems if peft else ["ours", "ours-bf16", "reference", "ours-mean-pooling"]
    assert throughput["systems"] == expected
    for mode in ("train", "infer"):
        assert all(throughput["summary"][mode][name]["examples_per_second"] > 0 for name in expected)
        assert throughput["summary"][mode]["reference"]["ours-bf16_speedup"] > 0  # both contenders' ratios
        assert "ours-bf16_speedup" in throughput["summary"][mode]["ours"]
    assert throughput["gemm_gflops"] > 0 and throughput["gemm_bf16_gflops"] > 0
    for name in expected:  # every system's FLOP rate: the Trainer's own batches are recorded too
        assert all(throughput["summary"][mode][name]["gflops_per_second"] > 0 for mode in ("train", "infer"))
    assert throughput["bf16_baseline"] == ("peft-trainer-grouped-bf16" if peft else None)
    memory = json.loads((results / "memory-smoke.json").read_text())
    assert memory["probes"][0]["peak_rss_mb"] >= memory["probes"][0]["rss_after_load_mb"] > 0
    profile = json.loads((results / "profile-smoke.json").read_text())
    assert profile["systems"]["ours"]["breakdown_ms_per_step"]["forward|GEMM"] > 0
    assert (
        profile["systems"]["ours"]["breakdown_ms_per_step"]["forward|dropout mask"] > 0
    )  # the model has 0.1
    for name in ("ours", "ours-bf16"):  # time outside GEMMs, per change; the step against both GEMM rates
        entry = profile["systems"][name]
        assert 0 < entry["outside_gemm_ms_per_step"] < sum(entry["breakdown_ms_per_step"].values())
        assert entry["gflops_per_second"] > 0
    assert profile["gemm_gflops"]["fp32"] > 0 and profile["gemm_gflops"]["bf16"] > 0
    assert (results / "scaling.png").stat().st_size > 0
    work = json.loads((results / "work-smoke.json").read_text())  # counted without PEFT: HF's own loaders
    assert set(work["systems"]) == {"ours", "ours-whole-last-layer", "peft-trainer", "peft-trainer-dynamic",
                                    "peft-trainer-grouped"}  # fmt: skip
    padded = work["systems"]["peft-trainer"]["infer"]["16"]["gflop_per_example"]
    assert padded > work["systems"]["ours"]["infer"]["None"]["gflop_per_example"] > 0  # (a) pads to 128
    work_table = load_benchmark("speed_report").render_tables(results)
    assert "#### Work per example: smoke" in work_table


def test_mean_pooling_system_pools_the_mean_and_is_left_out_where_no_head_pools(
    tiny_model, data_root, tmp_path
):
    common = load_benchmark("speed_common")
    systems = load_benchmark("speed_systems")
    from transformers import AutoTokenizer

    workload = common.Workload("smoke", "sst2", tiny_model, train_examples=8, eval_examples=4, repeats=1)
    data = common.load_data(workload, AutoTokenizer.from_pretrained(tiny_model), data_root)
    mean = systems.build_system("ours-mean-pooling", tiny_model, data, workload)
    assert str(mean.model.heads["task"].pooling) == "mean" and not mean.readout  # every position is read
    assert (
        str(systems.build_system("ours", tiny_model, data, workload).model.heads["task"].pooling) == "first"
    )
    names = ["ours", "ours-mean-pooling"]
    assert systems.applicable_systems(names, data) == names
    tagging = common.Data(None, ["O", "B-PER"], common.HeadKind.TOKEN_CLASSIFICATION, [], [], 0)
    assert systems.applicable_systems(names, tagging) == ["ours"]


def test_time_to_target_stops_at_the_first_evaluation_that_reaches_it(
    tiny_model, data_root, tmp_path, capsys
):
    speed = load_benchmark("speed")
    results = tmp_path / "results"
    common = ["--smoke", tiny_model, "--data-root", str(data_root), "--results-dir", str(results)]
    common += ["--work-dir", str(tmp_path / "work"), "--threads", "1", "--target-learning-rates", "0.01"]

    speed.main([*common, "--time-to-target", "sst2", "--target-score", "0"])  # any score reaches 0
    speed.main([*common, "--time-to-target", "sst2", "--target-score", "0"])  # in the file already: skipped
    reached = [json.loads(line) for line in (results / "time-to-target-sst2.jsonl").read_text().splitlines()]
    peft = load_benchmark("speed_common").peft_available()
    expected = ["ours", "ours-bf16", "ours-mean-pooling"] + (["peft-trainer-grouped"] if peft else [])
    assert [r["system"] for r in reached] == expected
    for record in reached:  # the smoke budget: 8 steps, an evaluation every 4
        assert record["reached"] and record["steps_to_target"] == 4 and record["steps"] == 4
        assert record["seconds_to_target"] == record["evaluations"][0]["train_seconds"] > 0

    (results / "time-to-target-sst2.jsonl").unlink()
    speed.main([*common, "--time-to-target", "sst2", "--target-score", "1.01", "--table"])
    missed = [json.loads(line) for line in (results / "time-to-target-sst2.jsonl").read_text().splitlines()]
    for record in missed:
        assert not record["reached"] and record["seconds_to_target"] is None and record["steps"] == 8
        assert [e["step"] for e in record["evaluations"]] == [4, 8]
        assert 0.0 <= record["best_score"] <= 1.0
    tables = capsys.readouterr().out
    assert "#### Time to 101.0 dev accuracy: sst2" in tables and "| not reached within budget |" in tables
    if not peft:
        assert "(a''): no runs in this file. PEFT cannot run here" in tables


def test_target_watch_counts_training_time_only_and_evaluates_on_schedule():
    ttt = load_benchmark("speed_time_to_target")
    budget = ttt.Budget("sst2", "accuracy", 0.8, None, None, max_steps=5, eval_every=2)
    ticks = iter([100.0, 110.0, 115.0, 130.0, 140.0, 150.0, 152.0])  # start, then (before, after) each eval
    scores = iter([0.5, 0.9, 0.7])
    watch = ttt.TargetWatch(budget, lambda: next(scores), clock=lambda: next(ticks))
    watch.start()
    assert [watch.after_step(step) for step in range(1, 6)] == [False, False, False, True, False]
    assert watch.evaluations == [
        {"step": 2, "train_seconds": 10.0, "score": 0.5},
        {"step": 4, "train_seconds": 25.0, "score": 0.9},  # the 5 s of the first evaluation left out
        {"step": 5, "train_seconds": 35.0, "score": 0.7},  # the last step is always evaluated
    ]
    assert watch.first_reached()["step"] == 4


def test_fastest_learning_rate_must_reach_the_target_in_every_seed():
    ttt = load_benchmark("speed_time_to_target")
    run = lambda rate, seconds: {  # noqa: E731
        "learning_rate": rate,
        "reached": seconds is not None,
        "seconds_to_target": seconds,
    }
    records = [run(0.01, 30.0), run(0.01, 50.0), run(0.03, 10.0), run(0.03, None), run(0.003, 35.0)]
    records.append(run(0.003, 60.0))
    assert ttt.fastest(records) == (0.01, 40.0)
    assert ttt.fastest([run(0.01, None)]) is None


def test_careful_trainer_layout_groups_batches_by_length(tiny_model, tmp_path):
    """(a''): DataCollatorWithPadding + train_sampling_strategy="group_by_length" (no PEFT needed to check)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.trainer_pt_utils import LengthGroupedSampler

    systems = load_benchmark("speed_systems")
    common = load_benchmark("speed_common")
    features = [{"input_ids": [101] + [1000 + n] * n + [102], "labels": n % 2} for n in range(1, 65)]
    features = [features[(7 * i) % 64] for i in range(64)]  # lengths 3..66, shuffled
    workload = common.Workload("t", "sst2", tiny_model, 64, 0, repeats=1, batch_size=4)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    widths = {}
    for name in ("peft-trainer-grouped", "peft-trainer-dynamic"):
        layout = systems.TRAINER_LAYOUTS[name]
        collator = systems.trainer_collator(layout, tiny_model, systems.HeadKind.CLASSIFICATION)
        trainer = systems.make_trainer(model, layout, collator, features, tmp_path / name, workload, seed=0)
        batches = list(trainer.get_train_dataloader())
        assert sorted(len(b["input_ids"]) for b in batches) == [4] * 16
        widths[name] = [b["input_ids"].shape[1] - int(b["attention_mask"].sum(1).min()) for b in batches]
        if name == "peft-trainer-grouped":
            assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    # HF sorts by length within random "megabatches" (here 4 batches): padding shrinks, it does not vanish
    assert 2 * sum(widths["peft-trainer-grouped"]) < sum(widths["peft-trainer-dynamic"])
    # and Trainer.predict groups the same way (transformers 5.23 and later), so (a'') predicts grouped too
    assert not isinstance(trainer._get_eval_sampler(features), LengthGroupedSampler)  # (a'): dataset order
    grouped = systems.make_trainer(
        model, systems.TRAINER_LAYOUTS["peft-trainer-grouped"], collator, features, tmp_path, workload, seed=0
    )
    assert isinstance(grouped._get_eval_sampler(features), LengthGroupedSampler)


def test_trainer_systems_group_a_sample_as_hf_groups_the_whole_split(tiny_model, tmp_path):
    """A round's sample stands for a whole split: HF sizes its length-grouping megabatches by the dataset
    (min(n // (4 x batch), 50) batches), so the benchmark tells it the split's size."""
    from transformers import AutoModelForSequenceClassification

    systems = load_benchmark("speed_systems")
    common = load_benchmark("speed_common")
    features = [{"input_ids": [101] + [1000 + n] * n + [102], "labels": n % 2} for n in range(1, 65)]
    features = [features[(7 * i) % 64] for i in range(64)]  # lengths 3..66, shuffled
    workload = common.Workload("t", "sst2", tiny_model, 64, 64, repeats=1, batch_size=4, eval_batch_size=4)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    layout = systems.TRAINER_LAYOUTS["peft-trainer-grouped"]
    collator = systems.trainer_collator(layout, tiny_model, systems.HeadKind.CLASSIFICATION)

    def batch_lengths(split_sizes, loader):
        trainer = systems.make_trainer(
            model, layout, collator, features, tmp_path, workload, seed=0, split_sizes=split_sizes
        )
        batches = (
            trainer.get_train_dataloader() if loader == "train" else trainer.get_test_dataloader(features)
        )
        return [sorted(batch["attention_mask"].sum(1).tolist()) for batch in batches]

    whole = [list(range(n, n + 4)) for n in range(3, 67, 4)]  # the whole sample sorted, cut in fours
    for loader in ("train", "eval"):
        assert sorted(batch_lengths((100_000, 100_000), loader)) == whole  # one megabatch: all 64 sorted
        own = batch_lengths((0, 0), loader)  # HF's own: 64 // 16 = 4 batches a megabatch
        assert sorted(own) != whole and sorted(len(b) for b in own) == [4] * 16


def test_trainer_systems_count_the_batches_the_trainer_feeds_the_model(tiny_model, tmp_path):
    """(a'')'s FLOPs come from its real batches: a forward pre-hook records each one's (rows, length)."""
    from transformers import AutoModelForSequenceClassification

    systems = load_benchmark("speed_systems")
    common = load_benchmark("speed_common")
    features = [{"input_ids": [101] + [1000 + n] * n + [102], "labels": n % 2} for n in range(1, 11)]
    workload = common.Workload("t", "sst2", tiny_model, 10, 10, repeats=1, batch_size=4, eval_batch_size=4)
    system = object.__new__(systems.PeftTrainerSystem)  # the hook needs only the model and the compile flag
    system.model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    system.torch_compile = False
    layout = systems.TRAINER_LAYOUTS["peft-trainer-dynamic"]  # dataset order: the batches are known
    collator = systems.trainer_collator(layout, tiny_model, systems.HeadKind.CLASSIFICATION)
    trainer = systems.make_trainer(system.model, layout, collator, features, tmp_path, workload, seed=0)
    with system.batch_shapes() as shapes:
        trainer.predict(features)
    assert shapes == [(4, 6), (4, 10), (2, 12)]  # rows x the longest input (n + 2 tokens) of each batch
    with system.batch_shapes() as after:
        pass
    assert after == [] and not system.model._forward_pre_hooks  # the hook is removed
    system.torch_compile = True
    with system.batch_shapes() as compiled:
        trainer.predict(features)
    assert compiled == []  # nothing hooked into a model the Trainer compiles


def test_step_flops_counts_frozen_backward_as_twice_the_projections():
    flops = load_benchmark("speed_flops")
    shape = flops.Shape(layers=1, hidden=4, intermediate=8)
    projections = 2 * (4 * 4**2 + 2 * 4 * 8)  # per token, forward
    attention = 4 * 3 * (2 + 3) * 4  # one sequence of 3 tokens, P = 2, forward
    assert flops.step_flops(shape, [(1, 3)], prefix=2, training=False) == 3 * projections + attention
    assert flops.step_flops(shape, [(1, 3)], prefix=2, training=True) == 2 * 3 * projections + 3 * attention


def test_inference_batches_ab_caps_padding_only_inside_its_block():
    ab = load_benchmark("inference_batches_ab")
    inference = ab.inference
    features = [{"input_ids": [1] * n} for n in (10, 9, 9, 5, 5)]
    before = inference.MAX_PADDING_SHARE
    assert ab.cut(features, 64, 1.0) == [[0, 1, 2, 3, 4]]  # the token budget alone
    assert ab.cut(features, 64, 0.1) == [[0, 1, 2], [3, 4]]  # a fourth row would pad 17.5 %
    assert before == inference.MAX_PADDING_SHARE  # restored after each block


def test_step_flops_leaves_out_the_last_feed_forward_a_first_token_readout_skips():
    flops = load_benchmark("speed_flops")
    shape = flops.Shape(layers=2, hidden=4, intermediate=8)
    full = flops.step_flops(shape, [(5, 3)], prefix=2, training=False)
    skipped = 5 * 2 * 2 * 2 * 4 * 8  # 5 rows x 2 positions x the last layer's two feed-forward matmuls
    assert (
        flops.step_flops(shape, [(5, 3)], prefix=2, training=False, first_token_only=True) == full - skipped
    )
    trained = flops.step_flops(shape, [(5, 3)], prefix=2, training=True, first_token_only=True)
    assert trained == flops.step_flops(shape, [(5, 3)], prefix=2, training=True) - 2 * skipped


def test_dropout_ab_runs_both_kinds_per_seed(tiny_model, data_root, tmp_path):
    dropout_ab = load_benchmark("dropout_ab")
    output = tmp_path / "dropout-ab.json"
    options = ["--set", f"model={tiny_model}", "--set", "epochs=1", "--set", "max_train_samples=8"]
    assert (
        dropout_ab.main(
            ["--seeds", "42", "--data", str(data_root / "sst2"), "--output", str(output), *options]
        )
        == 0
    )
    result = json.loads(output.read_text())
    assert set(result["runs"]) == {"torch", "fast"} and result["overrides"]["epochs"] == 1
    for runs in result["runs"].values():
        assert [r["seed"] for r in runs] == [42]
        assert 0.0 <= runs[0]["dev_accuracy"] <= 1.0 and runs[0]["train_examples_per_second"] > 0


def test_bf16_ab_trains_both_backbone_dtypes_per_seed(tiny_model, data_root, tmp_path):
    bf16_ab = load_benchmark("bf16_ab")
    output = tmp_path / "bf16-ab.json"
    options = ["--set", f"model={tiny_model}", "--set", "epochs=1", "--set", "max_train_samples=8"]
    arguments = ["--presets", "sst2-minilm", "--seeds", "42", "--data-root", str(data_root), "--in-process"]
    assert bf16_ab.main([*arguments, "--output", str(output), *options]) == 0
    written = json.loads(output.read_text())
    assert written["environment"]["versions"]["torch"] == torch.__version__  # which machine and versions
    result = written["presets"]["sst2-minilm"]
    assert result["metric"] == "accuracy" and set(result["runs"]) == {"fp32", "bf16"}
    for runs in result["runs"].values():
        assert [r["seed"] for r in runs] == [42]
        assert 0.0 <= runs[0]["dev"] <= 1.0 and runs[0]["train_examples_per_second"] > 0
        assert runs[0]["max_grad_norm"] == TrainConfig().max_grad_norm  # the recipe it ran: the CLI's default
    comparison = result["bf16_vs_fp32"]
    assert comparison["holds"] == (comparison["dev_difference"] >= 0)  # one seed: min == mean
    assert comparison["train_speedup"] > 0


def test_backbone_dropout_ab_trains_with_and_without_the_backbones_dropout(tiny_model, data_root, tmp_path):
    ab = load_benchmark("backbone_dropout_ab")
    output = tmp_path / "backbone-dropout-ab.json"
    options = ["--set", f"model={tiny_model}", "--set", "epochs=1", "--set", "max_train_samples=8"]
    arguments = ["--presets", "sst2-minilm", "--seeds", "42", "--data-root", str(data_root)]
    assert ab.main([*arguments, "--output", str(output), *options]) == 0
    result = json.loads(output.read_text())["presets"]["sst2-minilm"]
    assert {arm: [r["backbone_dropout"] for r in runs] for arm, runs in result["runs"].items()} == {
        "model's dropout": [None],
        "backbone_dropout 0": [0.0],
    }
    comparison = result["without_vs_with"]
    assert comparison["holds"] == (comparison["dev_difference"] >= 0) and comparison["train_speedup"] > 0


def test_bf16_ab_verdict_keeps_a_change_inside_the_fp32_seed_spread():
    bf16_ab = load_benchmark("bf16_ab")
    fp32 = bf16_ab.summarize([{"dev": d, "train_examples_per_second": 10.0} for d in (0.80, 0.81, 0.83)])
    within = bf16_ab.summarize([{"dev": d, "train_examples_per_second": 20.0} for d in (0.80, 0.80, 0.81)])
    below = bf16_ab.summarize([{"dev": d, "train_examples_per_second": 20.0} for d in (0.78, 0.79, 0.80)])
    assert bf16_ab.verdict(fp32, within)["holds"] and bf16_ab.verdict(fp32, within)["train_speedup"] == 2.0
    assert not bf16_ab.verdict(fp32, below)["holds"]
    assert bf16_ab.verdict(fp32, below)["dev_difference"] == pytest.approx(0.79 - 0.8133333, abs=1e-6)


def test_targets_table_reads_every_cell_from_the_results_and_says_what_is_missing(tmp_path):
    targets = load_benchmark("speed_targets")

    def entry(rate, **speedups):
        return {"examples_per_second": rate, "gflops_per_second": rate, **speedups}

    names = ["ours", "ours-bf16", "peft-trainer-grouped", "peft-trainer-grouped-bf16"]
    throughput = {  # SST-2 only: ours-bf16 2.5x (a'') fp32 and 1.2x (a'') bf16 in inference
        "systems": names,
        "gemm_gflops": 200.0,
        "gemm_bf16_gflops": 1000.0,
        "summary": {
            mode: {
                "ours": entry(100.0, **{"ours-bf16_speedup": factor}),
                "ours-bf16": entry(100.0 * factor, ours_speedup=1 / factor),
                "peft-trainer-grouped": entry(40.0, ours_speedup=2.5, **{"ours-bf16_speedup": 2.5 * factor}),
                "peft-trainer-grouped-bf16": entry(80.0, ours_speedup=1.25, **{"ours-bf16_speedup": 1.2}),
            }
            for mode, factor in (("train", 1.0), ("infer", 1.0))
        },
    }
    (tmp_path / "throughput-sst2-minilm.json").write_text(json.dumps(throughput))
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in targets.render_targets(tmp_path)[2:]}
    assert rows["inference ≥ 2× (a'') (issue 16)"] == ["**2.50×** (100.0 vs 40.0 ex/s)", "not measured",
                                                        "yes where measured |"]  # fmt: skip
    assert rows["inference ≥ 2× (a'') in bf16, ours in bf16"] == ["1.20× (100.0 vs 80.0 ex/s)", "not measured",
                                                                   "**no** |"]  # fmt: skip
    assert (
        rows["≥ 60 % of the fp32 GEMM rate inside a training step (issue 6)"][0]
        == "50 % (100 of 200 GFLOP/s)"
    )
    assert rows["the same for ours-bf16, against the bf16 GEMM rate"][0] == "10 % (100 of 1000 GFLOP/s)"
    assert rows["training ≥ 2× (a) (issue 6)"] == ["not measured", "not measured", "– |"]  # no (a) system
    assert rows["inference ≥ 2× (a'') in bf16, ours in bf16 with --compile"] == ["not measured", "not measured",
                                                                                "– |"]  # fmt: skip
    assert rows["time to target dev score ≥ 2× faster than (a'') (issue 16)"][0] == "not measured"
    # a row bound to a sub-folder's run reads that run, not the top folder's
    assert rows["training ≥ 1.5× (a'') in bf16, ours in bf16 with --backbone-dropout 0"][0] == "not measured"
    run = tmp_path / targets.BACKBONE_DROPOUT_RUN
    run.mkdir()
    contender, baseline = "ours-bf16-no-backbone-dropout", "peft-trainer-grouped-bf16"
    rates = {contender: entry(180.0), baseline: entry(100.0, **{f"{contender}_speedup": 1.8})}
    run_file = {"systems": [contender, baseline], "summary": {"train": rates, "infer": rates}}
    (run / "throughput-sst2-minilm.json").write_text(json.dumps(run_file))
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in targets.render_targets(tmp_path)[2:]}
    assert rows["training ≥ 1.5× (a'') in bf16, ours in bf16 with --backbone-dropout 0"][0] == (
        "**1.80×** (180.0 vs 100.0 ex/s)"
    )
    assert rows["training ≥ 1.5× (a''), ours with a bf16 backbone"][0] != "not measured"  # the top folder's


def test_time_to_target_cell_turns_steps_into_time_with_the_idle_rates():
    """The clock of runs on a shared machine is shown, but steps to target x idle examples/s decide."""
    targets = load_benchmark("speed_targets")
    budget = {"batch_size": 32}
    run = lambda system, rate, steps, seconds: {  # noqa: E731
        "system": system,
        "learning_rate": rate,
        "budget": budget,
        "reached": steps is not None,
        "steps_to_target": steps,
        "seconds_to_target": seconds,
        "recipe": {"weight_decay": 0.0, "max_grad_norm": 1.0},  # the Trainer's and, by default, ours
    }
    records = [run("ours", 0.01, 200, 100.0), run("ours", 0.03, None, None)]
    records += [run("peft-trainer-grouped", 0.01, 600, 240.0), run("peft-trainer-grouped", 0.03, 500, 250.0)]
    throughput = {
        "systems": ["ours", "peft-trainer-grouped"],
        "summary": {
            "train": {
                "ours": {"examples_per_second": 160.0},
                "peft-trainer-grouped": {"examples_per_second": 80.0},
            }
        },
    }
    cell = targets.time_to_target(2.0)
    # ours 200 x 32 / 160 = 40 s; (a'') at its fewest steps, 500 x 32 / 80 = 200 s: 5x; the clock said 2.4x
    with_rates = cell(throughput, records)
    assert with_rates.met and with_rates.text.startswith(
        "**5.00×** (200 vs 500 steps at idle rates: 40 vs 200 s)"
    )
    assert "clock 2.40× (100 vs 240 s)" in with_rates.text
    clock_only = cell(None, records)
    assert clock_only.met and clock_only.text.startswith("**2.40×**")
    assert not cell(None, [r for r in records if r["system"] == "ours"]).met  # (a'') missing: not measured

    # a contender without throughput rounds of its own takes the named system's idle rate
    twin = [{**r, "system": "ours-pooler-no-dropout"} for r in records if r["system"] == "ours"]
    throughput["systems"].append("ours-no-dropout")
    throughput["summary"]["train"]["ours-no-dropout"] = {"examples_per_second": 100.0}
    assert targets.time_to_target(2.0, "ours-pooler-no-dropout")(
        throughput, twin + records[2:]
    ).text.startswith("**2.40×**")  # no rates for it: the clock alone
    renamed = targets.time_to_target(2.0, "ours-pooler-no-dropout", rates_from="ours-no-dropout")
    # 200 x 32 / 100 = 64 s against 200 s: 3.12x
    assert renamed(throughput, twin + records[2:]).text.startswith(
        "**3.12×** (200 vs 500 steps at idle rates: 64"
    )


def test_quality_only_patterns_pick_cells_and_order_them(tiny_model, data_root, tmp_path):
    bench = quality_results.Bench(tmp_path / "results", data_root, tiny_model, "smoke")
    only = ["sst2:ptuning-v2:*", "sst2:finetune:sweep"]

    pending = quality_runner.pending_runs(bench, None, only)

    # Only sweeps can run before any result exists; seeds and ablations wait for them.
    assert {cell.name for cell, _ in pending} == {"sst2:ptuning-v2:sweep", "sst2:finetune:sweep"}
    first, second = (
        quality_protocol.Cell.parse("sst2:finetune:sweep"),
        quality_protocol.Cell.parse("sst2:ptuning-v2:seeds"),
    )
    assert quality_runner.only_rank(first, only) == 1 and quality_runner.only_rank(second, only) == 0
    assert quality_runner.only_rank(quality_protocol.Cell.parse("conll2003:finetune:sweep"), only) is None


def test_compiled_systems_are_ours_with_compile_and_the_bf16_trainer_with_torch_compile(
    tiny_model, data_root
):
    """Built only (compiling happens in the first rounds, too slow for a smoke): what each system is."""
    import torch
    from transformers import AutoTokenizer

    from ptuning.core.compilation import is_compiled

    systems = load_benchmark("speed_systems")
    common = load_benchmark("speed_common")
    workload = common.Workload("t", "sst2", tiny_model, 8, 8, repeats=1, batch_size=4, eval_batch_size=4)
    data = common.load_data(workload, AutoTokenizer.from_pretrained(tiny_model), data_root)
    for name, dtype in (("ours-compiled", torch.float32), ("ours-bf16-compiled", torch.bfloat16)):
        model = systems.build_system(name, tiny_model, data, workload).model
        assert is_compiled(model) and next(model.backbone.parameters()).dtype == dtype, name
    assert not is_compiled(systems.build_system("ours-bf16", tiny_model, data, workload).model)
    if common.peft_available():
        trainer = systems.build_system(systems.BF16_COMPILED_BASELINE, tiny_model, data, workload).trainer(0)
        assert trainer.args.torch_compile and next(trainer.model.parameters()).dtype == torch.bfloat16


def test_the_no_dropout_systems_are_built_with_every_backbone_dropout_at_zero(tiny_model, data_root) -> None:
    """ours (fp32, bf16) as --backbone-dropout 0 sets it, and (a'') loaded with BERT's rates at 0."""
    import torch
    from transformers import AutoTokenizer

    systems = load_benchmark("speed_systems")
    common = load_benchmark("speed_common")
    workload = common.Workload("t", "sst2", tiny_model, 8, 8, repeats=1, batch_size=4, eval_batch_size=4)
    data = common.load_data(workload, AutoTokenizer.from_pretrained(tiny_model), data_root)
    names = ["ours-no-backbone-dropout", "ours-bf16-no-backbone-dropout"]
    if common.peft_available():
        names += ["peft-trainer-grouped-no-dropout", "peft-trainer-grouped-bf16-no-dropout"]
    for name in names:
        model = systems.build_system(name, tiny_model, data, workload).model
        backbone = model.backbone if hasattr(model, "backbone") else model.base_model
        rates = {m.p for m in backbone.modules() if isinstance(m, torch.nn.Dropout)}
        assert rates == {0.0}, name
        dtype = next(p.dtype for n, p in backbone.named_parameters() if "embeddings" in n)
        assert dtype == (torch.bfloat16 if name in systems.BF16_SYSTEMS else torch.float32), name


def test_attention_training_ab_times_both_paths_forward_and_backward(tiny_model, data_root, tmp_path):
    ab = load_benchmark("attention_training_ab")
    arguments = ["--smoke", tiny_model, "--data-root", str(data_root), "--results-dir", str(tmp_path)]
    assert ab.main([*arguments, "--threads", "1"]) == 0
    result = json.loads((tmp_path / "attention-training-ab.json").read_text())
    assert [(row["dtype"], row["length"]) for row in result["kernels"]] == [
        (dtype, length) for dtype in ("float32", "bfloat16") for length in ab.LENGTHS
    ]
    assert all(row["sdpa_ms"] > 0 and row["math_ms"] > 0 for row in result["kernels"])
    (workload,) = result["workloads"]
    assert set(workload["train_examples_per_second"]) == {
        "fp32-default",
        "fp32-other",
        "bf16-default",
        "bf16-other",
    }
    assert set(workload["default_over_other"]) == {"fp32", "bf16"}
    # every switch put back
    assert ab.attention_interface._takes_math_attention.__name__ == "_takes_math_attention"
    assert (torch.bfloat16,) == ab.attention_interface.MATH_ATTENTION_TRAINING_DTYPES


def test_attention_path_ab_times_both_paths_and_compares_them_with_fp32(tiny_model, data_root, tmp_path):
    ab = load_benchmark("attention_path_ab")
    cap, dtypes = (
        ab.attention_interface.MATH_ATTENTION_MAX_KEYS,
        ab.attention_interface.MATH_ATTENTION_INFERENCE_DTYPES,
    )
    arguments = ["--smoke", tiny_model, "--data-root", str(data_root), "--results-dir", str(tmp_path)]
    assert ab.main([*arguments, "--threads", "1", "--fp32"]) == 0
    result = json.loads((tmp_path / "attention-path-ab.json").read_text())
    assert {(row["head_size"], row["dtype"]) for row in result["kernels"]} == {
        (32, "float32"), (32, "bfloat16"), (64, "float32"), (64, "bfloat16")
    }  # fmt: skip
    assert all(row["sdpa_ms"] > 0 and row["math_ms"] > 0 for row in result["kernels"])
    (workload,) = result["workloads"]
    assert set(workload["examples_per_second"]) == {"sdpa", "default"}
    agreement = workload["agreement"]
    assert agreement["default"]["labels"] == 8 and agreement["default"]["max_abs_logit_difference"] < 0.1
    assert [row["length"] for row in result["lengths"]] == list(ab.SYNTHETIC_LENGTHS)
    assert [row["default_path"] for row in result["lengths"]] == [
        "math" if row["keys"] <= cap else "sdpa" for row in result["lengths"]
    ]
    assert all(set(row["ms"]) == {"sdpa", "math", "default"} for row in result["lengths"])
    (fp32,) = result["fp32_workloads"]
    assert set(fp32["examples_per_second"]) == {"sdpa", "math"}
    assert fp32["agreement"]["labels_changed"] == 0 and fp32["agreement"]["max_abs_logit_difference"] < 1e-4
    assert all(
        row["dtype"] == "fp32" and set(row["ms"]) == {"sdpa", "math"} for row in result["fp32_lengths"]
    )
    # every switch put back
    assert ab.attention_interface._takes_math_attention.__name__ == "_takes_math_attention"
    assert cap == ab.attention_interface.MATH_ATTENTION_MAX_KEYS
    assert dtypes == ab.attention_interface.MATH_ATTENTION_INFERENCE_DTYPES


def test_an_ablation_row_s_difference_agrees_with_the_three_seed_means_it_shows():
    """MPNet SST-2, P = 128: +0.9 at seed 42, but seed 43 collapsed (51.9): over seeds 42-44 it is -11.8."""
    spec = quality_protocol.BACKBONES["mpnet"]
    bench = quality_results.Bench(
        quality_results.RESULTS_DIR / spec.results_subdir, model=spec.model, backbone="mpnet"
    )
    (row,) = [
        line for line in quality_tables.render_ablations(bench) if "| SST-2 | long-prefix: P 128 |" in line
    ]
    assert row.endswith("| -11.8 (seeds 42-44; seed 42 +0.9) |")


def test_a_summary_difference_over_unequal_seed_counts_says_so():
    assert quality_tables.format_difference([80.0, 81.0, 82.0], [70.0, 71.0]) == "+10.5 (3/2 seeds)"
    assert quality_tables.format_difference([80.0, 82.0, 84.0], [70.0, 71.0, 72.0]) == "+11.0"
    assert quality_tables.mean_std([70.0, 71.0]) == "70.5 ± 0.7 (2 seeds)"
    assert quality_tables.mean_std([70.0, 71.0, 72.0]) == "71.0 ± 1.0"


def test_an_outside_the_grid_run_may_not_land_in_any_backbone_s_grid_file(tiny_model, tmp_path, monkeypatch):
    """MiniLM's results folder is the parent of MPNet's: both must be refused, whichever backbone runs (a
    line without budget_id in a grid file breaks that backbone's every table)."""
    grid = tmp_path / "quality"  # stands for benchmarks/results/quality: a regression must not write there
    monkeypatch.setattr(quality_runner, "RESULTS_DIR", grid)
    monkeypatch.setattr(quality_runner, "run_one", lambda *args: pytest.fail("the run started"))
    setting = json.dumps({"learning_rate": 0.01, "prefix_length": 4})
    for backbone, folder in (("mpnet", ""), ("minilm", "mpnet")):
        argv = [
            "--backbone",
            backbone,
            "--scale",
            "smoke",
            "--model",
            tiny_model,
            "--results-dir",
            str(tmp_path),
        ]
        argv += [
            "--extra",
            "sst2:ptuning-v2",
            "--setting",
            setting,
            "--record",
            str(grid / folder / "sst2.jsonl"),
        ]
        with pytest.raises(SystemExit, match="outside the grid"):
            quality.main(argv)
