"""Readable run reports: summary.md and a PNG of the curves for one run, mean ± std over seeds for several.

Everything here reads the engine's summary dict (summary.json) and writes files; nothing trains. Reports are
plain Markdown so that they read well in a terminal, a pull request or a notebook alike. Every file is written
whole (staged beside it, then swapped in): a full disk leaves the previous report, never a cut one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptuning.core.folders import file_whole, write_text_whole
from ptuning.training.predict import jsonable

SUMMARY_MD = "summary.md"
CURVES_PNG = "curves.png"
TENSORBOARD_DIR = "tensorboard"  # the trainer's loss log, read back for the curves
SEEDS_JSON = "seeds.json"
SEEDS_MD = "seeds.md"


def write_run_report(output_dir: str | Path, summary: dict[str, Any]) -> list[Path]:
    """Write ``summary.md`` and (when there is a history) ``curves.png`` next to summary.json."""
    output_dir = Path(output_dir)
    written = []
    history, metric = summary.get("history") or [], summary.get("primary_metric", "")
    if plot_curves(history, metric, output_dir / CURVES_PNG, logged_losses(output_dir / TENSORBOARD_DIR)):
        written.append(output_dir / CURVES_PNG)
    write_text_whole(output_dir / SUMMARY_MD, summary_markdown(summary, has_plot=bool(written)))
    written.insert(0, output_dir / SUMMARY_MD)
    return written


def summary_markdown(summary: dict[str, Any], has_plot: bool = False) -> str:
    metric = summary.get("primary_metric", "")
    lines = [f"# {summary.get('task')} · {summary.get('method')} · {summary.get('model')}", ""]
    facts = [
        ("task", summary.get("task")),
        ("method", summary.get("method")),
        ("model", summary.get("model")),
        ("seed", summary.get("seed")),
        (
            "trainable parameters",
            f"{summary.get('trainable_params', 0):,} of {summary.get('total_params', 0):,} "
            f"({summary.get('trainable_percent', 0)} %)",
        ),
        ("primary metric", metric),
        ("best epoch", summary.get("best_epoch")),
        ("optimizer updates", summary.get("updates")),
        ("train examples / s", summary.get("train_examples_per_second")),
        ("wall time", f"{summary.get('wall_seconds')} s"),
        ("checkpoint", f"`{summary.get('checkpoint')}`"),
    ]
    plan = summary.get("data_plan") or {}
    if plan:
        facts.append(("checkpoint kept", plan.get("checkpoint")))
        facts.append(
            ("splits", ", ".join(f"{role} {plan.get(role) or '–'}" for role in ("train", "dev", "test")))
        )
    held_out = plan.get("dev_from_train")
    if held_out:
        facts.append(
            (
                "dev held out of train",
                f"{held_out['dev_examples']} of {held_out['source_examples']} examples "
                f"(fraction {held_out['fraction']}, seed {held_out['seed']})",
            )
        )
    lines += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in facts), ""]
    warnings = summary.get("warnings") or []
    if warnings:
        lines += ["## Warnings", "", *(f"- {warning}" for warning in warnings), ""]
    scores = [(split, summary.get(split)) for split in ("dev", "test") if summary.get(split)]
    if scores:
        names = list(scores[0][1])
        chosen = "the best dev epoch" if summary.get("dev") else "the last evaluation (no dev split)"
        lines += [f"## Scores at {chosen}", ""]
        lines += [_row(["split", *names]), _rule(len(names) + 1)]
        lines += [_row([split, *(_number(values.get(n)) for n in names)]) for split, values in scores]
        lines.append("")
    history = summary.get("history") or []
    if history:
        lines += [
            "## History",
            "",
            _row(["epoch", "update", "train loss", f"dev {metric}", f"test {metric}"]),
        ]
        lines.append(_rule(5))
        for entry in history:
            lines.append(
                _row(
                    [
                        f"{entry.get('epoch', 0):.2f}",
                        entry.get("update"),
                        _number(entry.get("train_loss")),
                        _number((entry.get("dev") or {}).get(metric)),
                        _number((entry.get("test") or {}).get(metric)),
                    ]
                )
            )
        lines.append("")
        if has_plot:
            lines += [f"![loss and {metric} curves]({CURVES_PNG})", ""]
    data = summary.get("data") or {}
    if data:
        lines += ["## Data", "", _row(["split", "examples", "skipped", "unlabelled", "truncated"]), _rule(5)]
        for split, counts in data.items():
            lines.append(
                _row([split, *(counts.get(k) for k in ("examples", "skipped", "unlabelled", "truncated"))])
            )
        notes = [note for counts in data.values() for note in counts.get("notes", [])]
        lines += ["", *(f"- {note}" for note in notes)] if notes else []
        lines.append("")
    return "\n".join(lines)


def plot_curves(
    history: list[dict[str, Any]], metric: str, path: Path, step_losses: dict[int, float] | None = None
) -> bool:
    """Train loss and dev (and test) ``metric`` against optimizer updates; False when there is nothing to plot.

    The loss curve uses every update's loss when ``step_losses`` has them (the tensorboard log), else the
    mean loss since the previous evaluation (the history).
    """
    if not history:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    from matplotlib import pyplot

    updates = [entry.get("update", 0) for entry in history]
    figure, (loss_axis, metric_axis) = pyplot.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    if step_losses:
        steps = sorted(step_losses)
        loss_axis.plot(steps, [step_losses[step] for step in steps], linewidth=1)
        loss_axis.set(title="train loss (every update)", xlabel="update", ylabel="loss")
    else:
        losses = [entry.get("train_loss") for entry in history]
        loss_axis.plot(*_present(updates, losses), marker="o")
        loss_axis.set(title="train loss (mean since the previous evaluation)", xlabel="update", ylabel="loss")
    for split in ("dev", "test"):
        values = [(entry.get(split) or {}).get(metric) for entry in history]
        if any(value is not None for value in values):
            metric_axis.plot(*_present(updates, values), marker="o", label=split)
    metric_axis.set(title=metric, xlabel="update", ylabel=metric)
    if metric_axis.get_legend_handles_labels()[0]:
        metric_axis.legend()
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
    try:
        with file_whole(path) as stream:  # a full disk left a 0-byte curves.png where a whole one was
            figure.savefig(stream, format="png", dpi=100)
    finally:
        pyplot.close(figure)
    return True


def logged_losses(log_dir: Path) -> dict[int, float]:
    """update -> train loss from the run's tensorboard log; empty when there is no log (or no tensorboard).

    After a resume the replayed updates are logged again; the later value wins, as it is the one kept.
    """
    if not log_dir.is_dir():
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "train/loss" not in events.Tags().get("scalars", []):
        return {}
    return {event.step: event.value for event in events.Scalars("train/loss")}


# --- several seeds -----------------------------------------------------------------------------------------


def aggregate_seeds(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1; 0 for one seed) of every dev/test metric over seeds.

    A metric counts only when every seed reports it, so that a mean never mixes different sets of runs.
    """
    seeds = sorted(summaries)
    first = summaries[seeds[0]]
    result: dict[str, Any] = {
        "task": first.get("task"),
        "method": first.get("method"),
        "model": first.get("model"),
        "primary_metric": first.get("primary_metric"),
        "seeds": seeds,
    }
    for split in ("dev", "test"):
        per_seed = [summaries[seed].get(split) or {} for seed in seeds]
        shared = [name for name in per_seed[0] if all(name in scores for scores in per_seed)]
        result[split] = {name: _mean_std([scores[name] for scores in per_seed]) for name in shared}
    return result


