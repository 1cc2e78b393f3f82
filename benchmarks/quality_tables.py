"""The quality benchmark's Markdown tables (docs/RESULTS.md): per backbone and scale a summary, one table per
task with each method's sweep, the ablations, and the cells still pending. Reads results through
``quality_results``; writes nothing but the document section it is given."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from doc_tables import replace_between_markers
from quality_protocol import (
    ALL_SEEDS_ABLATIONS,
    EXTRA_SEEDS,
    METHOD_LABELS,
    SCALING_ABLATIONS,
    SWEEP_SEED,
    TASK_ORDER,
    Budget,
    ablation_changes,
    ablation_methods,
    ablations_for,
)
from quality_results import (
    Bench,
    all_cells,
    cell_status,
    chosen_setting,
    dev_score,
    find_run,
    method_result,
    primary,
    run_key,
    seed_scores,
    tied_settings,
)

TABLE_MARKERS = {  # MiniLM's sections; other backbones get their own (see table_markers)
    "full": ("<!-- quality-tables:start -->", "<!-- quality-tables:end -->"),
    "large": ("<!-- quality-large-tables:start -->", "<!-- quality-large-tables:end -->"),
    "smoke": ("<!-- quality-tables:start -->", "<!-- quality-tables:end -->"),
}


def mean_std(values: list[float]) -> str:
    if not values:
        return "pending"
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    seeds = "" if len(values) == 1 + len(EXTRA_SEEDS) else f" ({len(values)} seeds)"  # not yet all three
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}{seeds}"


def format_difference(ours: list[float], theirs: list[float]) -> str:
    """Mean minus mean; '(3/2 seeds)' when the two sides ran different numbers of seeds (as the scaling table
    marks a partial gap), since the difference then compares different sets of runs."""
    difference = f"{statistics.mean(ours) - statistics.mean(theirs):+.1f}"
    return difference if len(ours) == len(theirs) else f"{difference} ({len(ours)}/{len(theirs)} seeds)"


def format_setting(setting: dict[str, Any]) -> str:
    names = {
        "learning_rate": "lr",
        "prefix_length": "P",
        "position_mode": "positions",
        "prefix_dropout": "prefix dropout",
        "prefix_layers": "prefix on layers",
        "pooling": "pooling",
        "warmup_ratio": "warmup",
        "backbone_dtype": "backbone",
    }
    parts = []
    for key, value in setting.items():
        if key == "epochs_factor":
            parts.append(f"epochs x{value}")
        elif isinstance(value, list):
            parts.append(f"{names.get(key, key)} {value[0]}-{value[-1]}")
        else:
            parts.append(
                f"{names.get(key, key)} {value:g}"
                if isinstance(value, float)
                else f"{names.get(key, key)} {value}"
            )
    return ", ".join(parts)


def render_tables(bench: Bench) -> str:
    lines = [
        f"Backbone: {bench.spec.description.format(model=bench.model)}. "
        f"Each method's setting is chosen on dev (seed {SWEEP_SEED}); the chosen setting is then run with seeds "
        f"{', '.join(map(str, EXTRA_SEEDS))} too; tables show mean ± sample std over the seeds that finished. "
        "The seed-42 run of the chosen setting is one of the three seeds (it was selected on dev, so dev-scored "
        "tasks are slightly optimistic for every method alike). Scores are percentages.",
        "",
    ]
    if bench.scale == "large":
        learnable = "MiniLM can learn" if bench.backbone == "minilm" else "MiniLM could learn (the same four)"
        lines += [
            "**Larger budgets** (`--scale large`): the same protocol with 4-11x the examples of the 1x "
            f"budgets, for the tasks {learnable} and the methods the targets compare.",
            "",
        ]
    lines += render_summary(bench)
    for task in TASK_ORDER:
        if task in bench.budgets:
            lines += render_task(bench, task)
    if bench.scale != "large":
        lines += render_ablations(bench)
    lines += render_pending(bench)
    return "\n".join(lines).rstrip() + "\n"


def render_summary(bench: Bench) -> list[str]:
    tasks = [t for t in TASK_ORDER if t in bench.budgets]
    header = ["method"] + [
        f"{bench.budgets[t].label} ({bench.budgets[t].report_split} {metric_name(bench.budgets[t])})"
        for t in tasks
    ]
    lines = ["### Summary", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    scores: dict[str, dict[str, list[float]]] = {}
    for method in bench.sweeps:
        row = [METHOD_LABELS[method]]
        for task in tasks:
            result = method_result(bench, task, method)
            values = result["scores"][bench.budgets[task].metrics[0]] if result else []
            row.append(mean_std(values))
            if values:
                scores.setdefault(method, {})[task] = values
        lines.append("| " + " | ".join(row) + " |")
    for other in ("finetune", "prompt-tuning"):
        row = [f"P-tuning v2 − {METHOD_LABELS[other]}"]
        for task in tasks:
            ours, theirs = scores.get("ptuning-v2", {}).get(task), scores.get(other, {}).get(task)
            row.append("pending" if ours is None or theirs is None else format_difference(ours, theirs))
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Targets: P-tuning v2 within 1 point of fine-tuning and at least 5 points above prompt tuning.",
        "",
    ]
    return lines


def metric_name(budget: Budget) -> str:
    return {"accuracy": "acc.", "f1": "F1", "exact_match": "EM"}[budget.metrics[0]]


def render_task(bench: Bench, task: str) -> list[str]:
    budget = bench.budgets[task]
    metrics = " / ".join({"accuracy": "accuracy", "f1": "F1", "exact_match": "EM"}[m] for m in budget.metrics)
    lines = [
        f"### {budget.label}",
        "",
        f"Budget (every method): {budget.describe()}. {budget.note}. Reported: {budget.report_split} {metrics}.",
        "",
        f"| method | chosen setting | trainable params | % of total | {budget.report_split} {metrics} | seeds | sweep, seed {SWEEP_SEED} (dev) |",
        "|---|---|---|---|---|---|---|",
    ]
    budget_id = bench.budget_id(task)
    records = bench.records(task)
    for method in bench.sweeps:
        sweep = []
        ties = tied_settings(bench, task, method)
        for setting in bench.sweeps[method]:
            run = find_run(records, run_key(task, method, setting, SWEEP_SEED, budget_id))
            score = "pending" if run is None else format_dev(dev_score(run, budget))
            if setting in ties:  # the sweep keeps the first of a tie: say so where the tie shows
                score += " (tie, chosen)" if setting == ties[0] else " (tie)"
            sweep.append(f"{format_setting(setting)}: {score}")
        result = method_result(bench, task, method)
        if result is None:
            any_run = next((r for r in records if r["method"] == method), None)
            params = f"{any_run['trainable_params']:,}" if any_run else "–"
            percent = f"{any_run['trainable_percent']:.3g}" if any_run else "–"
            lines.append(
                f"| {METHOD_LABELS[method]} | pending | {params} | {percent} | pending | 0 | {'; '.join(sweep)} |"
            )
            continue
        first = result["runs"][0]
        score = " / ".join(mean_std(result["scores"][m]) for m in budget.metrics)
        lines.append(
            f"| {METHOD_LABELS[method]} | {format_setting(result['setting'])} | {first['trainable_params']:,} | "
            f"{first['trainable_percent']:.3g} | {score} | {len(result['runs'])} | {'; '.join(sweep)} |"
        )
    return lines + [""]


def format_dev(score: float) -> str:
    """A sweep run's dev score; one without a real score (missing, or NaN) ranks last and reads so."""
    return "no score" if score == float("-inf") else f"{score:.1f}"


