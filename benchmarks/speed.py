"""Speed and memory benchmark: our P-tuning v2 training and inference against PEFT and the reference recipe.

Systems (all P-tuning v2 with a 16-slot prefix, batch 32 for training and 64 for inference, AdamW at lr 1e-2
without weight decay as ptuning train and the Trainer run it; Trainer systems predict at eval batches 16, 32
and 64 and their fastest counts, speed_systems.TRAINER_EVAL_BATCH_SIZES):

    ours            PromptModel, sdpa, dynamic padding, length-grouped batches (training) and
                    longest-first batches of ~64 x 32 padded tokens, <= 10 % of them padding (inference)
                    -- what ``ptuning train`` / ``predict_outputs`` do
    ours-bf16       ours with the frozen backbone stored in bf16 (``--backbone-dtype bf16``); prefix, head,
                    optimizer and loss fp32
    ours-compiled, ours-bf16-compiled
                    ours and ours-bf16 with ``--compile`` (the frozen weights folded into the inference graph)
    peft-trainer    (a) PEFT PrefixTuningConfig(prefix_projection=False) on AutoModelFor{Sequence,
                    Token}Classification, trained with HF Trainer's defaults; inputs padded to max_length=128
                    as with ``tokenizer(..., padding="max_length")`` + ``default_data_collator``
    peft-trainer-dynamic
                    (a') the same, with HF's dynamic-padding collator (DataCollatorWithPadding /
                    DataCollatorForTokenClassification) and Trainer's random batches
    peft-trainer-grouped
                    (a'') the same, with length-grouped batches as well
                    (``TrainingArguments(train_sampling_strategy="group_by_length")``): what a careful user
                    runs, and the baseline the headline names
    peft-trainer-grouped-bf16
                    (a'') with the model loaded in bf16 (``from_pretrained(..., dtype=torch.bfloat16)``): the
                    bf16 baseline
    peft-trainer-grouped-autocast
                    (a'') with fp32 weights and ``TrainingArguments(bf16=True)`` (CPU autocast)
    peft-trainer-grouped-compiled, peft-trainer-grouped-bf16-compiled
                    (a'') and the bf16 (a'') with ``TrainingArguments(torch_compile=True)``
    peft-our-batching
                    (b) the same PEFT model in our loop with our batching: isolates the prefix mechanism
    reference       (c) the reference P-tuning v2 recipe on our core: every batch padded to 128, eager
                    attention, shuffled batches, positions shifted by P

Every system is loaded once into one process; rounds are interleaved (each round runs every system, in a
rotated order) after warm-up rounds, and the median over rounds is reported, as are ratios to a baseline
taken round by round. That is what keeps the comparison fair on a machine shared with other jobs. Peak RSS
is measured per system in a fresh subprocess. The PEFT systems need PEFT 0.22, or PEFT 0.21.2 on transformers
<= 5.23 (``speed_common.peft_available``); each results file records the versions it ran with.

    python benchmarks/speed.py --throughput sst2-minilm       # also conll2003-minilm, sst2-bert-base, ...
    python benchmarks/speed.py --memory sst2-minilm
    python benchmarks/speed.py --scaling                      # step time vs prefix length and vs length
    python benchmarks/speed.py --profile sst2-minilm
    python benchmarks/speed.py --throughput sst2-minilm --systems ours ours-bf16 peft-trainer-grouped \
        peft-trainer-grouped-bf16 peft-trainer-grouped-autocast   # the bf16 rows
    python benchmarks/speed.py --accuracy                     # (a) vs ours at equal budget on SST-2
    python benchmarks/speed.py --time-to-target sst2 conll2003  # ours vs (a'') to 80 % acc / 70 F1 on dev
    python benchmarks/speed.py --table --update-doc docs/BENCHMARKS.md

This file is only the command line: each question lives in its own module beside it (speed_throughput.py,
speed_memory.py, speed_profile.py, speed_scaling.py, speed_accuracy.py, speed_time_to_target.py; systems in speed_systems.py
(ours with --pack-sequences or --compile, for the profile, in speed_variants.py), FLOP
counting and the fp32 / bf16 GEMM rates in speed_flops.py, shared data and constants in speed_common.py, the
doc tables in speed_report.py and the findings' targets table in speed_targets.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from speed_accuracy import measure_accuracy
from speed_common import DATA_ROOT, RESULTS_DIR, WORKLOADS, Workload, write
from speed_memory import measure_memory, probe_memory
from speed_profile import PROFILED, measure_profile
from speed_report import render_tables, replot, update_doc
from speed_scaling import measure_scaling, plot_scaling
from speed_systems import SYSTEMS, available_systems
from speed_throughput import measure_throughput
from speed_time_to_target import (
    BUDGETS,
    LEARNING_RATES,
    OURS_SYSTEMS,
    TARGET_SYSTEMS,
    TRAINERS,
    Recipe,
    engine_recipe,
    measure_time_to_target,
    smoke_budget,
)
from speed_work import measure_work

from ptuning.core.backbones import resolve_model_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--throughput", nargs="*", metavar="WORKLOAD", help=f"some of {', '.join(WORKLOADS)}")
    parser.add_argument("--memory", nargs="*", metavar="WORKLOAD")
    parser.add_argument("--work", nargs="*", metavar="WORKLOAD", help="GFLOP per example of each system")
    parser.add_argument("--memory-modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    parser.add_argument("--profile", nargs="*", metavar="WORKLOAD")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--accuracy-examples", type=int, default=4000)
    parser.add_argument("--accuracy-epochs", type=float, default=3.0)
    parser.add_argument("--time-to-target", nargs="*", choices=list(BUDGETS), metavar="TASK")
    parser.add_argument("--target-learning-rates", nargs="+", type=float, default=list(LEARNING_RATES))
    parser.add_argument("--target-seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--target-max-steps", type=int, help="override the step budget")
    parser.add_argument("--target-score", type=float, help="override the target (a fraction, e.g. 0.8)")
    parser.add_argument(
        "--target-weight-decay",
        type=float,
        help="every ours system: AdamW weight decay (an A/B; default: ptuning train's)",
    )
    parser.add_argument(
        "--target-max-grad-norm",
        type=float,
        help="every ours system: clip gradients to this norm (an A/B; default: ptuning train's); 0: no clipping",
    )
    parser.add_argument(
        "--systems",
        nargs="*",
        help="a subset of the systems (default: every throughput system; for --time-to-target "
        f"{', '.join(TARGET_SYSTEMS)}, the diagnoses only when named)",
    )
    parser.add_argument("--repeats", type=int, help="override the workloads' interleaved rounds")
    parser.add_argument("--table", action="store_true", help="print the Markdown tables (writes nothing)")
    parser.add_argument(
        "--update-doc", type=Path, help="with --table: rewrite the doc's tables and redraw scaling.png"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help=f"default: {RESULTS_DIR}; with --smoke a new temporary folder (smoke runs never join the results)",
    )
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "ptuning-speed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--smoke", type=str, metavar="MODEL_DIR", help="tiny model folder: a seconds-long run"
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # workload:system:mode, in a fresh process
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    workloads = dict(WORKLOADS)
    if args.smoke:
        workloads = {
            "smoke": Workload("smoke", "sst2", args.smoke, 8, 8, repeats=1, batch_size=4, eval_batch_size=4)
        }
    names = available_systems(tuple(args.systems or SYSTEMS))

    def chosen(requested: list[str] | None) -> list[Workload]:
        picked = [workloads[n] for n in (requested or list(workloads))]
        return [replace_repeats(w, args.repeats) for w in picked]

    if args.probe:
        name, system, mode = args.probe.split(":")
        print(json.dumps(probe_memory(workloads[name], system, mode, args.data_root, args.work_dir)))
        return 0
    if args.results_dir is None:
        args.results_dir = smoke_results_dir() if args.smoke else RESULTS_DIR
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if args.throughput is not None:
        for workload in chosen(args.throughput):
            result = measure_throughput(workload, args.data_root, args.work_dir, names)
            write(args.results_dir / f"throughput-{workload.name}.json", result)
    if args.work is not None:
        for workload in chosen(args.work):
            write(
                args.results_dir / f"work-{workload.name}.json",
                measure_work(workload, args.data_root, args.work_dir),
            )
    if args.memory is not None:
        for workload in chosen(args.memory):
            write(
                args.results_dir / f"memory-{workload.name}.json",
                measure_memory(
                    workload,
                    args.data_root,
                    args.work_dir,
                    names,
                    args.memory_modes,
                    ["--smoke", args.smoke] if args.smoke else [],
                ),
            )
    if args.profile is not None:
        for workload in chosen(args.profile):
            profiled = [n for n in names if n in PROFILED]
            write(
                args.results_dir / f"profile-{workload.name}.json",
                measure_profile(workload, args.data_root, args.work_dir, profiled),
            )
    if args.scaling:
        if args.smoke:
            result = measure_scaling(args.smoke, (0, 8), (8, 16), 2, 8, 8, repeats=1)
        else:
            result = measure_scaling(
                resolve_model_path("minilm"),
                (0, 8, 16, 64, 128, 256),
                (16, 32, 64, 128, 256),
                32,
                64,
                16,
                args.repeats or 5,
            )
        write(args.results_dir / "scaling.json", result)
        plot_scaling(result, args.results_dir / "scaling.png")
    if args.accuracy:
        write(
            args.results_dir / "accuracy.json",
            measure_accuracy(args.data_root, args.accuracy_examples, args.accuracy_epochs),
        )
    if args.time_to_target is not None:
        for task in args.time_to_target or list(BUDGETS):
            budget = smoke_budget(task) if args.smoke else BUDGETS[task]
            if args.target_score is not None or args.target_max_steps:
                budget = replace(
                    budget,
                    target=budget.target if args.target_score is None else args.target_score,
                    max_steps=args.target_max_steps or budget.max_steps,
                )
            measure_time_to_target(
                budget,
                args.smoke or resolve_model_path("minilm"),
                args.data_root,
                args.results_dir / f"time-to-target-{task}.jsonl",
                [n for n in TRAINERS if n in (args.systems or TARGET_SYSTEMS)],
                args.target_learning_rates,
                args.target_seeds,
                ours_recipes(args.target_weight_decay, args.target_max_grad_norm),
            )
    if args.table:  # prints; only --update-doc writes (the doc, and the figure redrawn from its result)
        tables = render_tables(args.results_dir)
        if args.update_doc:
            replot(args.results_dir)
            update_doc(args.update_doc, tables, args.results_dir)
        print(tables)
    return 0


def replace_repeats(workload: Workload, repeats: int | None) -> Workload:
    return workload if repeats is None else replace(workload, repeats=repeats)


def smoke_results_dir() -> Path:
    """Where a --smoke run writes without --results-dir: a fresh temporary folder, because a tiny model's
    seconds in benchmarks/results would join the measured series (and the tables that read them)."""
    folder = Path(tempfile.mkdtemp(prefix="ptuning-speed-smoke-"))
    print(f"--smoke: results in {folder}", flush=True)
    return folder


def ours_recipes(weight_decay: float | None, max_grad_norm: float | None) -> dict[str, Recipe]:
    """--target-weight-decay / --target-max-grad-norm (0: no clipping) for every system our loop trains (the
    diagnoses and --backbone-dropout 0 too); the Trainer systems keep the Trainer's recipe."""
    recipe = engine_recipe()
    if weight_decay is not None:
        recipe = replace(recipe, weight_decay=weight_decay)
    if max_grad_norm is not None:
        recipe = replace(recipe, max_grad_norm=max_grad_norm or None)
    return {system: recipe for system in OURS_SYSTEMS}


if __name__ == "__main__":
    raise SystemExit(main())
