"""The targets table of the speed findings (issues 6 and 16), rendered from the result files, never typed in.

Every cell is read from ``throughput-<workload>.json`` or ``time-to-target-<task>.jsonl``; a cell whose system
or file is missing says "not measured", and a row is met only when every cell of it is measured and met.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speed_systems import BASELINE, BF16_BASELINE, BF16_COMPILED_BASELINE, COMPILED_BASELINE
from speed_time_to_target import fastest, is_current, read_records, split_series

TASKS = {"SST-2": ("sst2-minilm", "sst2"), "CoNLL-2003": ("conll2003-minilm", "conll2003")}
# The run that measured --backbone-dropout 0 beside the (a'') systems with and without their dropout.
BACKBONE_DROPOUT_RUN = "2026-12-06-backbone-dropout"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Cell:
    text: str
    met: bool | None  # None: not measured


@dataclass(frozen=True)
class Target:
    label: str
    cell: Callable[[dict[str, Any] | None, list[dict[str, Any]]], Cell]  # (throughput, time-to-target runs)
    # a sub-folder of the results whose throughput run measured this row's systems side by side
    source: str | None = None


def speedup(contender: str, other: str, mode: str, goal: float) -> Callable[..., Cell]:
    """``contender`` ÷ ``other`` examples/s (median of per-round ratios) in ``mode``, against ``goal``."""

    def cell(throughput: dict[str, Any] | None, _: list[dict[str, Any]]) -> Cell:
        if throughput is None or not {contender, other} <= set(throughput["systems"]):
            return Cell(NOT_MEASURED, None)
        summary = throughput["summary"][mode]
        ratio = summary[other].get(f"{contender}_speedup")
        if ratio is None:
            return Cell(NOT_MEASURED, None)
        rates = (
            f"{summary[contender]['examples_per_second']:.1f} vs {summary[other]['examples_per_second']:.1f}"
        )
        shown = f"**{ratio:.2f}×**" if ratio >= goal else f"{ratio:.2f}×"
        return Cell(f"{shown} ({rates} ex/s)", ratio >= goal)

    return cell


def gemm_share(system: str, dtype: str, goal: float) -> Callable[..., Cell]:
    """The training step's analytic FLOP rate as a share of the ``dtype`` GEMM reference of the same rounds."""
    key = "gemm_gflops" if dtype == "fp32" else "gemm_bf16_gflops"

    def cell(throughput: dict[str, Any] | None, _: list[dict[str, Any]]) -> Cell:
        if throughput is None or system not in throughput["systems"] or throughput.get(key) is None:
            return Cell(NOT_MEASURED, None)
        flops = throughput["summary"]["train"][system]["gflops_per_second"]
        if not flops:
            return Cell(NOT_MEASURED, None)
        share = flops / throughput[key]
        return Cell(f"{100 * share:.0f} % ({flops:.0f} of {throughput[key]:.0f} GFLOP/s)", share >= goal)

    return cell


