"""Examples per second of every system, training and inference, in interleaved rounds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from speed_common import PREFIX_LENGTH, Workload, environment, load_average, load_data, model_folder
from speed_flops import Shape, gemm_rate, step_flops
from speed_systems import BASELINE, SYSTEM_LABELS, build_system

from ptuning.training.inference import feature_length


def measure_throughput(
    workload: Workload, data_root: Path, work_dir: Path, names: list[str]
) -> dict[str, Any]:
    """Interleaved rounds: every round trains (then infers) once with every system, in rotated order."""
    folder = model_folder(workload.backbone, work_dir)
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    systems = {name: build_system(name, folder, data, workload) for name in names}
    shape = Shape.of(folder)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: defaultdict(list) for mode in ("train", "infer")
    }
    rates, loads = [], [load_average()]
    for index in range(workload.warmup + workload.repeats):
        rotated = names[index % len(names) :] + names[: index % len(names)]
        for mode in ("train", "infer"):
            for name in rotated:
                system = systems[name]
                result = system.train_round(index) if mode == "train" else system.infer_round(index)
                if index < workload.warmup:
                    continue
                flops = (
                    step_flops(shape, result.shapes, PREFIX_LENGTH, mode == "train")
                    if result.shapes
                    else None
                )
                rounds[mode][name].append(
                    {
                        "seconds": result.seconds,
                        "examples_per_second": result.examples / result.seconds,
                        "tokens": result.tokens,
                        "gflops_per_second": flops / result.seconds / 1e9 if flops else None,
                    }
                )
        rates.append(gemm_rate())
        loads.append(load_average())
        print(
            f"round {index + 1}/{workload.warmup + workload.repeats} done (load {loads[-1]:.1f})", flush=True
        )
    summary = {mode: summarize(rounds[mode], names) for mode in rounds}
    return {
        "workload": asdict(workload),
        "systems": names,
        "baseline": BASELINE if BASELINE in names else names[0],
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "mean_train_tokens": statistics.mean(feature_length(f) for f in data.train),
        "gemm_gflops": statistics.median(rates),
        "gemm_rounds": rates,
        "threads": torch.get_num_threads(),
        "load_average": loads,
        "summary": summary,
        "rounds": {mode: dict(r) for mode, r in rounds.items()},
        **environment(),
    }


def summarize(rounds: dict[str, list[dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    """Median throughput per system and median per-round ratio of ours to each other system."""
    out: dict[str, Any] = {}
    for name in names:
        rates = [r["examples_per_second"] for r in rounds[name]]
        flops = [r["gflops_per_second"] for r in rounds[name] if r["gflops_per_second"]]
        out[name] = {
            "examples_per_second": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "gflops_per_second": statistics.median(flops) if flops else None,
        }
        if name != "ours" and "ours" in rounds:
            ratios = [
                o["examples_per_second"] / t["examples_per_second"]
                for o, t in zip(rounds["ours"], rounds[name], strict=True)
            ]
            out[name]["ours_speedup"] = statistics.median(ratios)
    return out


def render_throughput(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    loads = result["load_average"]
    lines = [
        f"#### Throughput: {workload['name']}",
        "",
        f"{workload['task']} on {workload['backbone']}: {result['train_examples']} train examples (mean "
        f"{result['mean_train_tokens']:.1f} tokens) and {result['dev_examples']} dev examples per round; "
        f"{workload['warmup']} warm-up + {workload['repeats']} interleaved rounds, medians; "
        f"{result['threads']} torch thread(s); fp32 GEMM (2048^3) {result['gemm_gflops']:.0f} GFLOP/s (median of "
        f"the rounds); 1-min load average {min(loads):.1f}-{max(loads):.1f} on {result['cpus']} cores; "
        f"measured {result['measured_at']}.",
        "",
        "| system | train ex/s | ours ÷ this (train) | train GFLOP/s (% of GEMM) | infer ex/s | ours ÷ this (infer) |",
        "|---|---|---|---|---|---|",
    ]
    for name in result["systems"]:
        train, infer = result["summary"]["train"][name], result["summary"]["infer"][name]
        flops = train["gflops_per_second"]
        efficiency = "–" if not flops else f"{flops:.0f} ({100 * flops / result['gemm_gflops']:.0f} %)"
        lines.append(
            f"| {SYSTEM_LABELS[name]} | {train['examples_per_second']:.1f} | "
            f"{_ratio(train)} | {efficiency} | {infer['examples_per_second']:.1f} | {_ratio(infer)} |"
        )
    return lines + [""]


def _ratio(entry: dict[str, Any]) -> str:
    return "1 (itself)" if "ours_speedup" not in entry else f"{entry['ours_speedup']:.2f}x"
