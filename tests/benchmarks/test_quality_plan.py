"""The MPNet campaign's plan, tables and scaling anchors on synthetic, partial results files: the plan takes the
backbone's own measured CPU time where a run exists, and the tables render while the campaign is half done."""

from __future__ import annotations

import json

import pytest
import quality
import quality_anchors
import quality_gaps
import quality_protocol
import quality_results
import quality_tables
from test_smoke import load_benchmark

SWEEP_SECONDS = 900.0  # one synthetic MPNet SST-2 P-tuning v2 run on the CPU


def write_records(bench, task: str, runs: list[dict]) -> None:
    """Append results lines shaped like quality_runner.run_one's, with only the fields the readers use."""
    budget_id = bench.budget_id(task)
    with bench.results_file(task).open("a") as file:
        for run in runs:
            record = {
                "task": task,
                "method": run["method"],
                "setting": run["setting"],
                "seed": run.get("seed", quality_protocol.SWEEP_SEED),
                "backbone": bench.backbone,
                "budget": {"epochs": bench.budgets[task].epochs},
                "dev": {bench.budgets[task].metrics[0]: run["dev"]},
                "test": {bench.budgets[task].metrics[0]: run["test"]} if "test" in run else None,
                "trainable_params": 74_498,
                "trainable_percent": 0.07,
                "wall_seconds": run.get("wall_seconds", SWEEP_SECONDS),
                "device": run.get("device", "cpu"),
                "threads": run.get("threads", 1),
                "budget_id": budget_id,
                "key": quality_results.run_key(
                    task, run["method"], run["setting"], run.get("seed", 42), budget_id
                ),
            }
            file.write(json.dumps(record) + "\n")


@pytest.fixture
def partial_mpnet(tmp_path):
    """An MPNet results folder where only SST-2's P-tuning v2 sweep is done (four CPU runs of 900 s, dev
    accuracy 0.78/0.80/0.79/0.77), one fine-tuning sweep run ran on a GPU, one prompt-tuning run on two CPU
    threads, and nothing else has run."""
    results = tmp_path / "mpnet"
    results.mkdir()
    bench = quality_results.Bench(results_dir=results, model="mpnet", backbone="mpnet")
    sweep = quality_protocol.SWEEPS["ptuning-v2"]
    runs = [
        {"method": "ptuning-v2", "setting": s, "dev": d}
        for s, d in zip(sweep, (0.78, 0.80, 0.79, 0.77), strict=True)
    ]
    gpu_run = {
        "method": "finetune",
        "setting": quality_protocol.SWEEPS["finetune"][0],
        "dev": 0.85,
        "device": "NVIDIA H200",
    }
    two_threads = {
        "method": "prompt-tuning",
        "setting": quality_protocol.SWEEPS["prompt-tuning"][0],
        "dev": 0.7,
        "threads": 2,
    }
    write_records(bench, "sst2", [*runs, {**gpu_run, "wall_seconds": 10.0}, two_threads])
    return bench


def test_plan_takes_measured_cpu_time_and_falls_back_to_the_flop_estimate(partial_mpnet, capsys):
    bench = partial_mpnet
    plan = load_benchmark("quality_plan")
    rows = {r["cell"]: r for r in plan.cell_estimates(bench)}

    sweep = rows["sst2:ptuning-v2:sweep"]  # measured: exactly the runs' own seconds
    assert sweep["time_from"] == "measured"
    assert sweep["cpu_seconds"] == pytest.approx(4 * SWEEP_SECONDS)
    double = rows["sst2:ptuning-v2:ablation-double-epochs"]
    assert double["time_from"] == "measured" and double["cpu_seconds"] == pytest.approx(2 * SWEEP_SECONDS)

    tokens = plan.load_tokens()["full"]  # another task: the method's measured rate x that task's work
    rate = SWEEP_SECONDS / plan.work(tokens["sst2"], quality_protocol.BUDGETS["sst2"].epochs)
    conll = rows["conll2004:ptuning-v2:sweep"]
    assert conll["time_from"] == "measured, other tasks"
    assert conll["cpu_seconds"] == pytest.approx(4 * rate * plan.work(tokens["conll2004"], 5))

    finetune = rows["sst2:finetune:sweep"]  # its only run was on a GPU: the CPU time stays a FLOP estimate
    assert finetune["time_from"] == "FLOP estimate"
    assert finetune["cpu_seconds"] == finetune["flops_cpu_seconds"] > 0

    assert rows["sst2:prompt-tuning:sweep"]["time_from"] == "FLOP estimate"  # two threads: not the plan's CPU

    measured = [r for r in rows.values() if r["time_from"] == "measured"]
    capsys.readouterr()
    quality.main(["--backbone", "mpnet", "--results-dir", str(bench.results_dir), "--plan"])
    text = capsys.readouterr().out
    assert f"**{len(measured)} cells measured**" in text
    ratio = sweep["cpu_seconds"] / sweep["flops_cpu_seconds"]
    assert f"the measured cells took x{ratio:.2f} the FLOP estimate" in text
    assert "| `sst2:ptuning-v2:sweep` | 4 | 1.0 | measured |" in text  # 3600 s


