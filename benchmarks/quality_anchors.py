"""The authors' anchors beside the scaling gaps: the P-tuning v2 authors' scores (BERT-large, RoBERTa-large)
that a citable source gives, read from ``benchmarks/quality_anchors.json``, each number with its source (a
number without one is refused). Rendered as a table and a figure panel by ``quality_scaling.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import quality_protocol as protocol

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


def render_anchors(anchors: dict[tuple[str, str, str], dict[str, Any]]) -> list[str]:
    header = ["task"] + [f"authors: {model}" for model in ANCHOR_MODELS]
    lines = [
        "**The authors' anchors** (P-tuning v2 authors' reimplementation on BERT-large / RoBERTa-large under "
        "their own protocol, 10 to 120 epochs per task: far from our budgets, so compare trends, not absolute "
        "scores):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for task in protocol.TASK_ORDER:
        row = [protocol.BUDGETS[task].label] + [
            format_anchor(anchors, model, task) for model in ANCHOR_MODELS
        ]
        lines.append("| " + " | ".join(row) + " |")
    sources = sorted({anchor["source"] for anchor in anchors.values()})
    methods = {method for _, _, method in anchors}
    note = f"{ANCHORS_FILE.name}: every number beside its source. '–': no anchor for that task and model."
    if "finetune" not in methods:
        note += (
            " No fine-tuning (FT) anchor was found in a source readable from this machine (the paper's tables, "
            "arXiv 2110.07602, could not be read here, and none is written from memory), so these columns "
            "give P-tuning v2's (PT-2) score, not a gap."
        )
    if sources:
        note += " Sources: " + "; ".join(sources) + "."
    return [*lines, "", note]


def render_anchor_panel(axis, points, anchors, colours) -> None:
    """P-tuning v2's absolute 1x score on our backbones (mean over its seeds so far, once its sweep is done),
    and the authors' P-tuning v2 scores (their protocol) on theirs, in order of size: what the anchors are, with no fine-tuning side invented."""
    positions = list(protocol.BACKBONES) + list(ANCHOR_MODELS)
    for task in protocol.TASK_ORDER:
        ours = [
            (index, points[(name, "full")][task]["ptuning_v2"])
            for index, name in enumerate(protocol.BACKBONES)
            if points[(name, "full")][task]["ptuning_v2"] is not None
        ]
        theirs = [
            (len(protocol.BACKBONES) + index, anchors[(model, task, "ptuning-v2")]["value"])
            for index, model in enumerate(ANCHOR_MODELS)
            if (model, task, "ptuning-v2") in anchors
        ]
        if ours:
            axis.plot(
                *zip(*ours, strict=True), marker="o", color=colours[task], label=protocol.BUDGETS[task].label
            )
        if theirs:
            axis.plot(*zip(*theirs, strict=True), marker="*", markersize=10, linestyle="none",
                      markerfacecolor="white", color=colours[task])  # fmt: skip
    axis.set_xticks(range(len(positions)))
    axis.set_xticklabels(
        [f"{protocol.BACKBONES[n].params_millions:g} M\n{n}" for n in protocol.BACKBONES]
        + [f"{model}\n(authors)" for model in ANCHOR_MODELS]
    )
    axis.axvline(len(protocol.BACKBONES) - 0.5, color="grey", linewidth=0.8)
    axis.set_title("P-tuning v2 score: ours (1x budget) | authors' protocol (stars)")
    axis.set_ylabel("P-tuning v2, primary metric (%)")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7, loc="lower right")
