"""The scaling table, its figure and the learning curves on synthetic results of both backbones: a complete
cell (3 seeds a side), a partial one (sweeps done, 1 seed on one side), a half-swept one and cells with no run
at all; the gap's arithmetic and the curves' verdicts checked on numbers worked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import quality_anchors
import quality_gaps
import quality_protocol
import quality_results
import quality_tables
from test_smoke import load_benchmark

PNG = b"\x89PNG\r\n\x1a\n"


def write_runs(bench, task: str, method: str, runs: list[dict]) -> None:
    """Append results lines shaped like quality_runner.run_one's (the fields the readers use). Each run: ``setting``,
    ``seed`` (42 unless given), ``score`` (the primary metric as the task stores it) and ``curve`` (dev
    after each epoch, same scale); ``phase`` too where it is not the sweep's or the seeds'."""
    budget = bench.budgets[task]
    metric = budget.metrics[0]
    budget_id = bench.budget_id(task)
    with bench.results_file(task).open("a") as file:
        for run in runs:
            seed = run.get("seed", quality_protocol.SWEEP_SEED)
            scores = {metric: run["score"]}
            record = {
                "task": task,
                "method": method,
                "setting": run["setting"],
                "seed": seed,
                "backbone": bench.backbone,
                "dev": scores,
                "test": scores if budget.report_split == "test" else None,
                "curve": [
                    {"epoch": float(epoch), "dev": value, "test": None, "train_loss": 0.1}
                    for epoch, value in enumerate(run["curve"], start=1)
                ],
                "trainable_params": 1,
                "trainable_percent": 1.0,
                "phase": run.get("phase", "sweep" if seed == quality_protocol.SWEEP_SEED else "seeds"),
                "budget_id": budget_id,
                "key": quality_results.run_key(task, method, run["setting"], seed, budget_id),
            }
            file.write(json.dumps(record) + "\n")


def sweep(
    method: str,
    scores: list[float],
    curves: list[list[float]] | None = None,
    bench: quality_results.Bench | None = None,
) -> list[dict]:
    """The method's seed-42 sweep runs with these scores (the first ``len(scores)`` settings of ``bench``'s sweep,
    MiniLM's by default)."""
    settings = (bench or quality_results.Bench()).sweeps[method][: len(scores)]
    curves = curves or [[score] * 3 for score in scores]
    return [
        {"setting": setting, "score": score, "curve": curve}
        for setting, score, curve in zip(settings, scores, curves, strict=True)
    ]