def test_mpnet_tables_and_scaling_render_from_a_partial_results_folder(partial_mpnet, tmp_path, capsys):
    bench = partial_mpnet
    capsys.readouterr()
    assert quality.main(["--backbone", "mpnet", "--results-dir", str(bench.results_dir), "--table"]) == 0
    tables = capsys.readouterr().out
    assert "| P-tuning v2 | 80.0 (1 seed) | pending |" in tables  # lr 1e-2 won the sweep on dev
    assert "| fine-tuning | pending |" in tables
    assert "lr 0.01, P 16: 80.0" in tables and "lr 2e-05: 85.0; lr 5e-05: pending" in tables

    with bench.results_file("sst2").open("a") as file:  # a run of the campaign is halfway through its line
        file.write('{"task": "sst2", "method": "finetune", "setting": {"learning_')
    assert quality.main(["--backbone", "mpnet", "--results-dir", str(bench.results_dir), "--table"]) == 0
    assert capsys.readouterr().out == tables

    scaling = load_benchmark("quality_scaling")
    points = quality_gaps.collect(tmp_path)  # MiniLM (the root itself) has no runs here either
    assert all(point["gap"] is None for point in points[("mpnet", "full")].values())
    table = scaling.render_table(points, quality_anchors.load_anchors())
    assert (
        "| SST-2 | pending (sweeps: PT-2 0/4, FT 0/4) | pending (sweeps: FT 1/4) | pending | "
        "pending (sweeps: PT-2 0/3, FT 0/3) | pending (sweeps: PT-2 0/3, FT 0/3) | pending |"
    ) in table


def test_scaling_anchors_carry_their_source_and_fill_the_authors_columns(tmp_path):
    anchors = quality_anchors.load_anchors()
    assert all("THUDM/P-tuning-v2 README.md @" in a["source"] for a in anchors.values())
    assert anchors[("RoBERTa-large", "superglue-rte", "ptuning-v2")]["value"] == 86.6
    assert not any(method == "finetune" for _, _, method in anchors)  # none found: no gap is made up
    assert (
        quality_anchors.format_anchor(anchors, "RoBERTa-large", "superglue-rte") == "PT-2 86.6 (no FT anchor)"
    )
    assert quality_anchors.format_anchor(anchors, "BERT-large", "squad") == "–"
    both = {
        ("m", "t", "ptuning-v2"): {"value": 80.0},
        ("m", "t", "finetune"): {"value": 81.5},
    }
    assert quality_anchors.format_anchor(both, "m", "t") == "-1.5 (80.0 vs 81.5)"

    unsourced = tmp_path / "anchors.json"
    entry = {
        "model": "BERT-large",
        "task": "copa",
        "method": "ptuning-v2",
        "value": 77.0,
        "metric": "accuracy",
    }
    unsourced.write_text(json.dumps({"anchors": [entry]}))
    with pytest.raises(ValueError, match=r"anchors\[0\]: missing source"):
        quality_anchors.load_anchors(unsourced)


def test_an_ablation_change_that_beats_the_chosen_setting_gets_seeds_43_44_and_renders_over_three(
    partial_mpnet,
):
    """confirm-NAME: only the changes whose seed-42 run beat the chosen setting's, once every change ran."""
    bench = partial_mpnet
    chosen = quality_protocol.SWEEPS["ptuning-v2"][1]  # the sweep's best: dev 0.80
    confirm = quality_protocol.Cell.parse("sst2:ptuning-v2:confirm-prefix-length")
    assert confirm in quality_results.all_cells(bench)
    assert not any(
        c.phase.startswith("confirm-") for c in quality_results.all_cells(quality_results.Bench())
    )  # MiniLM
    with pytest.raises(ValueError, match="confirm-NAME"):
        quality_protocol.Cell.parse("sst2:finetune:confirm-pooling")
    short, long = ({**chosen, "prefix_length": p} for p in (4, 64))
    write_records(bench, "sst2", [{"method": "ptuning-v2", "setting": short, "dev": 0.90}])
    assert quality_results.cell_status(bench, confirm) == "waiting for its ablation"  # P 64 has not run
    write_records(bench, "sst2", [{"method": "ptuning-v2", "setting": long, "dev": 0.70}])
    assert quality_results.cell_runs(bench, confirm) == [(short, 43), (short, 44)]  # P 4 won, P 64 lost
    assert quality_results.cell_status(bench, confirm) == "0/2 runs"
    rows = [line for line in quality_tables.render_ablations(bench) if "prefix-length" in line]
    assert rows[0].startswith("| SST-2 | prefix-length: P 4 | 80.0 | 90.0 | +10.0 |")
    seeds = [
        {"method": "ptuning-v2", "setting": setting, "seed": seed, "dev": dev}
        for setting, devs in ((short, (0.88, 0.89)), (chosen, (0.78, 0.79)))
        for seed, dev in zip(quality_protocol.EXTRA_SEEDS, devs, strict=True)
    ]
    write_records(bench, "sst2", seeds)
    assert quality_results.cell_status(bench, confirm) == "done"
    rows = [line for line in quality_tables.render_ablations(bench) if "prefix-length" in line]
    assert rows[0].startswith(
        "| SST-2 | prefix-length: P 4 | 80.0 (seeds 42-44: 79.0 ± 1.0) | 90.0 (seeds 42-44: 89.0 ± 1.0) |"
    )
    assert "seeds 42-44" not in rows[1]  # P 64: not confirmed