def read_summary(path: Path, log: Callable[[str], None], otherwise: str) -> dict[str, Any] | None:
    """A finished run's summary.json, or None where there is none or it cannot be read (a crash cut it short:
    ``log`` says so, and what is done ``otherwise``)."""
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log(f"{path} cannot be read ({error.__class__.__name__}); {otherwise}")
        return None
    return summary if isinstance(summary, dict) else None


def write_json_and_markdown(
    output_dir: str | Path, json_name: str, data: dict[str, Any], markdown_name: str, markdown: str
) -> list[Path]:
    """A report as machine-readable JSON plus its Markdown rendering; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_whole(output_dir / json_name, json.dumps(jsonable(data), indent=2) + "\n")  # nan as null
    write_text_whole(output_dir / markdown_name, markdown)
    return [output_dir / json_name, output_dir / markdown_name]


def write_seed_report(output_dir: str | Path, aggregate: dict[str, Any]) -> list[Path]:
    return write_json_and_markdown(output_dir, SEEDS_JSON, aggregate, SEEDS_MD, seeds_markdown(aggregate))


def seeds_markdown(aggregate: dict[str, Any]) -> str:
    seeds = aggregate["seeds"]
    lines = [
        f"# {aggregate.get('task')} · {aggregate.get('method')} · {aggregate.get('model')}: "
        f"{len(seeds)} seeds",
        "",
        f"Seeds {', '.join(map(str, seeds))}; mean ± sample standard deviation at each run's best dev epoch.",
        "",
        _row(["split", "metric", "mean ± std", *(f"seed {seed}" for seed in seeds)]),
        _rule(3 + len(seeds)),
    ]
    for split in ("dev", "test"):
        for name, stats in aggregate.get(split, {}).items():
            values = [_number(value) for value in stats["values"]]
            lines.append(_row([split, name, format_mean_std(stats), *values]))
    return "\n".join(lines) + "\n"


def format_mean_std(stats: dict[str, Any]) -> str:
    return f"{_number(stats['mean'])} ± {_number(stats['std'])}"


def _mean_std(values: list[float | None]) -> dict[str, Any]:
    # a summary read back from summary.json holds an undefined metric (nan) as null
    values = [math.nan if value is None else value for value in values]
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(variance), "values": values}


# --- formatting --------------------------------------------------------------------------------------------


def _present(xs: list[Any], ys: list[Any]) -> tuple[list[Any], list[Any]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _rule(columns: int) -> str:
    return "|" + "---|" * columns