@pytest.fixture
def results_root(tmp_path) -> Path:
    """MiniLM (the root): SST-2 complete, FT 86/85/87 and PT-2 80/78/82 at their chosen settings (so a gap of
    -6.0, spread sqrt(1 + 4)), and PT-2's epochs x2 ablation at 84. MPNet: SST-2 partial, FT 93/91/92 and PT-2 88 (one seed: gap -4.0);
    CoNLL-2004 half-swept (P-tuning v2 2 of 4 settings, fine-tuning none); RTE one-sided (P-tuning v2's sweep
    done, best 60, fine-tuning none). Nothing else has run."""
    (tmp_path / "mpnet").mkdir()
    minilm = quality_results.Bench(results_dir=tmp_path, model="minilm", backbone="minilm")
    mpnet = quality_results.Bench(results_dir=tmp_path / "mpnet", model="mpnet", backbone="mpnet")
    ft_chosen, pt2_chosen = quality_protocol.SWEEPS["finetune"][2], quality_protocol.SWEEPS["ptuning-v2"][2]

    ft_curves = [[0.8] * 3, [0.84] * 3, [0.80, 0.85, 0.86], [0.83] * 3]
    write_runs(minilm, "sst2", "finetune", sweep("finetune", [0.80, 0.84, 0.86, 0.83], ft_curves))
    write_runs(minilm, "sst2", "finetune", [
        {"setting": ft_chosen, "seed": 43, "score": 0.85, "curve": [0.79, 0.84, 0.85]},
        {"setting": ft_chosen, "seed": 44, "score": 0.87, "curve": [0.81, 0.86, 0.87]},
    ])  # fmt: skip
    pt2_curves = [[0.7, 0.7, 0.7], [0.7, 0.7, 0.7], [0.74, 0.80, 0.80], [0.7, 0.7, 0.7]]
    write_runs(
        minilm,
        "sst2",
        "ptuning-v2",
        sweep("ptuning-v2", [0.70, 0.75, 0.80, 0.72], pt2_curves),
    )
    write_runs(minilm, "sst2", "ptuning-v2", [
        {"setting": pt2_chosen, "seed": 43, "score": 0.78, "curve": [0.72, 0.78, 0.78]},
        {"setting": pt2_chosen, "seed": 44, "score": 0.82, "curve": [0.76, 0.82, 0.82]},
    ])  # fmt: skip

    longer = {**pt2_chosen, "epochs_factor": 2}  # the epochs x2 ablation; x4 has not run
    write_runs(minilm, "sst2", "ptuning-v2", [
        {"setting": longer, "score": 0.84, "curve": [0.74, 0.80, 0.82, 0.84, 0.84, 0.84]},
    ])  # fmt: skip

    write_runs(mpnet, "sst2", "finetune", sweep("finetune", [0.90, 0.93, 0.89, 0.88]))
    write_runs(mpnet, "sst2", "finetune", [
        {"setting": quality_protocol.SWEEPS["finetune"][1], "seed": 43, "score": 0.91, "curve": [0.9, 0.91, 0.91]},
        {"setting": quality_protocol.SWEEPS["finetune"][1], "seed": 44, "score": 0.92, "curve": [0.9, 0.92, 0.92]},
    ])  # fmt: skip
    write_runs(mpnet, "sst2", "ptuning-v2", sweep("ptuning-v2", [0.87, 0.88, 0.51, 0.50]))
    write_runs(mpnet, "superglue-rte", "ptuning-v2", sweep("ptuning-v2", [0.55, 0.60, 0.52, 0.50]))
    conll_curves = [[0.5, 0.6, 0.7, 0.72, 0.71], [0.4, 0.5, 0.5, 0.5, 0.5]]
    write_runs(mpnet, "conll2004", "ptuning-v2", sweep("ptuning-v2", [0.71, 0.5], conll_curves))
    return tmp_path


def test_gap_is_the_difference_of_seed_means_with_spread_only_when_both_sides_have_three_seeds(results_root):
    root = results_root
    points = quality_gaps.collect(root)

    complete = points[("minilm", "full")]["sst2"]
    assert complete["status"] == "complete" and complete["seeds"] == (3, 3)
    assert complete["ptuning_v2"] == pytest.approx(80.0) and complete["finetune"] == pytest.approx(86.0)
    assert complete["gap"] == pytest.approx(-6.0)
    assert complete["spread"] == pytest.approx(5**0.5)  # sample variances 4 (PT-2) and 1 (FT)
    assert complete["ranges"]["ptuning-v2"] == pytest.approx((78.0, 82.0))

    partial = points[("mpnet", "full")]["sst2"]  # FT chose lr 5e-5 (dev 93), PT-2 lr 1e-2 (88), one seed
    assert partial["status"] == "partial" and partial["seeds"] == (1, 3)
    assert partial["gap"] == pytest.approx(88.0 - 92.0) and partial["spread"] is None

    half_swept = points[("mpnet", "full")]["conll2004"]
    assert half_swept["status"] == "pending" and half_swept["gap"] is None
    assert half_swept["sweeps"] == {"ptuning-v2": (2, 4), "finetune": (0, 4)}
    assert set(points[("minilm", "large")]) == {"sst2", "conll2004", "conll2003", "squad"}
    assert all(point["status"] == "pending" for point in points[("mpnet", "large")].values())