def test_confirmed_changes_are_picked_on_dev_not_on_the_reported_test_score(partial_mpnet):
    """CoNLL-2004 reports test F1: a change ahead on test but behind on dev is not what the sweep would pick."""
    bench = partial_mpnet
    sweep = quality_protocol.SWEEPS["ptuning-v2"]
    scores = [(0.70, 0.71), (0.75, 0.74), (0.60, 0.61), (0.10, 0.11)]  # (dev, test): the second is chosen
    runs = [
        {"method": "ptuning-v2", "setting": s, "dev": d, "test": t}
        for s, (d, t) in zip(sweep, scores, strict=True)
    ]
    chosen = sweep[1]
    short, long = ({**chosen, "prefix_length": p} for p in (4, 64))
    runs += [
        {"method": "ptuning-v2", "setting": short, "dev": 0.74, "test": 0.80},  # behind on dev, ahead on test
        {"method": "ptuning-v2", "setting": long, "dev": 0.76, "test": 0.70},  # ahead on dev
    ]
    write_records(bench, "conll2004", runs)
    assert bench.budgets["conll2004"].report_split == "test"
    confirm = quality_protocol.Cell.parse("conll2004:ptuning-v2:confirm-prefix-length")
    assert quality_results.cell_runs(bench, confirm) == [(long, 43), (long, 44)]


def test_minilm_pending_cells_name_the_scaling_ablations_it_shows_as_pending(tmp_path, monkeypatch):
    """MiniLM's protocol has no scaling ablations as cells, yet its table shows those run by hand, some as
    "pending": its list of pending cells must name them rather than say that everything is done."""
    scaling_phases = {f"{p}-{n}" for n in quality_protocol.SCALING_ABLATIONS for p in ("ablation", "confirm")}
    monkeypatch.setattr(
        quality_tables,
        "cell_status",
        lambda bench, cell: "0/1 runs" if cell.phase in scaling_phases else "done",
    )
    minilm = quality_results.Bench(results_dir=tmp_path)
    lines = quality_tables.render_pending(minilm)
    with_scaling = quality_results.Bench(results_dir=tmp_path, scaling_ablations=True)
    scaling_cells = [c.name for c in quality_results.all_cells(with_scaling) if c.phase in scaling_phases]
    assert scaling_cells and lines[0] == "All cells of the protocol are done."
    assert lines[2].startswith(f"**Pending scaling-ablation cells ({len(scaling_cells)}, cells only with")
    assert all(f"`{name}` (0/1 runs)" in lines[2] for name in scaling_cells)

    lines = quality_tables.render_pending(with_scaling)  # there they are cells: one list, no second paragraph
    assert lines == [
        f"**Pending cells ({len(scaling_cells)} of {len(quality_results.all_cells(with_scaling))}):** "
        + ", ".join(f"`{name}` (0/1 runs)" for name in scaling_cells)
        + "."
    ]

    monkeypatch.setattr(quality_tables, "cell_status", lambda bench, cell: "done")
    assert quality_tables.render_pending(minilm) == ["All cells are done."]


def test_an_ablation_run_over_three_seeds_renders_them_for_any_method(partial_mpnet):
    """grad-clip runs seeds 42-44 at once, for the MLP too: its row must show the three seeds, or a seed-42
    score would hide the other seeds' collapse."""
    bench = partial_mpnet
    sweep = bench.sweeps["prefix-mlp"]
    devs = [0.91] + [0.50] * (len(sweep) - 1)  # the first rate wins
    write_records(
        bench,
        "sst2",
        [{"method": "prefix-mlp", "setting": s, "dev": d} for s, d in zip(sweep, devs, strict=True)],
    )
    chosen, clipped = sweep[0], {**sweep[0], "max_grad_norm": 1.0}
    write_records(
        bench,
        "sst2",
        [
            {"method": "prefix-mlp", "setting": setting, "seed": seed, "dev": dev}
            for setting, seeds in ((chosen, {43: 0.89, 44: 0.90}), (clipped, {42: 0.92, 43: 0.50, 44: 0.50}))
            for seed, dev in seeds.items()
        ],
    )
    row = next(
        line for line in quality_tables.render_ablations(bench) if "grad-clip (prefix-tuning (MLP))" in line
    )
    assert row == (
        "| SST-2 | grad-clip (prefix-tuning (MLP)): max_grad_norm 1 | 91.0 (seeds 42-44: 90.0 ± 1.0) | "
        "92.0 (seeds 42-44: 64.0 ± 24.2) | -26.0 (seeds 42-44; seed 42 +1.0) |"
    )
