"""The scaling question: does P-tuning v2's gap to fine-tuning shrink as the backbone grows?

Reads the quality results of every backbone (``benchmarks/quality.py --backbone ...``), at both budgets, and
renders the gap P-tuning v2 − fine-tuning per task (mean over seeds of each side's chosen setting) against
the backbone's size: a PNG and Markdown tables. A cell without a gap says which sweeps are unfinished, and
a partial gap (fewer than all seeds on a side) has no spread. Beside them, the anchors from the P-tuning v2
authors (BERT-large, RoBERTa-large) that a citable source gives: ``benchmarks/quality_anchors.json``, each
number with its source. The same command renders the learning curves behind the gaps (``quality_curves.py``).
The gaps come from ``quality_gaps.py``, the anchors from ``quality_anchors.py``; this file renders them.

    python benchmarks/quality_scaling.py                                   # tables to stdout, PNGs written
    python benchmarks/quality_scaling.py --update-doc docs/RESULTS.md      # and into the doc
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import quality_anchors as anchors_module
import quality_curves
import quality_gaps as gaps
import quality_protocol as protocol
import quality_results as results
import quality_tables as tables
from doc_tables import replace_between_markers

FIGURE = results.RESULTS_DIR / "scaling.png"
DOC_MARKERS = ("<!-- quality-scaling:start -->", "<!-- quality-scaling:end -->")
STANDING_MARKERS = ("<!-- quality-standing:start -->", "<!-- quality-standing:end -->")
OTHER_METHODS = ("prefix-mlp", "prompt-tuning", "linear-probe")  # the standing's columns after P-tuning v2's


def format_pending(point: dict[str, Any]) -> str:
    """Which side's sweep holds the gap back, e.g. 'pending (sweeps: PT-2 3/4, FT 2/4)'."""
    short = {"ptuning-v2": "PT-2", "finetune": "FT"}
    unfinished = [
        f"{short[method]} {done}/{total}" for method, (done, total) in point["sweeps"].items() if done < total
    ]
    return f"pending (sweeps: {', '.join(unfinished)})" if unfinished else "pending"


def format_gap(point: dict[str, Any]) -> str:
    """The summary cell: '-5.4 ± 1.2' complete, '-3.8 (1/1 seeds)' partial, 'pending (sweeps: ...)'."""
    if point["status"] == "pending":
        return format_pending(point)
    if point["status"] == "partial":
        return f"{point['gap']:+.1f} ({'/'.join(map(str, point['seeds']))} seeds)"
    return f"{point['gap']:+.1f} ± {point['spread']:.1f}"


def format_change(small: dict[str, Any], large: dict[str, Any]) -> str:
    """How the gap moved from the smaller to the larger backbone (positive: it closed); pending until both
    gaps exist, and marked when either is partial."""
    if small["gap"] is None or large["gap"] is None:
        return "pending"
    partial = " (partial)" if "partial" in (small["status"], large["status"]) else ""
    return f"{large['gap'] - small['gap']:+.1f}{partial}"


def format_side(point: dict[str, Any], method: str) -> str:
    """A detail cell: one side's mean (min–max over seeds), or how far its sweep is."""
    mean = point["ptuning_v2" if method == "ptuning-v2" else "finetune"]
    if mean is None:
        done, total = point["sweeps"][method]
        return f"pending (sweep {done}/{total})"
    low, high = point["ranges"][method]
    seeds = point["seeds"][gaps.COMPARED.index(method)]
    return f"{mean:.1f}" if seeds == 1 else f"{mean:.1f} ({low:.1f}–{high:.1f})"


