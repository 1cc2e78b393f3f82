"""Learning curves behind the scaling gaps: is a method still improving when its budget ends, or at a ceiling?

For every task, budget and backbone, the dev curve (primary metric after each epoch) of fine-tuning's and
P-tuning v2's chosen setting, over the seeds that finished, read from the ``curve`` field of each results line
(``benchmarks/quality.py``). While a sweep is unfinished its best run so far stands in, marked provisional
(the chosen setting may still change). Rendered as a compact Markdown table and a PNG by
``benchmarks/quality_scaling.py`` (one command for both), or on its own:

    python benchmarks/quality_curves.py --update-doc docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import quality_protocol as protocol
import quality_results as results
import quality_tables as tables
from doc_tables import replace_between_markers

FIGURE = results.RESULTS_DIR / "curves.png"
DOC_MARKERS = ("<!-- quality-curves:start -->", "<!-- quality-curves:end -->")
OUTSIDE_GRID_MARKERS = ("<!-- quality-outside-grid:start -->", "<!-- quality-outside-grid:end -->")
OUTSIDE_GRID_DIR = "reruns"  # under each backbone's results folder: ``quality.py --extra ... --record`` files
# The order a run's setting is written in (records written by different tools list keys differently).
SETTING_ORDER = ("learning_rate", "prefix_length", "prefix_layers", "pooling", "prefix_dropout", "warmup_ratio",
                 "epochs_factor", "backbone_dtype")  # fmt: skip
SCALES = {"full": "1x budget", "large": "larger budget"}
METHODS = ("finetune", "ptuning-v2")
# A change of less than this many points between evaluations is read as no change: SST-2's dev set has 872
# examples (one is 0.11 points) and the seed spread of a chosen setting is about one point.
STEP_POINTS = 0.5
LONGER_ABLATIONS = ("double-epochs", "quadruple-epochs")  # quality.py's ablations that lengthen the schedule
MAX_SHOWN_EVALS = 6  # the table shows at most this many evaluations of a curve (first and last included)


def seed_runs(bench: results.Bench, task: str, method: str) -> dict[str, Any] | None:
    """The runs of the method's chosen setting (all seeds that finished), or, while its sweep is unfinished,
    the best seed-42 sweep run so far (``provisional``); None when no sweep run has finished."""
    sweep = results.sweep_runs(bench, task, method)
    done = [run for run in sweep if run is not None]
    if not done:
        return None
    setting = dict(results.best_run(done, bench.budgets[task])["setting"])
    runs = results.setting_runs(bench, task, method, setting)
    return {
        "setting": setting,
        "runs": [r for r in runs if r is not None],
        "provisional": len(done) < len(sweep),
        "sweep": (len(done), len(sweep)),
    }


def mean_curve(
    runs: list[dict[str, Any]], budget: protocol.Budget
) -> list[tuple[float, float, float, float]]:
    """[(epoch, mean, min, max)] of the dev score in percent over the runs, at each epoch every run reached."""
    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        for point in run.get("curve") or []:
            if point.get("dev") is not None:
                by_epoch.setdefault(float(point["epoch"]), []).append(
                    results.as_percent(point["dev"], budget)
                )
    return [
        (epoch, statistics.mean(values), min(values), max(values))
        for epoch, values in sorted(by_epoch.items())
        if len(values) == len(runs)
    ]


def verdict(curve: list[tuple[float, float, float, float]]) -> str:
    """How the mean curve ends. 'peaked at epoch E': the best came earlier and the last evaluation is at least
    STEP_POINTS below it. 'still rising': otherwise, if the last evaluation gained at least STEP_POINTS over the
    last third of training (against the evaluation at two thirds of the way; for three epochs, the one
    before): more training may help. 'flat': neither, a ceiling for this setting and budget."""
    if len(curve) < 2:
        return "one evaluation: cannot tell"
    scores = [mean for _, mean, _, _ in curve]
    best = max(range(len(scores)), key=lambda i: scores[i])
    if scores[best] - scores[-1] >= STEP_POINTS:
        return f"peaked at epoch {curve[best][0]:g} ({scores[-1] - scores[best]:+.1f} at the end)"
    reference = (len(scores) - 1) * 2 // 3
    gain = scores[-1] - scores[reference]
    if gain >= STEP_POINTS:
        return f"still rising ({gain:+.1f} since epoch {curve[reference][0]:g})"
    return f"flat ({gain:+.1f} since epoch {curve[reference][0]:g})"


def shown_points(curve: list[tuple[float, float, float, float]]) -> str:
    """'1: 83.7 · 2: 87.2 · 3: 86.7' (epoch: mean), at most MAX_SHOWN_EVALS evaluations, evenly spaced."""
    if len(curve) > MAX_SHOWN_EVALS:
        step = (len(curve) - 1) / (MAX_SHOWN_EVALS - 1)
        curve = [curve[round(i * step)] for i in range(MAX_SHOWN_EVALS)]
    return " · ".join(f"{epoch:g}: {mean:.1f}" for epoch, mean, _, _ in curve)


def collect(results_root: Path = results.RESULTS_DIR) -> list[dict[str, Any]]:
    """One entry per (scale, task, backbone, method), pending ones included (``curve`` empty)."""
    entries = []
    for scale in SCALES:
        budgets = protocol.LARGE_BUDGETS if scale == "large" else protocol.BUDGETS
        for task in (t for t in protocol.TASK_ORDER if t in budgets):
            for name, spec in protocol.BACKBONES.items():
                bench = results.Bench(
                    results_dir=results_root / spec.results_subdir,
                    model=spec.model,
                    scale=scale,
                    backbone=name,
                )
                budget = bench.budgets[task]
                for method in METHODS:
                    found = seed_runs(bench, task, method)
                    curve = mean_curve(found["runs"], budget) if found else []
                    entries.append(
                        {"scale": scale, "task": task, "backbone": name, "method": method, "found": found,
                         "curve": curve, "sweep": len(bench.sweeps[method]),
                         "longer": longer_runs(bench, task, method, found)}
                    )  # fmt: skip
    return entries


def longer_runs(
    bench: results.Bench, task: str, method: str, found: dict[str, Any] | None
) -> dict[int, dict[str, Any] | None] | None:
    """{epochs factor: run or None (pending)} of the longer-schedule ablations (epochs x2 / x4 of the chosen
    setting, seed 42): the direct test of under-training, since the learning rate decays linearly to zero over
    every budget and so flattens the end of any curve. None where those ablations are not cells (other
    methods, tasks and budgets); a run not there yet (or waiting for the sweep) is None."""
    names = [n for n in LONGER_ABLATIONS if n in bench.ablations(task)]
    if bench.scale == "large" or not names or method not in protocol.ablation_methods(names[0]):
        return None
    records = bench.records(task)
    budget_id = bench.budget_id(task)
    runs = {}
    for name in names:
        for change in protocol.ablation_changes(name, bench.spec.num_layers):
            if found is None or found["provisional"]:  # its cell waits for the sweep
                runs[change["epochs_factor"]] = None
                continue
            setting = {**found["setting"], **change}
            key = results.run_key(task, method, setting, protocol.SWEEP_SEED, budget_id)
            runs[change["epochs_factor"]] = results.find_run(records, key)
    return runs


def format_longer(entry: dict[str, Any]) -> str:
    """'x2: 82.2 (+2.0) · x4: 82.6 (+2.4)': each longer run's best dev score and its difference from the
    seed-42 run of the chosen setting at the budget's own length."""
    if entry["longer"] is None:
        return "–"
    budget = (protocol.LARGE_BUDGETS if entry["scale"] == "large" else protocol.BUDGETS)[entry["task"]]
    parts = []
    for factor, run in sorted(entry["longer"].items()):
        if run is None:
            parts.append(f"x{factor}: pending")
            continue
        base = next(r for r in entry["found"]["runs"] if r["seed"] == protocol.SWEEP_SEED)
        score = results.dev_score(run, budget)
        parts.append(f"x{factor}: {score:.1f} ({score - results.dev_score(base, budget):+.1f})")
    return " · ".join(parts)