def render_ablations(bench: Bench) -> list[str]:
    ran = ablations_run(bench)
    names = rendered_ablations(bench, ran)
    lines = [
        "### P-tuning v2 ablations",
        "",
        f"One seed ({SWEEP_SEED}); each row changes one thing in P-tuning v2's chosen setting (P = 16 there "
        'unless the row says otherwise). `epochs x2` and `x4` multiply the budget, so they answer "is P-tuning v2 '
        'under-trained at this budget?" rather than comparing methods.'
        + (
            " Pooling rows marked (fine-tuning) change fine-tuning's chosen setting the same way."
            if "pooling" in names
            else ""
        )
        + (
            " A change that beat the chosen setting runs seeds 43 and 44 as well (`confirm-NAME` cells)."
            if bench.confirms_ablations
            else ""
        )
        + " A row whose change ran over seeds 42-44 (a confirmed change, or "
        + ", ".join(f"`{name}`" for name in ALL_SEEDS_ABLATIONS)
        + ", which runs all three at once) shows both settings over those seeds.",
        "",
        "| task | change | chosen setting (seed 42) | with the change | difference (of the seeds 42-44 means where "
        "both ran them, else seed 42's) |",
        "|---|---|---|---|---|",
    ]
    for task in bench.spec.ablation_tasks:
        if task not in bench.budgets:
            continue
        budget = bench.budgets[task]
        budget_id = bench.budget_id(task)
        records = bench.records(task)
        for name, method in ablation_rows(bench, task, ran):
            chosen = chosen_setting(bench, task, method)
            base = find_run(records, run_key(task, method, chosen, SWEEP_SEED, budget_id)) if chosen else None
            label = name if method == "ptuning-v2" else f"{name} ({METHOD_LABELS[method]})"
            for change in ablation_changes(name, bench.spec.num_layers):
                run = (
                    find_run(records, run_key(task, method, {**chosen, **change}, SWEEP_SEED, budget_id))
                    if chosen
                    else None
                )
                base_score = primary(base, budget) if base else None
                score = primary(run, budget) if run else None
                # a change run over seeds 42-44 (a confirm-NAME cell, or an ablation such as grad-clip that runs
                # all three at once, for any method): both settings over the three seeds, so that one seed's
                # score cannot hide another's collapse
                three = (
                    [seed_scores(bench, task, method, s) for s in (chosen, {**chosen, **change})]
                    if chosen
                    else []
                )
                base_seeds, change_seeds = (
                    [f" (seeds 42-44: {mean_std(t)})" for t in three]
                    if three and None not in three
                    else ["", ""]
                )
                difference = "–" if base_score is None or score is None else f"{score - base_score:+.1f}"
                if three and None not in three:  # the row's summary must agree with the means it shows
                    over_seeds = statistics.mean(three[1]) - statistics.mean(three[0])
                    difference = f"{over_seeds:+.1f} (seeds 42-44; seed 42 {difference})"
                lines.append(
                    f"| {budget.label} | {label}: {format_setting(change)} | "
                    f"{'pending' if base_score is None else f'{base_score:.1f}'}{base_seeds} | "
                    f"{'pending' if score is None else f'{score:.1f}'}{change_seeds} | {difference} |"
                )
    return lines + [""]