def test_table_marks_partial_and_pending_cells_and_drops_none(results_root):
    root = results_root
    scaling = load_benchmark("quality_scaling")
    table = scaling.render_table(quality_gaps.collect(root), quality_anchors.load_anchors())

    assert (
        "| SST-2 | -6.0 ± 2.2 | -4.0 (1/3 seeds) | +2.0 (partial) | pending (sweeps: PT-2 0/3, FT 0/3) | "
        "pending (sweeps: PT-2 0/3, FT 0/3) | pending |"
    ) in table
    assert (
        "| CoNLL-2004 | pending (sweeps: PT-2 0/4, FT 0/4) | pending (sweeps: PT-2 2/4, FT 0/4) | pending |"
        in table
    )
    assert (
        "| COPA | pending (sweeps: PT-2 0/4, FT 0/4) | pending (sweeps: PT-2 0/4, FT 0/4) | pending | – | – | – |"
        in table
    )
    for (
        budget
    ) in quality_protocol.BUDGETS.values():  # every task has its summary row, its anchors row and detail rows
        assert table.count(f"| {budget.label} |") >= 4, budget.label
    assert "| SST-2 | 22.6 M (minilm) | 1x budget | 80.0 (78.0–82.0) | 86.0 (85.0–87.0) | 3/3 |" in table
    assert "| SST-2 | 109.5 M (mpnet) | 1x budget | 88.0 | 92.0 (91.0–93.0) | 1/3 |" in table
    assert (
        "| CoNLL-2004 | 109.5 M (mpnet) | 1x budget | pending (sweep 2/4) | pending (sweep 0/4) | 0/0 |"
        in table
    )
    assert "| RTE | – | PT-2 86.6 (no FT anchor) |" not in table  # BERT-large has an RTE anchor too
    assert "| RTE | PT-2 80.1 (no FT anchor) | PT-2 86.6 (no FT anchor) |" in table
    assert "| SST-2 | – | – |" in table  # no anchor: said, not dropped


def test_curve_verdicts_tell_rising_from_flat_and_peaked():
    curves = load_benchmark("quality_curves")

    def curve(*means):
        return [(float(epoch), mean, mean, mean) for epoch, mean in enumerate(means, start=1)]

    assert curves.verdict(curve(80.0, 85.0, 86.0)) == "still rising (+1.0 since epoch 2)"
    assert curves.verdict(curve(80.0, 85.0, 85.3)) == "flat (+0.3 since epoch 2)"
    assert curves.verdict(curve(80.0, 87.0, 86.0)) == "peaked at epoch 2 (-1.0 at the end)"
    # 30 epochs: the reference is two thirds of the way in (epoch 20), not the epoch before
    slow = curve(*[50.0 + 0.1 * epoch for epoch in range(30)])
    assert curves.verdict(slow) == "still rising (+1.0 since epoch 20)"
    assert curves.verdict(curve(70.0)) == "one evaluation: cannot tell"
    assert curves.shown_points(curve(*range(10))) == "1: 0.0 · 3: 2.0 · 5: 4.0 · 6: 5.0 · 8: 7.0 · 10: 9.0"