def format_setting(found: dict[str, Any]) -> str:
    text = tables.format_setting(found["setting"])
    if found["provisional"]:
        done, total = found["sweep"]
        text += f" (provisional: best of sweep {done}/{total})"
    return text


def render_table(entries: list[dict[str, Any]]) -> str:
    lines = [
        "**Learning curves** (dev, primary metric in percent after each epoch; mean over the seeds that finished "
        "of each method's chosen setting; long curves shown at up to "
        f"{MAX_SHOWN_EVALS} evenly spaced epochs). 'end of curve': peaked = the best came earlier and the last "
        f"epoch is at least {STEP_POINTS} points below it; still rising = not peaked, and the last epoch gained at "
        f"least {STEP_POINTS} points over the last third of training (against the epoch two thirds of the way "
        "in): under-trained at this budget; flat = neither. The learning rate decays linearly to zero over every "
        "budget, so a flat end is partly the schedule, not proof of a ceiling: 'longer schedule' gives the "
        "ablations that train the same setting 2x / 4x as long (seed 42; best dev, and its difference from the "
        "seed-42 run at the budget's length), the direct test. A provisional setting is the best of an unfinished sweep. The test-scored tasks (CoNLL) report test at "
        "the best dev epoch; their curves are dev.",
        "",
        "| task | budget | backbone | method | setting | seeds | dev by epoch | end of curve | longer schedule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        budget = (protocol.LARGE_BUDGETS if entry["scale"] == "large" else protocol.BUDGETS)[entry["task"]]
        spec = protocol.BACKBONES[entry["backbone"]]
        head = (
            f"| {budget.label} | {SCALES[entry['scale']]} | {spec.params_millions:g} M ({entry['backbone']}) | "
            f"{protocol.METHOD_LABELS[entry['method']]} |"
        )
        found = entry["found"]
        if found is None:
            lines.append(f"{head} pending (sweep 0/{entry['sweep']}) | 0 | – | – | {format_longer(entry)} |")
            continue
        if not entry["curve"]:
            lines.append(
                f"{head} {format_setting(found)} | {len(found['runs'])} | no curve recorded | – | "
                f"{format_longer(entry)} |"
            )
            continue
        lines.append(
            f"{head} {format_setting(found)} | {len(found['runs'])} | {shown_points(entry['curve'])} | "
            f"{verdict(entry['curve'])} | {format_longer(entry)} |"
        )
    return "\n".join(lines) + "\n"


def outside_grid_runs(results_root: Path = results.RESULTS_DIR) -> list[dict[str, Any]]:
    """Every run recorded outside the grid (``<backbone results>/reruns/*.jsonl``, written by ``quality.py
    --extra``): changed schedules, dtypes and re-runs that the tables leave out, each with its curve."""
    runs = []
    for name, spec in protocol.BACKBONES.items():
        folder = results_root / spec.results_subdir / OUTSIDE_GRID_DIR
        for path in sorted(folder.glob("*.jsonl")):
            for record in results.read_jsonl(path):
                runs.append({**record, "backbone": name, "file": path.name})
    return sorted(runs, key=lambda r: (r["backbone"], r["task"], r["method"], setting_text(r), r["seed"]))


def setting_text(run: dict[str, Any]) -> str:
    """The run's setting in ``SETTING_ORDER`` (other keys after, by name)."""
    rank = {key: index for index, key in enumerate(SETTING_ORDER)}
    ordered = sorted(run["setting"].items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))
    return tables.format_setting(dict(ordered))