def ablations_run(bench: Bench) -> set[tuple[str, str]]:
    """(ablation, method) of every ablation run in the bench's results files."""
    return {
        (r["phase"].removeprefix("ablation-"), r["method"])
        for task in bench.budgets
        for r in bench.records(task)
        if r.get("phase", "").startswith("ablation-")
    }


def rendered_ablations(bench: Bench, ran: set[tuple[str, str]]) -> tuple[str, ...]:
    """The bench's ablations, plus any scaling ablation that has a run (MiniLM's named with --cell)."""
    by_hand = {name for name, _ in ran}
    return bench.ablation_names + tuple(
        n for n in SCALING_ABLATIONS if n in by_hand and n not in bench.ablation_names
    )


def ablation_rows(bench: Bench, task: str, ran: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The task's (ablation, method) rows: every pair that is a cell of the bench, and a scaling ablation run by
    hand (``ran``, from ``ablations_run``) only for the methods that ran it."""
    return [
        (name, method)
        for name in ablations_for(task, rendered_ablations(bench, ran), bench.spec.ablation_tasks)
        for method in ablation_methods(name)
        if name in bench.ablation_names or (name, method) in ran
    ]


def pending_cells(bench: Bench) -> dict[str, str]:
    """Each unfinished cell's name and status, in the order --run-all runs them."""
    statuses = {cell.name: cell_status(bench, cell) for cell in all_cells(bench)}
    return {name: status for name, status in statuses.items() if status != "done"}


def listed(pending: dict[str, str]) -> str:
    return ", ".join(f"`{name}` ({status})" for name, status in pending.items()) + "."


def render_pending(bench: Bench) -> list[str]:
    """The bench's unfinished cells; on a bench without the scaling ablations as cells (MiniLM's), theirs too,
    since its ablation table shows those run by hand and their unfinished rows read "pending"."""
    cells = {cell.name for cell in all_cells(bench)}
    listed_bench = bench if bench.confirms_ablations else replace(bench, scaling_ablations=True)
    pending = pending_cells(listed_bench)  # one status per cell: the protocol's and, for MiniLM, the rest
    protocol = {name: status for name, status in pending.items() if name in cells}
    scaling_only = {name: status for name, status in pending.items() if name not in cells}
    if protocol:
        lines = [f"**Pending cells ({len(protocol)} of {len(cells)}):** " + listed(protocol)]
    else:
        lines = ["All cells of the protocol are done." if scaling_only else "All cells are done."]
    if not scaling_only:
        return lines
    return lines + [
        "",
        f"**Pending scaling-ablation cells ({len(scaling_only)}, cells only with `--scaling-ablations`):** "
        + listed(scaling_only),
    ]


def table_markers(backbone: str, scale: str) -> tuple[str, str]:
    """MiniLM's tables keep their markers; another backbone's go between markers named for it."""
    if backbone == "minilm":
        return TABLE_MARKERS[scale]
    section = f"quality-{backbone}-large-tables" if scale == "large" else f"quality-{backbone}-tables"
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def update_doc(path: Path, tables: str, scale: str = "full", backbone: str = "minilm") -> None:
    replace_between_markers(path, *table_markers(backbone, scale), tables)