def test_curves_average_the_chosen_setting_over_seeds_and_mark_provisional_settings(results_root):
    root = results_root
    curves = load_benchmark("quality_curves")
    entries = {(e["scale"], e["task"], e["backbone"], e["method"]): e for e in curves.collect(root)}

    minilm_ft = entries[("full", "sst2", "minilm", "finetune")]
    assert len(minilm_ft["found"]["runs"]) == 3 and not minilm_ft["found"]["provisional"]
    assert [round(mean, 6) for _, mean, _, _ in minilm_ft["curve"]] == [80.0, 85.0, 86.0]
    assert minilm_ft["curve"][0][2:] == pytest.approx((79.0, 81.0))  # min, max over seeds
    half_swept = entries[("full", "conll2004", "mpnet", "ptuning-v2")]
    assert half_swept["found"]["provisional"] and half_swept["found"]["sweep"] == (2, 4)

    table = curves.render_table(list(entries.values()))
    assert (
        "| SST-2 | 1x budget | 22.6 M (minilm) | fine-tuning | lr 0.0001 | 3 | 1: 80.0 · 2: 85.0 · 3: 86.0 | "
        "still rising (+1.0 since epoch 2) | – |"
    ) in table
    assert (
        "| SST-2 | 1x budget | 22.6 M (minilm) | P-tuning v2 | lr 0.03, P 16 | 3 | 1: 74.0 · 2: 80.0 · 3: 80.0 | "
        "flat (+0.0 since epoch 2) | x2: 84.0 (+4.0) · x4: pending |"
    ) in table
    assert (
        "| CoNLL-2004 | 1x budget | 109.5 M (mpnet) | P-tuning v2 | lr 0.005, P 16 (provisional: best of sweep "
        "2/4) | 1 | 1: 50.0 · 2: 60.0 · 3: 70.0 · 4: 72.0 · 5: 71.0 | peaked at epoch 4 (-1.0 at the end) |"
    ) in table
    assert (
        "| CoNLL-2004 | 1x budget | 109.5 M (mpnet) | fine-tuning | pending (sweep 0/4) | 0 | – | – |"
        in table
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 2 * 2 * (
        len(quality_protocol.BUDGETS) + len(quality_protocol.LARGE_BUDGETS)
    )  # none dropped


def test_one_command_writes_both_figures_and_both_doc_sections(results_root, tmp_path):
    root = results_root
    scaling = load_benchmark("quality_scaling")
    doc = tmp_path / "RESULTS.md"
    doc.write_text(
        "a\n<!-- quality-standing:start -->\nold\n<!-- quality-standing:end -->\n"
        "<!-- quality-scaling:start -->\nold\n<!-- quality-scaling:end -->\n"
        "<!-- quality-curves:start -->\nold\n<!-- quality-curves:end -->\n"
        "<!-- quality-outside-grid:start -->\nold\n<!-- quality-outside-grid:end -->\nb\n"
    )
    figure, curves = tmp_path / "gap.png", tmp_path / "curves.png"
    arguments = ["--results-root", str(root), "--figure", str(figure), "--curves-figure", str(curves)]

    assert scaling.main([*arguments, "--update-doc", str(doc)]) == 0

    assert figure.read_bytes()[:8] == PNG and curves.read_bytes()[:8] == PNG
    text = doc.read_text()
    assert "old" not in text and text.startswith("a\n") and text.endswith("b\n")
    assert "| SST-2 | -6.0 ± 2.2 |" in text and "**Learning curves**" in text
    assert "| SST-2 (dev acc.) | 22.6 M (minilm) | 86.0 ± 1.0 |" in text  # the standing
    assert "**Runs outside the grid**" in text and "| none yet |" in text


def test_runs_outside_the_grid_get_a_row_each_with_their_curve_peak_end_and_loss(results_root):
    curves = load_benchmark("quality_curves")
    reruns = results_root / "mpnet" / "reruns"
    reruns.mkdir()
    points = [(0.52, 0.71), (0.60, 0.65), (0.66, 0.58), (0.64, 0.55)]
    record = {
        "task": "superglue-rte",
        "method": "ptuning-v2",
        "setting": {"learning_rate": 0.01, "epochs_factor": 4, "backbone_dtype": "bf16"},
        "seed": 43,
        "curve": [
            {"epoch": float(epoch), "dev": dev, "test": None, "train_loss": loss}
            for epoch, (dev, loss) in enumerate(points, start=1)
        ],
    }
    (reruns / "rte-long.jsonl").write_text(json.dumps(record) + "\n" + '{"partial')  # a line being written
    runs = curves.outside_grid_runs(results_root)
    assert [(r["backbone"], r["seed"], r["file"]) for r in runs] == [("mpnet", 43, "rte-long.jsonl")]
    row = curves.render_outside_grid(runs).splitlines()[-1]
    assert row == (
        "| RTE | 109.5 M (mpnet) | P-tuning v2 | lr 0.01, epochs x4, backbone bf16 | 43 | "
        "1: 52.0 · 2: 60.0 · 3: 66.0 · 4: 64.0 | 66.0 (3) | 64.0 | peaked at epoch 3 (-2.0 at the end) | "
        "0.710 → 0.550 | `rte-long.jsonl` |"
    )


def test_standing_shows_every_method_at_its_chosen_setting_and_names_tasks_without_a_finished_sweep(
    results_root,
):
    """MiniLM SST-2: fine-tuning 86/85/87, P-tuning v2 80/78/82 (its epochs x2 ablation trains longer: never the
    best like-for-like setting), prompt tuning and the probe not run. MPNet: SST-2 fine-tuning complete and
    P-tuning v2 at one seed (no best setting before both sides have three), RTE P-tuning v2's sweep only,
    CoNLL-2004 half a sweep (no chosen setting: no row)."""
    scaling = load_benchmark("quality_scaling")
    root = results_root
    points = quality_gaps.collect(root)
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): [cell.strip() for cell in line.split("|")[3:-1]]
        for line in scaling.render_standing(quality_gaps.collect_best(points, root), root).splitlines()
        if line.startswith("| ") and "---" not in line and not line.startswith("| task")
    }
    assert rows[("SST-2 (dev acc.)", "22.6 M (minilm)")] == [
        "86.0 ± 1.0", "80.0 ± 2.0", "80.0 ± 2.0 (the chosen setting)", "pending", "pending", "pending"
    ]  # fmt: skip
    assert rows[("SST-2 (dev acc.)", "109.5 M (mpnet)")] == [
        "92.0 ± 1.0", "88.0 (1 seed)", "pending (both sides' seeds)", "pending", "pending", "pending"
    ]  # fmt: skip
    assert rows[("RTE (dev acc.)", "109.5 M (mpnet)")][:2] == ["pending", "60.0 (1 seed)"]
    assert len(rows) == 3
    text = scaling.render_standing(quality_gaps.collect_best(points, root), root)
    assert "No finished sweep yet: " in text and "CoNLL-2004 at 109.5 M" in text and "SST-2 at" not in text


