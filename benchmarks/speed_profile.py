"""Where a training step goes, per change: torch.profiler self time per scope (collate, forward, ...) and op
category, the GEMM share and the time outside GEMM ops, the top non-GEMM ops, and the FLOP rates of the
step and of its GEMM ops against the measured fp32 and bf16 GEMM references.

Profiled by default: ``ours``, ``ours-bf16`` (backbone stored in bf16), ``ours-packed`` (``--pack-sequences``,
rows of 128) and ``ours-compiled`` (``--compile``: warm-up rounds until a round compiles no new graph, so the
profile holds no compiling; the start-up is reported beside it), then the other systems of our loop
(``ours-no-dropout``, ``reference``, and ``peft-our-batching`` where PEFT runs). Per system, in turn: the
warm-up round(s), one timed round without the profiler (the step time), the same batches again under the
profiler (the breakdown). One process, systems one after the other: run it on an idle machine.

    python benchmarks/speed_profile.py                                  # sst2-minilm and conll2003-minilm
    python benchmarks/speed_profile.py --workloads conll2003-minilm --systems ours ours-compiled
    python benchmarks/speed_profile.py --smoke TINY_MODEL_DIR --smoke-task conll2003 --backend eager

Writes benchmarks/results/speed/profile-<workload>.json (``speed.py --profile`` writes the same file for the
systems it is given); ``speed.py --table --update-doc docs/BENCHMARKS.md`` renders it.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from speed_common import (
    DATA_ROOT,
    PREFIX_LENGTH,
    RESULTS_DIR,
    WORKLOADS,
    Workload,
    environment,
    load_data,
    model_folder,
    model_label,
    write,
)
from speed_flops import Shape, describe_gemm_sizes, gemm_rate, gemm_sizes, step_flops, step_flops_parts
from speed_systems import available_systems
from speed_variants import COMPILED, PACKED, VARIANT_LABELS, build_variant

from ptuning.core.compilation import CompileStats

SCOPES = ("collate", "forward", "backward", "optimizer", "prefix build", "mask extension")
# the GEMM kernels: aten's matmuls (fp32 and bf16 alike), and its fused addmm + activation (Inductor can emit it)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")
# torch's dropout draws with bernoulli_; FastDropout's masks come from randint (random_ in eager, randint
# itself in a compiled graph)
RANDOM_OPS = ("aten::bernoulli_", "aten::random_", "aten::randint")
CHANGES = ("ours", "ours-bf16", PACKED, COMPILED)  # issue 16's changes, each profiled beside ours
PROFILED = (*CHANGES, "ours-no-dropout", "peft-our-batching", "reference")  # every system of our loop
MAX_COMPILE_WARMUP = 3  # warm-up rounds of the compiled system at most, while a round still compiles graphs
TOP_OPS = 8  # non-GEMM ops kept per system in the result file (the table shows three)
# Inductor names each compiled graph's call after its code hash: one name per graph, not per run
GRAPH_CALL = re.compile(r"## Call CompiledFxGraph \w+ ##")


def op_category(name: str) -> str:
    if name in GEMM_OPS:
        return "GEMM"
    if name in RANDOM_OPS:
        return "dropout mask"
    if "scaled_dot_product" in name or "softmax" in name:
        return "attention"
    return "other"


@contextlib.contextmanager
def labelled_prefix_scopes(mask_extension: bool = True) -> Iterator[None]:
    """Wrap the core's prefix build and mask extension in profiler scopes (the core itself is untouched).
    ``mask_extension=False`` leaves the mask extension alone: it runs inside the backbone, and a compiled
    backbone must trace the code ``--compile`` traces, not a wrapper."""
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
    if mask_extension:
        interface.extend_attention_mask = scoped(originals[2], "mask extension")
    try:
        yield
    finally:
        model_module.PromptModel._row_tables, model_module.split_table, interface.extend_attention_mask = (
            originals
        )


def measure_profile(
    workload: Workload,
    data_root: Path,
    work_dir: Path,
    names: list[str],
    backend: str = "inductor",
    folder: str | None = None,
) -> dict[str, Any]:
    """Where a training round's time goes, per system: scope x op category, ms per step, and the rates."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoTokenizer

    folder = folder or model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    shape = Shape.of(folder)
    references = [_gemm_references()]
    out: dict[str, Any] = {
        "workload": asdict(workload),
        "model": model_label(folder),
        "threads": torch.get_num_threads(),
        "systems": {},
        **environment(),
    }
    for name in names:
        system = build_variant(name, folder, data, workload, backend, work_dir)
        with labelled_prefix_scopes(mask_extension=name != COMPILED):
            compiled = _warm_up(system, workload, name == COMPILED)
            before = CompileStats.now()
            timed = system.train_round(1)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result = system.train_round(1)  # the same batches as the timed round
            after = CompileStats.now().since(before)
        entry = _summarize(prof.events(), result, timed, shape)
        if compiled is not None:
            compiled["graphs_after_warmup"] = after.graphs  # > 0: the timed/profiled rounds compiled too
            compiled["compile_seconds_after_warmup"] = round(after.seconds, 2)
            entry["compile"] = compiled
        out["systems"][name] = entry
        print(
            f"profiled {name}: {entry['ms_per_step_unprofiled']:.1f} ms/step, GEMM "
            f"{100 * entry['gemm_share']:.0f} %",
            flush=True,
        )
    references.append(_gemm_references())
    # the machine's rate: the better of the readings before and after (other load only lowers it)
    out["gemm_gflops"] = {dtype: max(r[dtype] for r in references) for dtype in ("fp32", "bf16")}
    out["gemm_gflops_readings"] = references
    out["gemm_sizes"] = gemm_sizes()
    return out