def time_to_target(
    goal: float, contender: str = "ours", rates_from: str | None = None, baseline: str = BASELINE
) -> Callable[..., Cell]:
    """``baseline``'s ((a'')'s) time to the target dev score ÷ ``contender``'s, each at its own fastest rate.

    ``rates_from``: the throughput system whose idle rate stands for ``contender``'s, where ``contender`` has no
    throughput rounds of its own (``ours-pooler`` differs from ``ours`` by one H x H product per row).

    Only runs of the file's compared series (the task's default budget and model, ``split_series``) and of each
    system's current recipe count. Two readings: the clock of the time-to-target runs, and, when the throughput
    file has both systems, their steps to target x batch size ÷ their idle training examples/s from the
    interleaved rounds. The second decides (the time-to-target runs may have shared the machine; the steps they
    took do not depend on that)."""

    def cell(throughput: dict[str, Any] | None, records: list[dict[str, Any]]) -> Cell:
        # smoke runs, other budgets or models, superseded recipes and A/Bs are not compared
        records = [r for r in split_series(records)[0] if is_current(r)]
        systems = (contender, baseline)
        if not all(any(r["system"] == s for r in records) for s in systems):
            return Cell(NOT_MEASURED, None)
        clock = {s: fastest([r for r in records if r["system"] == s]) for s in systems}
        steps = {s: fastest([r for r in records if r["system"] == s], "steps_to_target") for s in systems}
        if clock[contender] is None:
            return Cell(f"{contender} did not reach it", False)
        if clock[baseline] is None:
            named = "(a'')" if baseline == BASELINE else baseline
            return Cell(
                f"{named} did not reach it; {contender} {clock[contender][1]:.0f} s, {steps[contender][1]:.0f} steps",
                True,
            )
        clock_ratio = clock[baseline][1] / clock[contender][1]
        clock_text = f"clock {clock_ratio:.2f}× ({clock[contender][1]:.0f} vs {clock[baseline][1]:.0f} s)"
        rates = idle_train_rates(throughput, (rates_from or contender, baseline))
        if rates is not None and rates_from:
            rates[contender] = rates.pop(rates_from)
        if rates is None:
            shown = f"**{clock_ratio:.2f}×**" if clock_ratio >= goal else f"{clock_ratio:.2f}×"
            return Cell(f"{shown}, {clock_text}", clock_ratio >= goal)
        batch = records[0]["budget"]["batch_size"]
        idle = {s: steps[s][1] * batch / rates[s] for s in systems}
        ratio = idle[baseline] / idle[contender]
        shown = f"**{ratio:.2f}×**" if ratio >= goal else f"{ratio:.2f}×"
        text = (
            f"{shown} ({steps[contender][1]:.0f} vs {steps[baseline][1]:.0f} steps at idle rates: "
            f"{idle[contender]:.0f} vs {idle[baseline]:.0f} s); {clock_text}"
        )
        return Cell(text, ratio >= goal)

    return cell


def idle_train_rates(throughput: dict[str, Any] | None, systems: tuple[str, ...]) -> dict[str, float] | None:
    """Training examples/s of ``systems`` in the interleaved throughput rounds, or None if any is missing."""
    if throughput is None or not set(systems) <= set(throughput["systems"]):
        return None
    return {s: throughput["summary"]["train"][s]["examples_per_second"] for s in systems}