def test_best_measured_setting_is_picked_by_mean_dev_among_three_seed_settings_of_the_same_budget(tmp_path):
    """MPNet SST-2: fine-tuning 92/91/93; P-tuning v2's chosen setting 88/86/87; warmup (three seeds) 89/90/91;
    mean pooling better still but at one seed only; epochs x2 best of all over three seeds but trains longer
    than fine-tuning. The best like-for-like setting is warmup: gap 90 − 92 = −2.0, moved +3.0 from −5.0."""
    scaling = load_benchmark("quality_scaling")
    (tmp_path / "mpnet").mkdir()
    mpnet = quality_results.Bench(results_dir=tmp_path / "mpnet", model="mpnet", backbone="mpnet")
    ft_chosen, pt2_chosen = quality_protocol.SWEEPS["finetune"][1], quality_protocol.SWEEPS["ptuning-v2"][1]
    write_runs(mpnet, "sst2", "finetune", sweep("finetune", [0.80, 0.92, 0.81, 0.79]))
    write_runs(mpnet, "sst2", "finetune", [
        {"setting": ft_chosen, "seed": 43, "score": 0.91, "curve": [0.91]},
        {"setting": ft_chosen, "seed": 44, "score": 0.93, "curve": [0.93]},
    ])  # fmt: skip
    write_runs(mpnet, "sst2", "ptuning-v2", sweep("ptuning-v2", [0.80, 0.88, 0.70, 0.60]))

    def three_seeds(setting, scores):
        return [
            {"setting": setting, "seed": seed, "score": score, "curve": [score]}
            for seed, score in zip(quality_protocol.ALL_SEEDS, scores, strict=True)
        ]

    write_runs(mpnet, "sst2", "ptuning-v2", three_seeds(pt2_chosen, [0.88, 0.86, 0.87])[1:])
    # only the chosen setting so far
    alone = quality_gaps.best_measured(mpnet, "sst2", quality_gaps.gap(mpnet, "sst2"))
    assert alone["change"] is None and alone["candidates"] == 1 and alone["gap"] == pytest.approx(-5.0)
    write_runs(mpnet, "sst2", "ptuning-v2", [
        *three_seeds({**pt2_chosen, "warmup_ratio": 0.1}, [0.89, 0.90, 0.91]),
        *three_seeds({**pt2_chosen, "epochs_factor": 2}, [0.95, 0.95, 0.95]),
        {"setting": {**pt2_chosen, "pooling": "mean"}, "score": 0.99, "curve": [0.99]},
    ])  # fmt: skip

    best = quality_gaps.best_measured(mpnet, "sst2", quality_gaps.gap(mpnet, "sst2"))

    assert best["change"] == "warmup" and best["changed"] == {"warmup_ratio": 0.1}
    assert best["candidates"] == 2  # the chosen setting and warmup: x2 left out, mean pooling has one seed
    assert best["scores"] == pytest.approx([89.0, 90.0, 91.0])
    assert best["gap"] == pytest.approx(-2.0)
    assert best["spread"] == pytest.approx(2**0.5)  # sample variances 1 and 1
    points = {(name, scale): {} for name in quality_protocol.BACKBONES for scale in quality_gaps.SCALES}
    points[("mpnet", "full")]["sst2"] = quality_gaps.gap(mpnet, "sst2")
    rows = scaling.render_best(
        {key: {t: points[key].get(t, {"status": "pending", "sweeps": {}}) for t in quality_gaps.tasks_of("full")}
         for key in points},
        {name: {t: best if (name, t) == ("mpnet", "sst2") else None for t in quality_gaps.tasks_of("full")}
         for name in quality_protocol.BACKBONES},
    )  # fmt: skip
    assert (
        "| SST-2 | 109.5 M (mpnet) | -5.0 ± 1.4 | warmup: warmup 0.1 | 2 | 90.0 (89.0–91.0) | -2.0 ± 1.4 | +3.0 |"
        in rows
    )


