"""Quality benchmark: P-tuning v2 against fine-tuning, prefix-tuning (MLP), prompt tuning and a linear probe.

Every method trains on the same data for the same number of examples (the task's ``Budget``) through
``ptuning.training.engine.train``; only the method and its learning rate / prefix length differ. The grid is
cut into cells that each finish in minutes to an hour on a 2-core CPU, so that a long campaign survives
interruptions and a shared machine:

    task:method:sweep          each setting of the method's small sweep, seed 42, scored on dev
    task:method:seeds          the best sweep setting (by dev) again with seeds 43 and 44
    task:ptuning-v2:ablation-NAME   one change to P-tuning v2's chosen setting, seed 42
    task:finetune:ablation-pooling  the same head change to fine-tuning's chosen setting, seed 42
    task:ptuning-v2:confirm-NAME    an ablation's changes that beat the chosen setting at seed 42, again with
                                    seeds 43 and 44 (the second scale point: a gain is then compared over
                                    three seeds, like the methods)

Each finished run is one JSON line in ``benchmarks/results/quality/<task>.jsonl`` (``--backbone minilm``,
the default) or ``benchmarks/results/quality/<backbone>/<task>.jsonl`` (any other backbone); a run whose key
(task, method, setting, seed, budget) is already there is skipped, so any command can be repeated. The budget
fingerprint in the key names the backbone too, so two backbones' runs never mix even in one file. A run that is
killed continues from its last saved state (every 50 updates and every epoch end, in the results folder's
``.in-progress/``) when the same command is started again; its record says after how many batches.

    python benchmarks/quality.py --list                  # every cell and whether it is done
    python benchmarks/quality.py --cell sst2:ptuning-v2:sweep
    python benchmarks/quality.py --run-all               # every pending cell in order (one process each)
    python benchmarks/quality.py --run-all --only 'sst2:finetune:*' 'sst2:ptuning-v2:*'   # these, in this order
    python benchmarks/quality.py --table                 # Markdown tables from the results files
    python benchmarks/quality.py --table --update-doc docs/RESULTS.md
    python benchmarks/quality.py --backbone mpnet --plan  # every cell, estimated CPU/GPU time, commands

A run outside the grid (a longer schedule, another dtype) takes a task's budget and changes it by a setting;
it is appended to its own file, never to the tables' (``epochs_factor`` multiplies the budget's epochs):

    python benchmarks/quality.py --backbone mpnet --extra superglue-rte:ptuning-v2 --seed 42 \
        --setting '{"learning_rate": 0.01, "prefix_length": 16, "warmup_ratio": 0.1, "epochs_factor": 4,
                    "backbone_dtype": "bf16"}' \
        --record benchmarks/results/quality/mpnet/reruns/superglue-rte-ptuning-v2-long-bf16.jsonl

The code is split by question: ``quality_protocol`` (what is measured: budgets, sweeps, ablations, cells),
``quality_results`` (what has run: the results files, chosen settings, cell status), ``quality_runner``
(running the pending runs), ``quality_tables`` (the Markdown tables); ``quality_plan``, ``quality_curves`` and
``quality_scaling`` build on them. This file is only the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quality_protocol import BACKBONES, SCALES, SWEEP_SEED, Cell
from quality_results import DATA_ROOT, REPO, RESULTS_DIR, Bench, all_cells, cell_status
from quality_runner import backbone_problem, run_all, run_cell, run_extra
from quality_tables import render_tables, update_doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cell", action="append", default=[], help="task:method:phase; repeatable")
    parser.add_argument("--run-all", action="store_true", help="run every unfinished cell in order")
    parser.add_argument("--tasks", nargs="*", help="with --run-all: only these tasks")
    parser.add_argument("--run", type=int, help="with one --cell: only its run number RUN (0-based)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PATTERN",
        help="with --run-all: only cells whose name matches a pattern (sst2:finetune:*), in the patterns' order",
    )
    parser.add_argument("--jobs", type=int, default=1, help="with --run-all: runs at a time (default 1)")
    parser.add_argument("--deadline", type=float, help="with --run-all: start no run after this many seconds")
    parser.add_argument("--list", action="store_true", help="print every cell and its status")
    parser.add_argument("--table", action="store_true", help="print the Markdown tables")
    parser.add_argument(
        "--update-doc", type=Path, help="with --table: write them between the markers of this file"
    )
    parser.add_argument(
        "--backbone",
        choices=tuple(BACKBONES),
        default="minilm",
        help="the real backbone: minilm (22.6 M, the default) or mpnet (109.5 M); each has its own results",
    )
    parser.add_argument(
        "--plan", action="store_true", help="print every cell, its estimated CPU/GPU time and the commands"
    )
    parser.add_argument(
        "--scaling-ablations",
        action="store_true",
        help="minilm: make the scaling ablations (long-prefix, pooling, warmup) cells too (other backbones: always)",
    )
    parser.add_argument("--extra", metavar="TASK:METHOD", help="one run outside the grid (with --setting)")
    parser.add_argument(
        "--setting", type=json.loads, default={}, help="with --extra: a JSON object of changes"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=SWEEP_SEED,
        help=f"with --extra: the seed (default {SWEEP_SEED}, the sweeps')",
    )
    parser.add_argument("--record", type=Path, help="with --extra: the JSON-lines file to append the run to")
    parser.add_argument("--results-dir", type=Path, help="default: benchmarks/results/quality[/<backbone>]")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--model", help="default: the backbone's packaged short name (a folder for tests)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1, see above)")
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default="full",
        help="full: the 1x budgets; large: the larger budgets (LARGE_BUDGETS); smoke: a few examples (CI)",
    )
    args = parser.parse_args(argv)
    spec = BACKBONES[args.backbone]
    results_dir = args.results_dir or RESULTS_DIR / spec.results_subdir
    model = args.model or spec.model
    bench = Bench(
        results_dir, args.data_root, model, args.scale, args.threads, args.backbone, args.scaling_ablations
    )
    if args.cell or args.run_all or args.extra:
        problem = backbone_problem(bench.model)
        if problem:
            parser.exit(2, f"quality.py: {problem}\n")
    if args.plan:
        from quality_plan import render_plan  # the estimate reads MiniLM's results; only when asked

        print(render_plan(bench, args.jobs))
    if args.list:
        for cell in all_cells(bench):
            print(f"{cell.name:45s} {cell_status(bench, cell)}")
    if args.run is not None and len(args.cell) != 1:
        parser.error("--run needs exactly one --cell")
    for text in args.cell:
        cell = Cell.parse(text)
        if cell.method not in bench.sweeps:
            parser.error(f"scale {bench.scale} runs only {', '.join(bench.sweeps)}; got {cell.method}")
        run_cell(bench, cell, args.run)
    if args.extra:
        task, _, method = args.extra.partition(":")
        if task not in bench.budgets or method not in bench.sweeps or args.record is None:
            parser.error(
                f"--extra takes TASK:METHOD of this scale's grid and needs --record; got {args.extra}"
            )
        run_extra(bench, task, method, args.setting, args.seed, args.record)
    if args.run_all:
        return run_all(bench, args.tasks, args.jobs, args.deadline, args.only)
    if args.table:
        tables = render_tables(bench)
        if args.update_doc:
            update_doc(args.update_doc, tables, args.scale, args.backbone)
        print(tables)
    if not (args.list or args.cell or args.run_all or args.table or args.plan or args.extra):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    raise SystemExit(main())
