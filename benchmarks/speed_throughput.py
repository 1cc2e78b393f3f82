"""Examples per second of every system, training and inference, in interleaved rounds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from speed_common import PREFIX_LENGTH, Workload, environment, load_average, load_data, model_folder
from speed_flops import Shape, describe_gemm_sizes, gemm_rate, gemm_sizes, step_flops
from speed_systems import (
    BASELINE,
    BF16_BASELINE,
    BF16_SYSTEMS,
    CONTENDERS,
    SYSTEM_LABELS,
    applicable_systems,
    build_system,
)

from ptuning.training.inference import feature_length


def measure_throughput(
    workload: Workload, data_root: Path, work_dir: Path, names: list[str]
) -> dict[str, Any]:
    """Interleaved rounds: every round trains (then infers) once with every system, in rotated order."""
    # A workload's models are new objects: the graphs compiled for the previous workload's would only count
    # towards Dynamo's recompile limit (8 per function), and past it a compiled system silently runs eager.
    torch._dynamo.reset()
    folder = model_folder(workload.backbone, work_dir)
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    names = applicable_systems(names, data)
    systems = {name: build_system(name, folder, data, workload) for name in names}
    shape = Shape.of(folder)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: defaultdict(list) for mode in ("train", "infer")
    }
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    loads = [load_average()]
    for index in range(workload.warmup + workload.repeats):
        rotated = names[index % len(names) :] + names[: index % len(names)]
        for mode in ("train", "infer"):
            for name in rotated:
                system = systems[name]
                result = system.train_round(index) if mode == "train" else system.infer_round(index)
                if index < workload.warmup:
                    continue
                flops = (
                    step_flops(shape, result.shapes, PREFIX_LENGTH, mode == "train", result.first_token_only)
                    if result.shapes
                    else None
                )
                rounds[mode][name].append(
                    {
                        "seconds": result.seconds,
                        "examples_per_second": result.examples / result.seconds,
                        "tokens": result.tokens,
                        "gflops_per_second": flops / result.seconds / 1e9 if flops else None,
                        **({"eval_batch_size": result.eval_batch_size} if result.eval_batch_size else {}),
                    }
                )
        for dtype, measured in rates.items():
            measured.append(gemm_rate(dtype=dtype))
        loads.append(load_average())
        print(
            f"round {index + 1}/{workload.warmup + workload.repeats} done (load {loads[-1]:.1f})", flush=True
        )
    summary = {mode: summarize(rounds[mode], names) for mode in rounds}
    return {
        "workload": asdict(workload),
        "systems": names,
        "baseline": BASELINE if BASELINE in names else names[0],
        "bf16_baseline": BF16_BASELINE if BF16_BASELINE in names else None,
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "split_sizes": list(data.split_sizes),
        "mean_train_tokens": statistics.mean(feature_length(f) for f in data.train),
        "gemm_gflops": statistics.median(rates["fp32"]),  # fp32, the name older result files use
        "gemm_rounds": rates["fp32"],
        "gemm_bf16_gflops": statistics.median(rates["bf16"]),
        "gemm_bf16_rounds": rates["bf16"],
        "gemm_sizes": gemm_sizes(),
        "threads": torch.get_num_threads(),
        "load_average": loads,
        "summary": summary,
        "rounds": {mode: dict(r) for mode, r in rounds.items()},
        **environment(),
    }


def summarize(rounds: dict[str, list[dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    """Median throughput per system and the median per-round ratio of each contender (ours, ours-bf16) to
    each other system: ``<contender>_speedup`` (``ours_speedup`` is the key older result files have). A round
    without ``gflops_per_second`` (no FLOP model for its shape, e.g. the GPU table's) leaves that median None."""
    out: dict[str, Any] = {}
    for name in names:
        rates = [r["examples_per_second"] for r in rounds[name]]
        flops = [r["gflops_per_second"] for r in rounds[name] if r.get("gflops_per_second")]
        out[name] = {
            "examples_per_second": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "gflops_per_second": statistics.median(flops) if flops else None,
        }
        for contender in CONTENDERS:
            if name != contender and contender in rounds:
                ratios = [
                    o["examples_per_second"] / t["examples_per_second"]
                    for o, t in zip(rounds[contender], rounds[name], strict=True)
                ]
                out[name][f"{contender}_speedup"] = statistics.median(ratios)
    return out


def render_throughput(result: dict[str, Any]) -> list[str]:
    """One table per workload. Older result files (no bf16 GEMM reference, no ours-bf16) render as before,
    with "not measured" where a newer column has nothing to show."""
    workload = result["workload"]
    loads = result["load_average"]
    bf16_gemm = result.get("gemm_bf16_gflops")
    # ratio columns for ours and ours-bf16; the compiled contenders' ratios are in the targets table
    contenders = [c for c in CONTENDERS[:2] if c in result["systems"]] or ["ours"]
    bf16_reference = "not measured" if bf16_gemm is None else f"{bf16_gemm:.0f} GFLOP/s"
    lines = [
        f"#### Throughput: {workload['name']}",
        "",
        f"{workload['task']} on {workload['backbone']}: {result['train_examples']} train examples (mean "
        f"{result['mean_train_tokens']:.1f} tokens) and {result['dev_examples']} dev examples per round"
        + (
            f", sampled from splits of {result['split_sizes'][0]:,} and {result['split_sizes'][1]:,} (HF's "
            "length grouping sizes its megabatches for those); "
            if "split_sizes" in result
            else " (HF's length grouping sized its megabatches for the sample alone, 1-2 batches); "
        )
        + f"{workload['warmup']} warm-up + {workload['repeats']} interleaved rounds, medians; "
        f"{result['threads']} torch thread(s); GEMM ({describe_gemm_sizes(result.get('gemm_sizes'))}, median of "
        f"the rounds) fp32 "
        f"{result['gemm_gflops']:.0f} GFLOP/s, bf16 {bf16_reference}; 1-min load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {result['cpus']} cores; measured {result['measured_at']}.",
        "",
        "| system | train ex/s | "
        + "".join(f"{c} ÷ this (train) | " for c in contenders)
        + "train GFLOP/s (% of fp32 GEMM / % of bf16 GEMM) | infer ex/s | "
        + " | ".join(f"{c} ÷ this (infer)" for c in contenders)
        + " |",
        "|---|---|" + "---|" * len(contenders) + "---|---|" + "---|" * len(contenders),
    ]
    for name in result["systems"]:
        train, infer = result["summary"]["train"][name], result["summary"]["infer"][name]
        lines.append(
            f"| {SYSTEM_LABELS[name]} | {train['examples_per_second']:.1f} | "
            + "".join(f"{speedup_cell(train, c, name)} | " for c in contenders)
            + f"{_efficiency(train['gflops_per_second'], result['gemm_gflops'], bf16_gemm, name)} | "
            f"{infer['examples_per_second']:.1f} | "
            + " | ".join(speedup_cell(infer, c, name) for c in contenders)
            + " |"
        )
    return lines + [""]


def _efficiency(flops: float | None, fp32_gemm: float, bf16_gemm: float | None, name: str) -> str:
    """The step's FLOP rate as a share of both GEMM references; the one matching the system's dtype in bold."""
    if not flops:
        return "–"
    fp32 = f"{100 * flops / fp32_gemm:.0f} %"
    bf16 = "not measured" if bf16_gemm is None else f"{100 * flops / bf16_gemm:.0f} %"
    if name in BF16_SYSTEMS:
        bf16 = f"**{bf16}**"
    else:
        fp32 = f"**{fp32}**"
    return f"{flops:.0f} ({fp32} / {bf16})"


def speedup_cell(entry: dict[str, Any], contender: str, name: str) -> str:
    """A table cell: the contender's median per-round speed-up over system ``name``."""
    if name == contender:
        return "1 (itself)"
    key = f"{contender}_speedup"
    return "not measured" if key not in entry else f"{entry[key]:.2f}x"