def test_the_mlp_reparameterization_competes_for_the_best_setting_at_its_own_chosen_setting(tmp_path):
    """MPNet SST-2: fine-tuning 92/91/93, P-tuning v2's chosen setting 88/86/87. Prefix-tuning's MLP, swept
    88 / 91 / 70 / 85 (lr 1e-3 chosen; MPNet's grid adds 1e-4), scores 91/92/90 over its three seeds: the best measured setting, gap
    91 − 92 = −1.0. Until its seeds run, the chosen P-tuning v2 setting stays best."""
    scaling = load_benchmark("quality_scaling")
    (tmp_path / "mpnet").mkdir()
    mpnet = quality_results.Bench(results_dir=tmp_path / "mpnet", model="mpnet", backbone="mpnet")
    ft_chosen, pt2_chosen = quality_protocol.SWEEPS["finetune"][1], quality_protocol.SWEEPS["ptuning-v2"][1]
    mlp_chosen = quality_protocol.SWEEPS["prefix-mlp"][1]
    write_runs(mpnet, "sst2", "finetune", sweep("finetune", [0.80, 0.92, 0.81, 0.79]))
    write_runs(mpnet, "sst2", "ptuning-v2", sweep("ptuning-v2", [0.80, 0.88, 0.70, 0.60]))
    write_runs(mpnet, "sst2", "prefix-mlp", sweep("prefix-mlp", [0.88, 0.91, 0.70, 0.85], bench=mpnet))
    for method, setting, scores in [
        ("finetune", ft_chosen, [0.91, 0.93]),
        ("ptuning-v2", pt2_chosen, [0.86, 0.87]),
    ]:
        write_runs(mpnet, "sst2", method, [
            {"setting": setting, "seed": seed, "score": score, "curve": [score]}
            for seed, score in zip((43, 44), scores, strict=True)
        ])  # fmt: skip
    assert quality_gaps.best_measured(mpnet, "sst2", quality_gaps.gap(mpnet, "sst2"))["change"] is None

    write_runs(mpnet, "sst2", "prefix-mlp", [
        {"setting": mlp_chosen, "seed": 43, "score": 0.92, "curve": [0.92]},
        {"setting": mlp_chosen, "seed": 44, "score": 0.90, "curve": [0.90]},
    ])  # fmt: skip
    best = quality_gaps.best_measured(mpnet, "sst2", quality_gaps.gap(mpnet, "sst2"))

    assert best["change"] == "reparameterization" and best["method"] == "prefix-mlp"
    assert best["changed"] == mlp_chosen and best["candidates"] == 2
    assert best["scores"] == pytest.approx([91.0, 92.0, 90.0])
    assert best["gap"] == pytest.approx(-1.0)
    assert scaling.format_best_change(best) == "MLP reparameterization (prefix-tuning), lr 0.001, P 16"
    rows = scaling.render_three_seed_settings(
        {name: {t: best if name == "mpnet" and t == "sst2" else None for t in quality_gaps.tasks_of("full")}
         for name in quality_protocol.BACKBONES},
    )  # fmt: skip
    settings = [row for row in rows if row.startswith("| SST-2")]
    assert (
        settings
        == [  # best mean dev first; gaps against fine-tuning's 92.0, spreads sqrt(1 + 1) and sqrt(1 + 1)
            "| SST-2 | 109.5 M (mpnet) | MLP reparameterization (prefix-tuning), lr 0.001, P 16 | 91.0 ± 1.0 | 91.0 "
            "| -1.0 ± 1.4 |",
            "| SST-2 | 109.5 M (mpnet) | the chosen setting | 87.0 ± 1.0 | 87.0 | -5.0 ± 1.4 |",
        ]
    )