def _gemm_references() -> dict[str, float]:
    return {dtype: gemm_rate(dtype=dtype) for dtype in ("fp32", "bf16")}


def _warm_up(system: Any, workload: Workload, compiled: bool) -> dict[str, Any] | None:
    """The workload's warm-up rounds; a compiled system goes on (at most MAX_COMPILE_WARMUP rounds) until a
    round compiles no new graph. Returns the compile start-up for a compiled system, else None."""
    start = CompileStats.now()
    seconds, rounds = 0.0, 0
    while True:
        before = CompileStats.now()
        seconds += system.train_round(0).seconds
        rounds += 1
        settled = CompileStats.now().since(before).graphs == 0
        if rounds >= workload.warmup and (not compiled or settled or rounds >= MAX_COMPILE_WARMUP):
            break
    if not compiled:
        return None
    compiled_at_warmup = CompileStats.now().since(start)
    return {
        "backend": system.compile_backend,
        "inductor_cache": "cold",  # Dynamo reset and a fresh TORCHINDUCTOR_CACHE_DIR, as on a first run
        "warmup_rounds": rounds,
        "warmup_seconds": round(seconds, 2),
        "graphs_at_warmup": compiled_at_warmup.graphs,
        "compile_seconds_at_warmup": round(compiled_at_warmup.seconds, 2),
    }