def render_table(
    points: dict[tuple[str, str], dict[str, dict[str, Any]]],
    anchors: dict[tuple[str, str, str], dict[str, Any]],
    best: dict[str, dict[str, dict[str, Any] | None]] | None = None,
) -> str:
    """The summary (gap per task, backbone and budget, and its change with size), the detail behind it (each
    side's mean and min–max over seeds), the gap at P-tuning v2's best measured setting (``best``, from
    ``gaps.collect_best``) and the authors' anchors (P-tuning v2 only: no gap)."""
    small, large = protocol.BACKBONES  # the two scale points, smaller first
    names = {name: f"{spec.params_millions:g} M ({name})" for name, spec in protocol.BACKBONES.items()}
    header = ["task"]
    for scale in gaps.SCALES:
        header += [f"{names[small]}, {gaps.SCALES[scale]}", f"{names[large]}, {gaps.SCALES[scale]}", "change"]
    lines = [
        "**Gap P-tuning v2 − fine-tuning** (primary metric, points; mean over seeds of each side's chosen "
        f"setting). ± is the standard deviation of a one-seed difference, sqrt(sd_PT2² + sd_FT²), given only when "
        f"both sides have all {gaps.SEEDS_PER_SIDE} seeds; '(1/1 seeds)' marks a partial gap (seeds of each side so "
        "far, no spread). 'pending' names the unfinished sweeps (no side is compared before its setting is "
        f"chosen). 'change' = gap at {names[large]} − gap at {names[small]}: positive means the gap closed with "
        "size. The larger budget covers the four tasks MiniLM can learn ('–': not part of that budget).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for task in protocol.TASK_ORDER:
        row = [protocol.BUDGETS[task].label]
        for scale in gaps.SCALES:
            if task not in points[(small, scale)]:
                row += ["–", "–", "–"]
                continue
            one, two = points[(small, scale)][task], points[(large, scale)][task]
            row += [format_gap(one), format_gap(two), format_change(one, two)]
        lines.append("| " + " | ".join(row) + " |")
    if best is not None:
        lines += ["", *render_best(points, best), "", *render_three_seed_settings(best)]
    lines += ["", *render_detail(points), "", *anchors_module.render_anchors(anchors)]
    return "\n".join(lines) + "\n"


def render_best(
    points: dict[tuple[str, str], dict[str, dict[str, Any]]],
    best: dict[str, dict[str, dict[str, Any] | None]],
) -> list[str]:
    """The gap at P-tuning v2's best like-for-like setting beside the protocol's gap, per backbone (1x)."""
    lines = [
        "**The gap at P-tuning v2's best measured setting** (1x budget): of the chosen setting, every "
        "ablation change that ran all three seeds and the MLP reparameterization (prefix-tuning's MLP, one of "
        "the paper's P-tuning v2 options, at its own chosen setting), the one with the highest mean dev score; "
        "changes that train "
        "longer than fine-tuning (epochs x2, x4) are left out, so both sides keep the same budget. Fine-tuning "
        "stays at its chosen setting: the pick is one-sided, and on the tasks that report dev (all but the "
        "CoNLL sets) it is made on the reported split, so read it as an upper bound. Only changes that beat the chosen setting at seed 42 on dev get seeds "
        "43-44 (the `confirm-NAME` cells), so 'settings with 3 seeds' says how wide each pick was. 'moved' = best gap − the "
        "protocol's gap. The figure marks these gaps with diamonds.",
        "",
        "| task | backbone | the protocol's gap | best measured setting | settings with 3 seeds | P-tuning v2 "
        "| gap | moved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in gaps.tasks_of("full"):
        for name, spec in protocol.BACKBONES.items():
            point, found = points[(name, "full")][task], best[name][task]
            label = f"{protocol.BUDGETS[task].label} | {spec.params_millions:g} M ({name})"
            if found is None:
                lines.append(
                    f"| {label} | {format_gap(point)} | pending (both sides' seeds) | – | – | – | – |"
                )
                continue
            change = format_best_change(found)
            low, high = min(found["scores"]), max(found["scores"])
            lines.append(
                f"| {label} | {format_gap(point)} | {change} | {found['candidates']} | "
                f"{found['ptuning_v2']:.1f} ({low:.1f}–{high:.1f}) | "
                f"{found['gap']:+.1f} ± {found['spread']:.1f} | {found['gap'] - point['gap']:+.1f} |"
            )
    return lines


def render_three_seed_settings(best: dict[str, dict[str, dict[str, Any] | None]]) -> list[str]:
    """Every setting the best one was picked from, with its own gap: what each change moved, over three seeds."""
    lines = [
        "**Every P-tuning v2 setting with three seeds** (1x budget; the candidates of the table above, so none "
        "that trains longer than fine-tuning; best mean dev first): each setting's score over seeds 42-44, its "
        "mean dev score (what picks) and its gap to fine-tuning's chosen setting.",
        "",
        "| task | backbone | setting | P-tuning v2 | mean dev | gap |",
        "|---|---|---|---|---|---|",
    ]
    for task in gaps.tasks_of("full"):
        for name, spec in protocol.BACKBONES.items():
            found = best[name][task]
            if found is None:
                continue
            label = f"{protocol.BUDGETS[task].label} | {spec.params_millions:g} M ({name})"
            for entry in sorted(found["measured"], key=lambda entry: -entry["dev"]):
                lines.append(
                    f"| {label} | {format_best_change(entry)} | {tables.mean_std(entry['scores'])} | "
                    f"{entry['dev']:.1f} | {entry['gap']:+.1f} ± {entry['spread']:.1f} |"
                )
    return lines


def render_standing(
    best: dict[str, dict[str, dict[str, Any] | None]], results_root: Path = results.RESULTS_DIR
) -> str:
    """Where each backbone stands at the 1x budget: every compared method at its chosen setting (mean ± sd over
    the seeds that finished) and P-tuning v2 at its best measured setting (``best``, from ``gaps.collect_best``),
    one row per task and backbone that has a run; the tasks with none are named below the table."""
    header = [
        "task",
        "backbone",
        "fine-tuning",
        "P-tuning v2, chosen setting",
        "P-tuning v2, best measured setting",
    ]
    header += [protocol.METHOD_LABELS[method] for method in OTHER_METHODS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    not_run = []
    for task in gaps.tasks_of("full"):
        budget = protocol.BUDGETS[task]
        for name, spec in protocol.BACKBONES.items():
            bench = gaps.bench_of(name, "full", results_root)
            methods = ("finetune", "ptuning-v2", *OTHER_METHODS)
            scores = {method: chosen_scores(bench, task, method) for method in methods}
            if not any(scores.values()):
                not_run.append(f"{budget.label} at {spec.params_millions:g} M")
                continue
            cells = {method: tables.mean_std(values) for method, values in scores.items()}
            found = best[name][task]
            best_cell = (
                "pending (both sides' seeds)"
                if found is None
                else f"{tables.mean_std(found['scores'])} ({format_best_change(found, named=False)})"
            )
            row = [f"{budget.label} ({budget.report_split} {tables.metric_name(budget)})"]
            row += [f"{spec.params_millions:g} M ({name})", cells["finetune"], cells["ptuning-v2"], best_cell]
            row += [cells[method] for method in OTHER_METHODS]
            lines.append("| " + " | ".join(row) + " |")
    if not_run:
        lines += ["", f"No finished sweep yet: {', '.join(not_run)}."]
    return "\n".join(lines) + "\n"


def chosen_scores(bench: results.Bench, task: str, method: str) -> list[float]:
    """The primary metric of the method's chosen setting over its seeds so far (empty before its sweep is done)."""
    result = results.method_result(bench, task, method)
    return result["scores"][bench.budgets[task].metrics[0]] if result else []


def format_best_change(found: dict[str, Any], named: bool = True) -> str:
    """'the chosen setting', or the change (e.g. 'prefix on layers 6-11, warmup 0.1'), ``named`` by its ablation
    ('top-layers-warmup: ...'); the MLP reads 'MLP reparameterization (prefix-tuning), lr 0.0003, P 16'."""
    if found["change"] is None:
        return "the chosen setting"
    change = tables.format_setting(found["changed"])
    if found["method"] == gaps.REPARAMETERIZED:
        return f"MLP reparameterization (prefix-tuning), {change}"
    return f"{found['change']}: {change}" if named else change


def render_detail(points: dict[tuple[str, str], dict[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "Each side behind the gaps: mean (min–max over seeds) of the primary metric at the chosen setting.",
        "",
        "| task | backbone | budget | P-tuning v2 | fine-tuning | seeds (PT-2/FT) |",
        "|---|---|---|---|---|---|",
    ]
    for task in protocol.TASK_ORDER:
        for scale in gaps.SCALES:
            for name, spec in protocol.BACKBONES.items():
                point = points[(name, scale)].get(task)
                if point is None:
                    continue
                lines.append(
                    f"| {protocol.BUDGETS[task].label} | {spec.params_millions:g} M ({name}) | {gaps.SCALES[scale]} | "
                    f"{format_side(point, 'ptuning-v2')} | {format_side(point, 'finetune')} | "
                    f"{'/'.join(map(str, point['seeds']))} |"
                )
    return lines


def render_figure(
    points: dict[tuple[str, str], dict[str, dict[str, Any]]],
    anchors: dict[tuple[str, str, str], dict[str, Any]],
    path: Path,
    best: dict[str, dict[str, dict[str, Any] | None]] | None = None,
) -> None:
    """Gap vs backbone size per budget (filled: all seeds, bar = sd of a one-seed difference; hollow: partial;
    pending tasks listed at their size; diamonds, 1x only: the gap at P-tuning v2's best measured setting),
    and P-tuning v2's own 1x score beside the authors' anchors."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullLocator

    sizes = {name: spec.params_millions for name, spec in protocol.BACKBONES.items()}
    colours = {task: f"C{index}" for index, task in enumerate(protocol.TASK_ORDER)}  # the same in every panel
    figure, axes = plt.subplots(1, len(gaps.SCALES) + 1, figsize=(17, 5.4))
    for axis, scale in zip(axes, gaps.SCALES, strict=False):
        for task in gaps.tasks_of(scale):
            measured = [
                (sizes[name], points[(name, scale)][task])
                for name in protocol.BACKBONES
                if points[(name, scale)][task]["gap"] is not None
            ]
            if not measured:
                continue
            xs, ys = [x for x, _ in measured], [p["gap"] for _, p in measured]
            axis.plot(xs, ys, color=colours[task], linewidth=1)
            for index, (x, point) in enumerate(measured):
                complete = point["status"] == "complete"
                axis.errorbar(
                    [x], [point["gap"]], yerr=[point["spread"] or 0.0], marker="o", capsize=3,
                    color=colours[task], markerfacecolor=colours[task] if complete else "white",
                    label=protocol.BUDGETS[task].label if index == 0 else None,
                )  # fmt: skip
            found = [
                (sizes[name], best[name][task]["gap"])
                for name in protocol.BACKBONES
                if best and scale == "full" and best[name][task] is not None
            ]
            if found:
                axis.plot(*zip(*found, strict=True), marker="D", markersize=7, linestyle=":", linewidth=1.2,
                          color=colours[task], markerfacecolor="white")  # fmt: skip
        for name, size in sizes.items():
            pending = [
                protocol.BUDGETS[task].label
                for task in gaps.tasks_of(scale)
                if points[(name, scale)][task]["status"] == "pending"
            ]
            if pending:
                axis.axvline(size, color="grey", linestyle=":", linewidth=1)
                axis.text(
                    size, 0.02, f" pending at {size:g} M:\n " + "\n ".join(pending), color="grey", fontsize=7,
                    transform=axis.get_xaxis_transform(), verticalalignment="bottom",
                )  # fmt: skip
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.axhline(-1.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_xscale("log")
        axis.set_xlim(15, 200)
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticks(list(sizes.values()))
        axis.set_xticklabels([f"{size:g} M\n{name}" for name, size in sizes.items()])
        axis.set_title(f"PT-2 − FT, {gaps.SCALES[scale]}")
        axis.set_xlabel("backbone parameters")
        axis.set_ylabel("P-tuning v2 − fine-tuning (points)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="best")
    anchors_module.render_anchor_panel(axes[-1], points, anchors, colours)
    note = (
        "dashed: the target (within 1 point); filled: all seeds, bar = sd of a one-seed difference; hollow: "
        "partial (fewer seeds, no bar); diamonds (1x): the gap at P-tuning v2's best measured setting; the authors' anchors are P-tuning v2 scores only (no fine-tuning anchor "
        "found, so no gap)"
    )
    figure.suptitle(textwrap.fill(note, 180), fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-root", type=Path, default=results.RESULTS_DIR)
    parser.add_argument("--figure", type=Path, default=FIGURE, help=f"PNG to write (default {FIGURE.name})")
    parser.add_argument(
        "--curves-figure",
        type=Path,
        default=quality_curves.FIGURE,
        help=f"learning-curves PNG to write (default {quality_curves.FIGURE.name})",
    )
    parser.add_argument(
        "--update-doc",
        type=Path,
        help="write the standing, the gap table and the learning curves between their markers",
    )
    args = parser.parse_args(argv)
    anchors = anchors_module.load_anchors()
    points = gaps.collect(args.results_root)
    best = gaps.collect_best(points, args.results_root)
    table = render_table(points, anchors, best)
    render_figure(points, anchors, args.figure, best)
    curves = quality_curves.collect(args.results_root)
    curves_table = quality_curves.render_table(curves)
    quality_curves.render_figure(curves, args.curves_figure)
    outside = quality_curves.render_outside_grid(quality_curves.outside_grid_runs(args.results_root))
    standing = render_standing(best, args.results_root)
    if args.update_doc:
        replace_between_markers(args.update_doc, *STANDING_MARKERS, standing)
        replace_between_markers(args.update_doc, *DOC_MARKERS, table)
        replace_between_markers(args.update_doc, *quality_curves.DOC_MARKERS, curves_table)
        replace_between_markers(args.update_doc, *quality_curves.OUTSIDE_GRID_MARKERS, outside)
    print(standing)
    print(table)
    print(curves_table)
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(results.REPO / "src"))
    raise SystemExit(main())