TARGETS = (
    Target("training ≥ 1.5× (a'') (issue 16)", speedup("ours", BASELINE, "train", 1.5)),
    Target("inference ≥ 2× (a'') (issue 16)", speedup("ours", BASELINE, "infer", 2.0)),
    Target("training ≥ 1.5× (a''), ours with a bf16 backbone", speedup("ours-bf16", BASELINE, "train", 1.5)),
    Target("inference ≥ 2× (a''), ours with a bf16 backbone", speedup("ours-bf16", BASELINE, "infer", 2.0)),
    Target("training ≥ 1.5× (a'') in bf16, ours in bf16", speedup("ours-bf16", BF16_BASELINE, "train", 1.5)),
    Target("inference ≥ 2× (a'') in bf16, ours in bf16", speedup("ours-bf16", BF16_BASELINE, "infer", 2.0)),
    Target("inference ≥ 2× (a''), ours with --compile", speedup("ours-compiled", BASELINE, "infer", 2.0)),
    Target(
        "the same, (a'') with torch_compile=True",
        speedup("ours-compiled", COMPILED_BASELINE, "infer", 2.0),
    ),
    Target(
        "inference ≥ 2× (a''), ours with a bf16 backbone and --compile",
        speedup("ours-bf16-compiled", BASELINE, "infer", 2.0),
    ),
    Target(
        "inference ≥ 2× (a'') in bf16, ours in bf16 with --compile",
        speedup("ours-bf16-compiled", BF16_BASELINE, "infer", 2.0),
    ),
    Target(
        "the same, (a'') in bf16 with torch_compile=True",
        speedup("ours-bf16-compiled", BF16_COMPILED_BASELINE, "infer", 2.0),
    ),
    Target("time to target dev score ≥ 2× faster than (a'') (issue 16)", time_to_target(2.0)),
    Target("the same, ours with a bf16 backbone", time_to_target(2.0, "ours-bf16")),
    Target(
        "the same, ours with --pooling mean (CoNLL-2003 tags tokens: no pooled head)",
        time_to_target(2.0, "ours-mean-pooling"),
    ),
    Target(
        "the same, ours with --prefix-dropout 0 (as PEFT; SST-2 only)",
        time_to_target(2.0, "ours-no-dropout"),
    ),
    # The frozen pooler adds one H x H product per row to ours' step: ours' idle rate stands for it.
    Target(
        "the same, ours with --pooling pooler ([CLS] through the checkpoint's frozen pooler, as PEFT; SST-2 only)",
        time_to_target(2.0, "ours-pooler", rates_from="ours"),
    ),
    Target(
        "the same, ours with --pooling pooler --prefix-dropout 0 (both as PEFT; SST-2 only)",
        time_to_target(2.0, "ours-pooler-no-dropout", rates_from="ours-no-dropout"),
    ),
    Target(
        "training ≥ 1.5× (a'') in bf16, ours in bf16 with --backbone-dropout 0",
        speedup("ours-bf16-no-backbone-dropout", BF16_BASELINE, "train", 1.5),
        BACKBONE_DROPOUT_RUN,
    ),
    Target(
        "the same, (a'') in bf16 also without the backbone's dropout",
        speedup("ours-bf16-no-backbone-dropout", "peft-trainer-grouped-bf16-no-dropout", "train", 1.5),
        BACKBONE_DROPOUT_RUN,
    ),
    Target(
        "training ≥ 1.5× (a''), both without the backbone's dropout",
        speedup("ours-no-backbone-dropout", "peft-trainer-grouped-no-dropout", "train", 1.5),
        BACKBONE_DROPOUT_RUN,
    ),
    Target(
        "time to target dev score ≥ 2× faster than (a''), ours with --backbone-dropout 0",
        time_to_target(2.0, "ours-no-backbone-dropout"),
        BACKBONE_DROPOUT_RUN,
    ),
    Target(
        "the same, (a'') also without the backbone's dropout",
        time_to_target(2.0, "ours-no-backbone-dropout", baseline="peft-trainer-grouped-no-dropout"),
        BACKBONE_DROPOUT_RUN,
    ),
    Target("training ≥ 2× (a) (issue 6)", speedup("ours", "peft-trainer", "train", 2.0)),
    Target("inference ≥ 3× (a) (issue 6)", speedup("ours", "peft-trainer", "infer", 3.0)),
    Target("≥ 60 % of the fp32 GEMM rate inside a training step (issue 6)", gemm_share("ours", "fp32", 0.6)),
    Target("the same for ours-bf16, against the bf16 GEMM rate", gemm_share("ours-bf16", "bf16", 0.6)),
)


def render_targets(results_dir: Path) -> list[str]:
    """The targets table: one row per target, one column per task, and whether every cell meets it."""
    inputs = {}
    for source in {target.source for target in TARGETS}:
        folder = results_dir / source if source else results_dir
        for task, (workload, target_task) in TASKS.items():
            throughput_file = folder / f"throughput-{workload}.json"
            # the time-to-target runs of every row live in one file, whichever throughput run rates them
            target_file = results_dir / f"time-to-target-{target_task}.jsonl"
            throughput = json.loads(throughput_file.read_text()) if throughput_file.is_file() else None
            inputs[source, task] = (throughput, read_records(target_file) if target_file.is_file() else [])
    lines = ["| target | " + " | ".join(TASKS) + " | met? |", "|---|" + "---|" * len(TASKS) + "---|"]
    for target in TARGETS:
        cells = [target.cell(*inputs[target.source, task]) for task in TASKS]
        lines.append(f"| {target.label} | " + " | ".join(c.text for c in cells) + f" | {verdict(cells)} |")
    return lines


def verdict(cells: list[Cell]) -> str:
    measured = [c.met for c in cells if c.met is not None]
    if not measured:
        return "–"
    if not all(measured):
        return "**no**"
    return "yes" if len(measured) == len(cells) else "yes where measured"