def _summarize(events: Any, result: Any, timed: Any, shape: Shape) -> dict[str, Any]:
    """Per step: the scope x category breakdown, GEMM and non-GEMM time, top non-GEMM ops, FLOP rates."""
    steps = len(result.shapes)
    table: dict[str, float] = defaultdict(float)
    for event in events:
        if event.cpu_parent is None:
            _attribute(event, "unscoped", table)
    breakdown = {k: v / 1000 / steps for k, v in sorted(table.items())}
    total = sum(breakdown.values())
    gemm_ms = sum(v for k, v in breakdown.items() if k.endswith("|GEMM"))
    # sdpa multiplies Q K^T and P V inside its own op; without an sdpa op (eager attention) they are GEMM ops
    attention_in_gemm_ops = not any("scaled_dot_product" in event.name for event in events)
    projections, attention = step_flops_parts(
        shape, result.shapes, PREFIX_LENGTH, True, result.first_token_only
    )
    gemm_flops = projections + (attention if attention_in_gemm_ops else 0.0)
    flops = step_flops(shape, result.shapes, PREFIX_LENGTH, True, result.first_token_only)
    return {
        "steps": steps,
        "ms_per_step": 1000 * result.seconds / steps,  # the profiled round (profiler overhead included)
        "ms_per_step_unprofiled": 1000 * timed.seconds / steps,
        "token_slots_per_step": result.tokens / steps,  # rows x length, padding included
        "breakdown_ms_per_step": breakdown,
        "gemm_ms_per_step": gemm_ms,
        "gemm_share": gemm_ms / total,
        "outside_gemm_ms_per_step": total - gemm_ms,
        "top_non_gemm_ops": _top_non_gemm_ops(events, steps),
        # the analytic FLOPs of the round over its wall time: profiled (as older files) and unprofiled
        "gflops_per_second": flops / result.seconds / 1e9,
        "gflops_per_second_unprofiled": flops / timed.seconds / 1e9,
        # the FLOPs the GEMM ops did over their own (profiled) self time: how fast the GEMMs themselves ran
        "gemm_op_gflops_per_second": gemm_flops / (gemm_ms * steps / 1000) / 1e9 if gemm_ms else None,
        "attention_in_gemm_ops": attention_in_gemm_ops,
    }


def _attribute(event: Any, scope: str, table: dict[str, float]) -> None:
    """Add each op's self time to (innermost scope, category); scopes' own overhead goes to the scope."""
    if event.name in SCOPES:
        scope = event.name
    table[f"{scope}|{op_category(event.name) if event.name not in SCOPES else 'other'}"] += (
        event.self_cpu_time_total
    )
    for child in event.cpu_children:
        _attribute(child, scope, table)


def _top_non_gemm_ops(events: Any, steps: int) -> list[dict[str, Any]]:
    """The non-GEMM ops (and scopes' own time between ops) with the most self time, ms per step."""
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name not in GEMM_OPS:
            name = f"{event.name} (between ops)" if event.name in SCOPES else event.name
            name = GRAPH_CALL.sub("## Call CompiledFxGraph ##", name)
            totals[name] += event.self_cpu_time_total
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:TOP_OPS]
    return [{"op": name, "ms_per_step": value / 1000 / steps} for name, value in ranked]


# ------------------------------------------------------------------------------------------- rendering
def render_profile(result: dict[str, Any]) -> list[str]:
    """The per-change summary, then the scope x category breakdown (older result files: "not measured" for
    what they lack)."""
    return render_summary(result) + render_breakdown(result)


def _rate(value: float | None, references: dict[str, float] | None) -> str:
    if value is None or references is None:
        return "not measured"
    fp32, bf16 = 100 * value / references["fp32"], 100 * value / references["bf16"]
    return f"{value:.0f} ({fp32:.0f} % / {bf16:.0f} %)"


def _step_rate(entry: dict[str, Any], references: dict[str, float] | None) -> str:
    """The unprofiled step's rate; older files have only the profiled one, and say so."""
    if "gflops_per_second_unprofiled" in entry:
        return _rate(entry["gflops_per_second_unprofiled"], references)
    if "gflops_per_second" not in entry or references is None:
        return "not measured"
    return _rate(entry["gflops_per_second"], references) + " (profiled)"


