"""Where a training step goes: torch.profiler self time per scope (collate, forward, ...) and op category, the
time outside GEMM ops, and the step's FLOP rate against the fp32 and bf16 GEMM references."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from speed_common import PREFIX_LENGTH, Workload, environment, load_data, model_folder
from speed_flops import Shape, gemm_rate, step_flops
from speed_systems import SYSTEM_LABELS, build_system

SCOPES = ("collate", "forward", "backward", "optimizer", "prefix build", "mask extension")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
# torch's dropout draws with bernoulli_; FastDropout's masks come from randint, i.e. random_
RANDOM_OPS = ("aten::bernoulli_", "aten::random_")


def op_category(name: str) -> str:
    if name in GEMM_OPS:
        return "GEMM"
    if name in RANDOM_OPS:
        return "dropout mask"
    if "scaled_dot_product" in name or "softmax" in name:
        return "attention"
    return "other"


@contextlib.contextmanager
def labelled_prefix_scopes() -> Iterator[None]:
    """Wrap the core's prefix build and mask extension in profiler scopes (the core itself is untouched)."""
    import ptuning.core.injection.attention_interface as interface
    import ptuning.core.model as model_module

    originals = (
        model_module.PromptModel._row_tables,
        model_module.split_table,
        interface.extend_attention_mask,
    )

    def scoped(function: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(label):
                return function(*args, **kwargs)

        return wrapper

    model_module.PromptModel._row_tables = scoped(originals[0], "prefix build")
    model_module.split_table = scoped(originals[1], "prefix build")
    interface.extend_attention_mask = scoped(originals[2], "mask extension")
    try:
        yield
    finally:
        model_module.PromptModel._row_tables, model_module.split_table, interface.extend_attention_mask = (
            originals
        )


def measure_profile(workload: Workload, data_root: Path, work_dir: Path, names: list[str]) -> dict[str, Any]:
    """Where a training round's time goes, per system: scope x op category, ms per step."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoTokenizer

    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    shape = Shape.of(folder)
    out: dict[str, Any] = {"workload": asdict(workload), "systems": {}, **environment()}
    with labelled_prefix_scopes():
        for name in names:
            system = build_system(name, folder, data, workload)
            system.train_round(0)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result = system.train_round(1)
            steps = len(result.shapes)
            table: dict[str, float] = defaultdict(float)
            for event in prof.events():
                if event.cpu_parent is None:
                    _attribute(event, "unscoped", table)
            breakdown = {k: v / 1000 / steps for k, v in sorted(table.items())}
            gemm_ms = sum(v for k, v in breakdown.items() if k.endswith("|GEMM"))
            out["systems"][name] = {
                "steps": steps,
                "ms_per_step": 1000 * result.seconds / steps,
                "breakdown_ms_per_step": breakdown,
                "gemm_ms_per_step": gemm_ms,
                "outside_gemm_ms_per_step": sum(breakdown.values()) - gemm_ms,
                # the profiled round's analytic FLOPs over its (profiled, so somewhat slower) wall time
                "gflops_per_second": step_flops(shape, result.shapes, PREFIX_LENGTH, True)
                / result.seconds
                / 1e9,
            }
            print(f"profiled {name}", flush=True)
    out["gemm_gflops"] = {dtype: gemm_rate(dtype=dtype) for dtype in ("fp32", "bf16")}
    return out


def _attribute(event: Any, scope: str, table: dict[str, float]) -> None:
    """Add each op's self time to (innermost scope, category); scopes' own overhead goes to the scope."""
    if event.name in SCOPES:
        scope = event.name
    table[f"{scope}|{op_category(event.name) if event.name not in SCOPES else 'other'}"] += (
        event.self_cpu_time_total
    )
    for child in event.cpu_children:
        _attribute(child, scope, table)


def render_profile(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    names = list(result["systems"])
    lines = [
        f"#### Where a training step goes: {workload['name']} (torch.profiler, self CPU time)",
        "",
        "| scope / ops | " + " | ".join(f"{SYSTEM_LABELS[n]} ms/step" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    keys = sorted({k for n in names for k in result["systems"][n]["breakdown_ms_per_step"]})
    for key in keys:
        scope, category = key.split("|")
        cells = []
        for name in names:
            entry = result["systems"][name]
            value = entry["breakdown_ms_per_step"].get(key, 0.0)
            total = sum(entry["breakdown_ms_per_step"].values())
            cells.append(f"{value:.1f} ({100 * value / total:.0f} %)")
        lines.append(f"| {scope}: {category} | " + " | ".join(cells) + " |")
    lines.append(
        "| wall time per step | "
        + " | ".join(f"{result['systems'][n]['ms_per_step']:.1f}" for n in names)
        + " |"
    )
    lines += _gemm_rows(result, names)
    return lines + [""]


def _gemm_rows(result: dict[str, Any], names: list[str]) -> list[str]:
    """Time outside GEMM ops, and the step's rate against both GEMM references (newer result files only:
    older ones say "not measured" there)."""
    entries = [result["systems"][n] for n in names]
    outside = []
    for entry in entries:  # derived from the breakdown, so older result files show it too
        breakdown = entry["breakdown_ms_per_step"]
        rest = sum(v for k, v in breakdown.items() if not k.endswith("|GEMM"))
        outside.append(f"{rest:.1f} ({100 * rest / sum(breakdown.values()):.0f} %)")
    references = result.get("gemm_gflops")
    rates = []
    for entry in entries:
        if references is None or "gflops_per_second" not in entry:
            rates.append("not measured")
            continue
        flops = entry["gflops_per_second"]
        rates.append(
            f"{flops:.0f} ({100 * flops / references['fp32']:.0f} % / {100 * flops / references['bf16']:.0f} %)"
        )
    yardstick = (
        ""
        if references is None
        else f" (GEMM 2048^3: fp32 {references['fp32']:.0f}, bf16 {references['bf16']:.0f})"
    )
    return [
        "| outside GEMM ops, ms/step (share) | " + " | ".join(outside) + " |",
        f"| step GFLOP/s (% of fp32 / % of bf16 GEMM){yardstick} | " + " | ".join(rates) + " |",
    ]
