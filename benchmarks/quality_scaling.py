"""The scaling question: does P-tuning v2's gap to fine-tuning shrink as the backbone grows?

Reads the quality results of every backbone (``benchmarks/quality.py --backbone ...``), at both budgets, and
renders the gap P-tuning v2 − fine-tuning per task (mean over seeds of each side's chosen setting) against
the backbone's size: a PNG and a Markdown table. A backbone or budget without both sides' results is shown as
"not yet measured". Beside them, the anchors from the P-tuning v2 authors (BERT-large, RoBERTa-large) that a
citable source gives: ``benchmarks/quality_anchors.json``, each number with its source string.

    python benchmarks/quality_scaling.py                                   # table to stdout, PNG written
    python benchmarks/quality_scaling.py --update-doc docs/RESULTS.md      # and into the doc
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import quality
from doc_tables import replace_between_markers

FIGURE = quality.RESULTS_DIR / "scaling.png"
DOC_MARKERS = ("<!-- quality-scaling:start -->", "<!-- quality-scaling:end -->")
SCALES = {"full": "1x budget", "large": "larger budget"}
ANCHORS_FILE = Path(__file__).with_name("quality_anchors.json")
ANCHOR_MODELS = ("BERT-large", "RoBERTa-large")
ANCHOR_METHODS = ("finetune", "ptuning-v2")
ANCHOR_FIELDS = ("model", "task", "method", "value", "metric", "source")


def load_anchors(path: Path = ANCHORS_FILE) -> dict[tuple[str, str, str], dict[str, Any]]:
    """{(model, task, method): anchor} from ``path``. Every anchor must carry its source: a number without one
    is refused, so nothing written from memory can slip into the table."""
    entries = json.loads(path.read_text())["anchors"]
    anchors = {}
    for index, entry in enumerate(entries):
        where = f"{path}: anchors[{index}]"
        missing = [name for name in ANCHOR_FIELDS if not entry.get(name)]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (every anchor needs {ANCHOR_FIELDS})")
        if entry["method"] not in ANCHOR_METHODS:
            raise ValueError(f"{where}: method {entry['method']!r}, expected one of {ANCHOR_METHODS}")
        if not isinstance(entry["value"], int | float):
            raise ValueError(f"{where}: value {entry['value']!r}, expected a number (percent)")
        key = (entry["model"], entry["task"], entry["method"])
        if key in anchors:
            raise ValueError(f"{where}: a second anchor for {key}")
        anchors[key] = entry
    return anchors


def format_anchor(anchors: dict[tuple[str, str, str], dict[str, Any]], model: str, task: str) -> str:
    """The gap where both sides have a source; otherwise the side that has one, named as such."""
    pt2, ft = (anchors.get((model, task, method)) for method in ("ptuning-v2", "finetune"))
    if pt2 and ft:
        return f"{pt2['value'] - ft['value']:+.1f} ({pt2['value']:.1f} vs {ft['value']:.1f})"
    if pt2:
        return f"PT-2 {pt2['value']:.1f} (no FT anchor)"
    if ft:
        return f"FT {ft['value']:.1f} (no PT-2 anchor)"
    return "–"


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


def render_table(
    points: dict[tuple[str, str], dict[str, Any]], anchors: dict[tuple[str, str, str], dict[str, Any]]
) -> str:
    columns = [(name, scale) for name in quality.BACKBONES for scale in SCALES]
    header = ["task"] + [
        f"{quality.BACKBONES[name].params_millions:g} M ({name}), {SCALES[scale]}" for name, scale in columns
    ]
    header += [f"authors: {model}" for model in ANCHOR_MODELS]
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
        row += [format_anchor(anchors, model, task) for model in ANCHOR_MODELS]
        lines.append("| " + " | ".join(row) + " |")
    sources = sorted({anchor["source"] for anchor in anchors.values()})
    methods = {method for _, _, method in anchors}
    lines += [
        "",
        f"Authors' columns ({ANCHORS_FILE.name}: every number beside its source): the P-tuning v2 authors' "
        "reimplemented P-tuning v2 scores on BERT-large / RoBERTa-large under their own protocol (10 to 120 "
        "epochs per task), far from our budgets; compare the gap and its trend, not absolute scores. '–': no anchor for that task and model.",
    ]
    if "finetune" not in methods:
        lines[-1] += (
            " No fine-tuning (FT) anchor was found in a source readable from this machine (the paper's tables, "
            "arXiv 2110.07602, could not be read here, and none is written from memory), so the authors' columns "
            "give P-tuning v2's (PT-2) score, not a gap."
        )
    if sources:
        lines[-1] += " Sources: " + "; ".join(sources) + "."
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
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.axhline(-1.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_xscale("log")
        axis.set_xlim(15, 200)
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticks(list(sizes.values()))
        axis.set_xticklabels([f"{size:g} M\n{name}" for name, size in sizes.items()])
        axis.set_title(f"{SCALES[scale]}")
        axis.set_xlabel("backbone parameters")
        axis.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("P-tuning v2 − fine-tuning (points)")
    note = (
        "dashed: the target (within 1 point); bars: sd of a one-seed difference; the authors' anchors are not "
        "drawn (no fine-tuning anchor found, so no gap)"
    )
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
    table = render_table(points, load_anchors())
    render_figure(points, args.figure)
    if args.update_doc:
        replace_between_markers(args.update_doc, *DOC_MARKERS, table)
    print(table)
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(quality.REPO / "src"))
    raise SystemExit(main())
