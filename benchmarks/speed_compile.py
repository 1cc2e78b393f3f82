"""Does ``--compile`` pay on this CPU? The same model eager and with its backbone compiled, side by side.

Two copies of ``ours`` (speed_systems.PromptSystem: sdpa, dynamic padding, length-grouped batches for
training, longest-first batches for inference) with the same weights; one gets
``core.compilation.compile_backbone`` (torch.compile, dynamic shapes). A warm-up round of each, where the
compiled copy pays its compile start-up, then interleaved rounds (the order alternates every round, both see
the same batches). Reported per mode: median examples/s, the median of the per-round ratio compiled/eager,
the start-up (the compiled warm-up round minus the eager one, and Dynamo's own compile seconds), the graphs
compiled during warm-up and after it (recompiles: shapes the dynamic graph did not cover), and how many
examples a run must process before the start-up is paid back. The start-up is measured cold (Dynamo reset and
a fresh Inductor cache folder per workload), as on a first run; a later run on the same machine reuses
Inductor's on-disk kernels and starts faster (not measured here).

    python benchmarks/speed_compile.py                          # sst2-minilm and conll2003-minilm, 2 threads
    python benchmarks/speed_compile.py --workloads sst2-minilm --repeats 3
    python benchmarks/speed_compile.py --backbone-dtype bf16      # both copies with a bf16 backbone
    python benchmarks/speed_compile.py --smoke TINY_MODEL_DIR --backend eager   # seconds: the code paths
    python benchmarks/speed_compile.py --smoke TINY_MODEL_DIR --smoke-task conll2003 --backend eager

Writes benchmarks/results/speed/compile-<workload>.json (``-bf16`` before ``.json`` for a bf16 backbone).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from speed_common import (
    DATA_ROOT,
    RESULTS_DIR,
    WORKLOADS,
    Workload,
    cold_compile_start,
    environment,
    load_average,
    load_data,
    model_folder,
    write,
)
from speed_systems import PromptSystem

from ptuning.core.compilation import CompileStats
from ptuning.training.inference import feature_length

MODES = ("train", "infer")
SYSTEMS = ("eager", "compiled")


def measure_compile(
    workload: Workload,
    data_root: Path,
    work_dir: Path,
    backend: str = "inductor",
    backbone_dtype: str = "fp32",
) -> dict[str, Any]:
    """Warm-up (start-up measured), then interleaved rounds of the eager and the compiled copy."""
    cold_compile_start(work_dir)
    folder = model_folder(workload.backbone, work_dir)
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    systems = {
        name: PromptSystem(
            folder,
            data,
            workload,
            backbone_dtype=backbone_dtype,
            compile_backend=backend if name == "compiled" else None,
        )
        for name in SYSTEMS
    }
    systems["compiled"].model.load_state_dict(
        systems["eager"].model.state_dict()
    )  # before any graph folds it

    warmup: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    before = CompileStats.now()
    for index in range(workload.warmup):
        for mode in MODES:
            for name in SYSTEMS:
                warmup[mode][name] = warmup[mode].get(name, 0.0) + _round(systems[name], mode, index).seconds
    at_warmup = CompileStats.now().since(before)

    rounds: dict[str, dict[str, list[float]]] = {mode: {name: [] for name in SYSTEMS} for mode in MODES}
    loads = [load_average()]
    after_warmup = CompileStats.now()
    for index in range(workload.warmup, workload.warmup + workload.repeats):
        order = SYSTEMS if index % 2 == 0 else SYSTEMS[::-1]
        for mode in MODES:
            for name in order:
                result = _round(systems[name], mode, index)
                rounds[mode][name].append(result.examples / result.seconds)
        loads.append(load_average())
        print(f"round {index + 1 - workload.warmup}/{workload.repeats} (load {loads[-1]:.1f})", flush=True)
    recompiled = CompileStats.now().since(after_warmup)

    summary = {mode: _summarize(rounds[mode], warmup[mode], _examples(data, mode)) for mode in MODES}
    return {
        "workload": asdict(workload),
        "backend": backend,
        "backbone_dtype": backbone_dtype,
        "inductor_cache": "cold",  # a fresh TORCHINDUCTOR_CACHE_DIR: start-up as on a first run
        "threads": torch.get_num_threads(),
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "mean_train_tokens": statistics.mean(feature_length(f) for f in data.train),
        "distinct_train_lengths": len({feature_length(f) for f in data.train}),
        "compile": {
            "graphs_at_warmup": at_warmup.graphs,
            "compile_seconds_at_warmup": round(at_warmup.seconds, 2),
            "graphs_after_warmup": recompiled.graphs,  # recompiles: > 0 means shapes the graph missed
            "compile_seconds_after_warmup": round(recompiled.seconds, 2),
        },
        "summary": summary,
        "rounds_examples_per_second": rounds,
        "load_average": loads,
        **environment(),
    }


def compile_results_name(workload: str, backbone_dtype: str) -> str:
    """``compile-<workload>.json`` (fp32, as before) or ``compile-<workload>-bf16.json``."""
    return f"compile-{workload}{'' if backbone_dtype == 'fp32' else '-' + backbone_dtype}.json"


def _round(system: PromptSystem, mode: str, seed: int):
    return system.train_round(seed) if mode == "train" else system.infer_round(seed)


def _examples(data: Any, mode: str) -> int:
    return len(data.train) if mode == "train" else len(data.dev)


def _summarize(rates: dict[str, list[float]], warmup: dict[str, float], examples: int) -> dict[str, Any]:
    """Median examples/s per system, median per-round ratio, start-up and the examples that repay it."""
    eager, compiled = rates["eager"], rates["compiled"]
    ratios = [c / e for c, e in zip(compiled, eager, strict=True)]
    startup = warmup["compiled"] - warmup["eager"]  # the same examples, once each: the extra is compiling
    saved_per_example = 1 / statistics.median(eager) - 1 / statistics.median(compiled)
    return {
        "examples_per_second": {"eager": statistics.median(eager), "compiled": statistics.median(compiled)},
        "ratio_compiled_to_eager": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "warmup_seconds": warmup,
        "startup_seconds": startup,
        # examples after which compiling has paid for itself (None: the compiled copy is not faster)
        "break_even_examples": round(startup / saved_per_example) if saved_per_example > 0 else None,
        "examples_per_round": examples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["sst2-minilm", "conll2003-minilm"], choices=list(WORKLOADS)
    )
    parser.add_argument("--repeats", type=int, help="override the workloads' interleaved rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backbone-dtype", choices=("fp32", "bf16"), default="fp32", help="both copies' backbone storage"
    )
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager: smoke only)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "ptuning-speed")
    parser.add_argument("--smoke", metavar="MODEL_DIR", help="tiny model folder: a seconds-long run")
    parser.add_argument(
        "--smoke-task", choices=("sst2", "conll2003"), default="sst2", help="the smoke's task"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        workloads = [
            Workload("smoke", args.smoke_task, args.smoke, 8, 8, repeats=2, batch_size=4, eval_batch_size=4)
        ]
    else:
        workloads = [WORKLOADS[name] for name in args.workloads]
    for workload in workloads:
        if args.repeats is not None:
            workload = replace(workload, repeats=args.repeats)
        result = measure_compile(workload, args.data_root, args.work_dir, args.backend, args.backbone_dtype)
        for mode in MODES:
            row = result["summary"][mode]
            print(
                f"{workload.name} {mode}: eager {row['examples_per_second']['eager']:.1f} ex/s, compiled "
                f"{row['examples_per_second']['compiled']:.1f} ex/s (x{row['ratio_compiled_to_eager']:.2f}), "
                f"start-up {row['startup_seconds']:.1f} s",
                flush=True,
            )
        print(f"{workload.name} compile: {result['compile']}", flush=True)
        write(args.results_dir / compile_results_name(workload.name, args.backbone_dtype), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