def render_summary(result: dict[str, Any]) -> list[str]:
    workload, references = result["workload"], result.get("gemm_gflops")
    yardstick = (
        ""
        if references is None
        else f"; GEMM {describe_gemm_sizes(result.get('gemm_sizes'))}: fp32 {references['fp32']:.0f}, "
        f"bf16 {references['bf16']:.0f}"
    )
    threads = f", {result['threads']} threads" if "threads" in result else ""  # older files: not recorded
    lines = [
        f"#### Profile per change: {workload['name']} (training step, batch {workload['batch_size']}"
        f"{threads}{yardstick} GFLOP/s)",
        "",
        "| system | ms/step | GEMM ms/step (share) | outside GEMM ops, ms/step (share) | step GFLOP/s (% of fp32 / "
        "bf16 GEMM) | GEMM ops' GFLOP/s (% of fp32 / bf16 GEMM) | top non-GEMM ops, ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, entry in result["systems"].items():
        breakdown = entry["breakdown_ms_per_step"]
        total = sum(breakdown.values())
        gemm = sum(v for k, v in breakdown.items() if k.endswith("|GEMM"))  # older files have no gemm fields
        unprofiled = entry.get("ms_per_step_unprofiled")
        step = f"{unprofiled:.1f}" if unprofiled is not None else f"{entry['ms_per_step']:.1f} (profiled)"
        top = ", ".join(
            f"{op['op'].replace('|', '/')} {op['ms_per_step']:.1f}"
            for op in entry.get("top_non_gemm_ops", [])[:3]
        )
        lines.append(
            f"| {VARIANT_LABELS.get(name, name)} | {step} | {gemm:.1f} ({100 * gemm / total:.0f} %) | "
            f"{total - gemm:.1f} ({100 * (total - gemm) / total:.0f} %) | "
            f"{_step_rate(entry, references)} | "
            f"{_rate(entry.get('gemm_op_gflops_per_second'), references)} | {top or 'not measured'} |"
        )
        if "compile" in entry:
            notes.append(_compile_note(entry["compile"]))
    lines.append("")
    return lines + ([*notes, ""] if notes else [])


def _compile_note(compiled: dict[str, Any]) -> str:
    return (
        f"`--compile` start-up (not in the profile): {compiled['graphs_at_warmup']} graph(s), "
        f"{compiled['compile_seconds_at_warmup']:.1f} s of Dynamo + Inductor compiling over "
        f"{compiled['warmup_rounds']} warm-up round(s) of {compiled['warmup_seconds']:.1f} s "
        f"({compiled['backend']}, {compiled['inductor_cache']} cache); "
        f"{compiled['graphs_after_warmup']} graph(s) compiled in the timed and profiled rounds."
    )


def render_breakdown(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    names = list(result["systems"])
    lines = [
        f"#### Where a training step goes: {workload['name']} (torch.profiler, self CPU time)",
        "",
        "| scope / ops | " + " | ".join(f"{VARIANT_LABELS.get(n, n)} ms/step" for n in names) + " |",
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
        "| wall time per profiled step | "
        + " | ".join(f"{result['systems'][n]['ms_per_step']:.1f}" for n in names)
        + " |"
    )
    return lines + [""]


# ------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["sst2-minilm", "conll2003-minilm"], choices=list(WORKLOADS)
    )
    parser.add_argument("--systems", nargs="+", default=list(PROFILED), choices=list(PROFILED))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager: smoke only)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "ptuning-speed")
    parser.add_argument("--smoke", metavar="MODEL_DIR", help="tiny model folder: a seconds-long run")
    parser.add_argument("--smoke-task", choices=("sst2", "conll2003"), default="sst2")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    names = available_systems(tuple(args.systems))
    if args.smoke:
        workload = Workload(
            "smoke", args.smoke_task, "smoke", 8, 8, repeats=1, batch_size=4, eval_batch_size=4
        )
        runs = [(workload, args.smoke)]
    else:
        runs = [(WORKLOADS[name], None) for name in args.workloads]
    for workload, folder in runs:
        result = measure_profile(workload, args.data_root, args.work_dir, names, args.backend, folder)
        write(args.results_dir / f"profile-{workload.name}.json", result)
        print("\n".join(render_summary(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