def render_outside_grid(runs: list[dict[str, Any]]) -> str:
    """One row per run outside the grid: its setting, the dev curve, where it peaked, how it ended and the
    training loss (mean over each epoch) at its first and last evaluation."""
    lines = [
        "**Runs outside the grid** (`python benchmarks/quality.py --backbone B --extra TASK:METHOD --setting JSON "
        "--seed N --record FILE`, files under `<results>/reruns/`; not in the tables: the setting is off the "
        f"protocol). Dev in percent after each epoch (up to {MAX_SHOWN_EVALS} evenly spaced shown), the best "
        "epoch, the last, how the curve ends (as above), and the training loss (mean since the previous "
        "evaluation) at the first and last epoch.",
        "",
        "| task | backbone | method | setting | seed | dev by epoch | best (epoch) | last | end of curve | "
        "train loss first → last | file |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        budget = protocol.BUDGETS[run["task"]]
        curve = mean_curve([run], budget)
        losses = [p["train_loss"] for p in run.get("curve") or [] if p.get("train_loss") is not None]
        loss = f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "–"
        best = max(curve, key=lambda point: point[1]) if curve else None
        lines.append(
            f"| {budget.label} | {protocol.BACKBONES[run['backbone']].params_millions:g} M ({run['backbone']}) | "
            f"{protocol.METHOD_LABELS[run['method']]} | {setting_text(run)} | {run['seed']} | "
            f"{shown_points(curve) if curve else '–'} | "
            f"{f'{best[1]:.1f} ({best[0]:g})' if best else '–'} | {f'{curve[-1][1]:.1f}' if curve else '–'} | "
            f"{verdict(curve) if curve else '–'} | {loss} | `{run['file']}` |"
        )
    if not runs:
        lines.append("| none yet | | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def render_figure(entries: list[dict[str, Any]], path: Path) -> None:
    """One panel per (budget, task): each backbone's fine-tuning and P-tuning v2 mean dev curve, the band
    min..max over seeds; dashed: a provisional setting; a panel says which curves are pending."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = list(dict.fromkeys((e["scale"], e["task"]) for e in entries))
    columns = 4
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    colours = {("minilm", "finetune"): "C0", ("minilm", "ptuning-v2"): "C1",
               ("mpnet", "finetune"): "C2", ("mpnet", "ptuning-v2"): "C3"}  # fmt: skip
    for axis, (scale, task) in zip(axes.flat, panels, strict=False):
        pending = []
        budget = (protocol.LARGE_BUDGETS if scale == "large" else protocol.BUDGETS)[task]
        for entry in (e for e in entries if (e["scale"], e["task"]) == (scale, task)):
            label = f"{entry['backbone']} {'FT' if entry['method'] == 'finetune' else 'PT-2'}"
            if not entry["curve"]:
                pending.append(label)
                continue
            epochs, means, lows, highs = zip(*entry["curve"], strict=True)
            colour = colours.get((entry["backbone"], entry["method"]), "grey")
            style = "--" if entry["found"]["provisional"] else "-"
            seeds = len(entry["found"]["runs"])
            axis.plot(
                epochs,
                means,
                style,
                marker=".",
                color=colour,
                label=f"{label} ({seeds} seed{'s' * (seeds > 1)})",
            )
            if seeds > 1:
                axis.fill_between(epochs, lows, highs, color=colour, alpha=0.15)
            for factor, run in sorted((entry["longer"] or {}).items()):
                longer = mean_curve([run], budget) if run else []
                if longer:
                    axis.plot(
                        [epoch for epoch, *_ in longer],
                        [mean for _, mean, *_ in longer],
                        ":",
                        linewidth=1,
                        color=colour,
                        alpha=0.5 + 0.25 * (factor > 2),
                        label=f"{label} x{factor} (seed 42)",
                    )
        axis.set_title(f"{budget.label}, {SCALES[scale]}", fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
        axis.set_ylabel(f"dev {budget.metrics[0]} (%)", fontsize=8)
        if pending:
            axis.set_title(f"{budget.label}, {SCALES[scale]}\npending: {', '.join(pending)}", fontsize=8)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=6, loc="best")
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle(
        "dev curves of the chosen setting: line = mean over seeds, band = min..max; dashed = provisional (best of "
        "an unfinished sweep); dotted = the same setting trained 2x / 4x as long (ablations, seed 42)",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-root", type=Path, default=results.RESULTS_DIR)
    parser.add_argument("--figure", type=Path, default=FIGURE, help=f"PNG to write (default {FIGURE.name})")
    parser.add_argument("--update-doc", type=Path, help="write the table between the curves markers")
    args = parser.parse_args(argv)
    entries = collect(args.results_root)
    table = render_table(entries)
    render_figure(entries, args.figure)
    outside = render_outside_grid(outside_grid_runs(args.results_root))
    if args.update_doc:
        replace_between_markers(args.update_doc, *DOC_MARKERS, table)
        replace_between_markers(args.update_doc, *OUTSIDE_GRID_MARKERS, outside)
    print(table)
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(results.REPO / "src"))
    raise SystemExit(main())
