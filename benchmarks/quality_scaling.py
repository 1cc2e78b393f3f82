"""The scaling question: does P-tuning v2's gap to fine-tuning shrink as the backbone grows?

Reads the quality results of every backbone (``benchmarks/quality.py --backbone ...``), at both budgets, and
renders the gap P-tuning v2 − fine-tuning per task (mean over seeds of each side's chosen setting) against
the backbone's size: a PNG and a Markdown table. A backbone or budget without both sides' results is shown as
"not yet measured". The paper's anchors (BERT-large, RoBERTa-large) have a slot, ``PAPER_ANCHORS``.

    python benchmarks/quality_scaling.py                                   # table to stdout, PNG written
    python benchmarks/quality_scaling.py --update-doc docs/RESULTS.md      # and into the doc
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

import quality
from doc_tables import replace_between_markers

FIGURE = quality.RESULTS_DIR / "scaling.png"
DOC_MARKERS = ("<!-- quality-scaling:start -->", "<!-- quality-scaling:end -->")
SCALES = {"full": "1x budget", "large": "larger budget"}
# The paper's P-tuning v2 and fine-tuning scores (arXiv 2110.07602) for the tasks both tables share, by
# backbone: {"BERT-large": {"params_millions": 335, "scores": {"superglue-rte": (finetune, ptuning_v2)}}}.
# EMPTY ON PURPOSE: the paper's tables could not be read from this machine, and a number here must be
# checked against the paper's text, never written from memory. The table and figure say the slot is empty.
PAPER_ANCHORS: dict[str, dict[str, Any]] = {}
ANCHOR_MODELS = ("BERT-large", "RoBERTa-large")


def gap(bench: quality.Bench, task: str) -> dict[str, Any] | None:
    """P-tuning v2 − fine-tuning (primary metric, percent) at each side's chosen setting; None until both
    sides have at least one seed. ``spread`` is the standard deviation of a one-seed difference,
    sqrt(sd_pt2^2 + sd_ft^2), from the seed standard deviations (None with fewer than two seeds a side)."""
    metric = bench.budgets[task].metrics[0]
    sides = [quality.method_result(bench, task, method) for method in ("ptuning-v2", "finetune")]
    if any(side is None or not side["scores"][metric] for side in sides):
        return None
    ours, theirs = (side["scores"][metric] for side in sides)
    spread = (
        math.sqrt(statistics.variance(ours) + statistics.variance(theirs))
        if len(ours) > 1 and len(theirs) > 1
        else None
    )
    return {
        "gap": statistics.mean(ours) - statistics.mean(theirs),
        "spread": spread,
        "seeds": (len(ours), len(theirs)),
        "ptuning_v2": statistics.mean(ours),
        "finetune": statistics.mean(theirs),
    }


def collect(results_root: Path = quality.RESULTS_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """{(backbone, scale): {task: gap or None}} for every backbone and budget scale."""
    points = {}
    for name, spec in quality.BACKBONES.items():
        for scale in SCALES:
            bench = quality.Bench(
                results_dir=results_root / spec.results_subdir, model=spec.model, scale=scale, backbone=name
            )
            points[(name, scale)] = {task: gap(bench, task) for task in tasks_of(scale)}
    return points


def tasks_of(scale: str) -> list[str]:
    budgets = quality.LARGE_BUDGETS if scale == "large" else quality.BUDGETS
    return [t for t in quality.TASK_ORDER if t in budgets]


def format_gap(point: dict[str, Any] | None) -> str:
    if point is None:
        return "not yet measured"
    spread = "" if point["spread"] is None else f" ± {point['spread']:.1f}"
    seeds = "/".join(map(str, point["seeds"]))
    return (
        f"{point['gap']:+.1f}{spread} ({point['ptuning_v2']:.1f} vs {point['finetune']:.1f}; {seeds} seeds)"
    )


def render_table(points: dict[tuple[str, str], dict[str, Any]]) -> str:
    columns = [(name, scale) for name in quality.BACKBONES for scale in SCALES]
    header = ["task"] + [
        f"{quality.BACKBONES[name].params_millions:g} M ({name}), {SCALES[scale]}" for name, scale in columns
    ]
    header += [f"paper: {model}" for model in ANCHOR_MODELS]
    lines = [
        "P-tuning v2 − fine-tuning, primary metric in points (P-tuning v2 vs fine-tuning means; seeds of each "
        "side). ± is the standard deviation of a one-seed difference, sqrt(sd_PT2² + sd_FT²). "
        "The larger budget covers the four tasks MiniLM can learn.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for task in quality.TASK_ORDER:
        row = [quality.BUDGETS[task].label]
        for name, scale in columns:
            row.append(format_gap(points[(name, scale)][task]) if task in points[(name, scale)] else "–")
        for model in ANCHOR_MODELS:
            scores = PAPER_ANCHORS.get(model, {}).get("scores", {}).get(task)
            row.append("slot empty" if scores is None else f"{scores[1] - scores[0]:+.1f}")
        lines.append("| " + " | ".join(row) + " |")
    if not PAPER_ANCHORS:
        lines += [
            "",
            "Paper anchors (BERT-large 335 M, RoBERTa-large 355 M, arXiv 2110.07602): **slot empty** — the "
            "paper's tables could not be read from this machine and are not filled from memory "
            "(`PAPER_ANCHORS` in benchmarks/quality_scaling.py).",
        ]
    return "\n".join(lines) + "\n"


def render_figure(points: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullLocator

    sizes = {name: spec.params_millions for name, spec in quality.BACKBONES.items()}
    colours = {task: f"C{index}" for index, task in enumerate(quality.TASK_ORDER)}  # the same in both panels
    figure, axes = plt.subplots(1, len(SCALES), figsize=(12, 4.8), sharey=True)
    for axis, scale in zip(axes, SCALES, strict=True):
        for task in tasks_of(scale):
            measured = [
                (sizes[name], points[(name, scale)][task])
                for name in quality.BACKBONES
                if points[(name, scale)].get(task) is not None
            ]
            if not measured:
                continue
            xs = [x for x, _ in measured]
            ys = [p["gap"] for _, p in measured]
            errors = [p["spread"] or 0.0 for _, p in measured]
            axis.errorbar(
                xs,
                ys,
                yerr=errors,
                marker="o",
                capsize=3,
                color=colours[task],
                label=quality.BUDGETS[task].label,
            )
        for name, size in sizes.items():
            if all(point is None for point in points[(name, scale)].values()):
                axis.axvline(size, color="grey", linestyle=":", linewidth=1)
                axis.text(size, -20, f" {size:g} M ({name}):\n not yet measured", color="grey", fontsize=8)
        for model in ANCHOR_MODELS:
            anchor = PAPER_ANCHORS.get(model)
            if anchor:
                for task, (finetune, ptuning_v2) in anchor["scores"].items():
                    if task in tasks_of(scale):
                        axis.plot(
                            anchor["params_millions"], ptuning_v2 - finetune, marker="*", color=colours[task]
                        )
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.axhline(-1.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_xscale("log")
        axis.set_xlim(15, 500)
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticks([22.6, 109.5, 335])
        axis.set_xticklabels(["22.6 M\nMiniLM-L6", "109.5 M\nmpnet-base", "335 M\n(paper: BERT-large)"])
        axis.set_title(f"{SCALES[scale]}")
        axis.set_xlabel("backbone parameters")
        axis.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("P-tuning v2 − fine-tuning (points)")
    note = "dashed: the target (within 1 point); bars: sd of a one-seed difference"
    if not PAPER_ANCHORS:
        note += "; paper anchors: slot empty (not verified here)"
    figure.suptitle(note, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-root", type=Path, default=quality.RESULTS_DIR)
    parser.add_argument("--figure", type=Path, default=FIGURE, help=f"PNG to write (default {FIGURE.name})")
    parser.add_argument("--update-doc", type=Path, help="write the table between the scaling markers")
    args = parser.parse_args(argv)
    points = collect(args.results_root)
    table = render_table(points)
    render_figure(points, args.figure)
    if args.update_doc:
        replace_between_markers(args.update_doc, *DOC_MARKERS, table)
    print(table)
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(quality.REPO / "src"))
    raise SystemExit(main())
