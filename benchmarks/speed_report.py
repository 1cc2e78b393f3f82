"""The speed section of docs/BENCHMARKS.md, rendered from the result files each question's module writes."""

from __future__ import annotations

import json
from pathlib import Path

from doc_tables import replace_between_markers
from speed_accuracy import render_accuracy
from speed_memory import render_memory
from speed_profile import render_profile
from speed_scaling import plot_scaling, render_scaling
from speed_targets import render_targets
from speed_throughput import render_throughput
from speed_time_to_target import read_records, render_time_to_target
from speed_work import render_work

TABLE_START = "<!-- speed-tables:start -->"
TABLE_END = "<!-- speed-tables:end -->"
TARGETS_START = "<!-- speed-targets:start -->"  # the targets table inside the hand-written findings
TARGETS_END = "<!-- speed-targets:end -->"


def render_tables(results_dir: Path) -> str:
    """Every table, in a fixed order of questions; within a question, result files in name order."""
    lines: list[str] = []
    for path in sorted(results_dir.glob("throughput-*.json")):
        lines += render_throughput(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("work-*.json")):
        throughput = path.with_name(path.name.replace("work-", "throughput-", 1))
        lines += render_work(
            json.loads(path.read_text()), json.loads(throughput.read_text()) if throughput.is_file() else None
        )
    for path in sorted(results_dir.glob("memory-*.json")):
        lines += render_memory(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("accuracy*.json")):
        lines += render_accuracy(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("time-to-target-*.jsonl")):
        lines += render_time_to_target(read_records(path))
    for path in sorted(results_dir.glob("scaling*.json")):
        lines += render_scaling(json.loads(path.read_text()), path.with_suffix(".png").name)
    for path in sorted(results_dir.glob("profile-*.json")):
        lines += render_profile(json.loads(path.read_text()))
    return "\n".join(lines).rstrip() + "\n"


def replot(results_dir: Path) -> None:
    """Redraw the scaling figure from its result, so the figure follows the plotting code."""
    if (results_dir / "scaling.json").is_file():
        plot_scaling(json.loads((results_dir / "scaling.json").read_text()), results_dir / "scaling.png")


def update_doc(path: Path, tables: str, results_dir: Path | None = None) -> None:
    """The result tables, and (given ``results_dir``) the targets table of the findings."""
    replace_between_markers(path, TABLE_START, TABLE_END, tables)
    if results_dir is not None:
        replace_between_markers(
            path, TARGETS_START, TARGETS_END, "\n".join(render_targets(results_dir)) + "\n"
        )