def test_best_measured_waits_for_both_sides_seeds(results_root):
    root = results_root
    best = quality_gaps.collect_best(quality_gaps.collect(root), root)
    assert best["mpnet"]["sst2"] is None  # P-tuning v2 has one seed there
    minilm = best["minilm"]["sst2"]  # the epochs x2 ablation is the best dev score but trains longer
    assert minilm["change"] is None and minilm["gap"] == pytest.approx(-6.0)


def test_a_scaling_ablation_run_by_hand_gets_rows_only_for_the_methods_that_ran_it(tmp_path):
    """On MiniLM the warmup ablation is no cell: run by hand for P-tuning v2, it gets P-tuning v2's row and not
    prefix-tuning's (which warmup also names). On MPNet it is a cell, so both rows stand, run or not."""
    (tmp_path / "mpnet").mkdir()
    minilm = quality_results.Bench(results_dir=tmp_path, model="minilm", backbone="minilm")
    mpnet = quality_results.Bench(results_dir=tmp_path / "mpnet", model="mpnet", backbone="mpnet")
    setting = {**quality_protocol.SWEEPS["ptuning-v2"][0], "warmup_ratio": 0.1}
    for bench in (minilm, mpnet):
        write_runs(bench, "sst2", "ptuning-v2", [
            {"setting": setting, "score": 0.8, "curve": [0.8], "phase": "ablation-warmup"},
        ])  # fmt: skip

    def warmup_rows(bench):
        ran = quality_tables.ablations_run(bench)
        return [row for row in quality_tables.ablation_rows(bench, "sst2", ran) if row[0] == "warmup"]

    assert quality_tables.ablations_run(minilm) == {("warmup", "ptuning-v2")}
    assert warmup_rows(minilm) == [("warmup", "ptuning-v2")]
    assert warmup_rows(mpnet) == [("warmup", "ptuning-v2"), ("warmup", "prefix-mlp")]
