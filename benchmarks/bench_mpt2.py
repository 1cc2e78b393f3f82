"""MPT-2 → transfer vs plain P-tuning v2 on low-resource SuperGLUE tasks (packaged MiniLM, CPU budget).

1. MPT-2: one shared prefix trained jointly on source tasks that are NOT compared here (SST-2, WiC, WSC;
   temperature sampling, T=2), so no target data reaches the prefix before its own run.
2. For each target (COPA, RTE, BoolQ) and seed, single-task runs with the same target budget (updates,
   batch, learning rate, data, one evaluation at the end, no selection on dev): ``plain`` starts from a
   random prefix, ``mpt2`` from the MPT-2 prefix (``init_prefix_from``; the head is new).
3. Optionally (``--loo-targets``), a leave-one-out arm ``mpt2-loo``: MPT-2 on every other task of the pool,
   the other targets included (closer to the paper's mix of related datasets).

Scores are dev accuracy (BoolQ: eval-from-val, a third of val.jsonl that no run trains on). Finished runs
are skipped when the command is run again, so an interrupted benchmark resumes. Results go to
OUTPUT/results.json and a markdown table on stdout.

    python benchmarks/bench_mpt2.py --output-dir outputs/bench_mpt2            # ~1.5 h on a busy 2-core CPU
    python benchmarks/bench_mpt2.py --output-dir outputs/bench_mpt2 --targets copa --loo-targets copa
    python benchmarks/bench_mpt2.py --output-dir /tmp/mpt2-smoke --quick       # a minute, plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ptuning.training.config import TrainConfig
from ptuning.training.engine import train
from ptuning.training.multitask import train_multitask

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# registry task -> (data folder, train split, dev split)
SOURCES = {
    "copa": ("copa", "train", "dev"),
    "superglue-rte": ("rte", "train", "dev"),
    "boolq": ("boolq", "train-from-val", "eval-from-val"),
    "wic": ("wic", "train-from-val", "eval-from-val"),
    "sst2": ("sst2", "train", "dev"),
    "wsc": ("wsc", "train", "dev"),
}
MPT2_SOURCES = ("sst2", "wic", "wsc")  # none of them is a target
LOO_POOL = ("copa", "superglue-rte", "boolq", "wic", "sst2")  # leave-one-out arm: the pool minus the target
EVAL_CAP = {"boolq": 500}  # BoolQ's 1090 eval-from-val passages cost more than its training on this CPU
TARGETS = ("copa", "superglue-rte", "boolq")
COMMON = dict(
    model="minilm",
    method="ptuning-v2",
    prefix_length=16,
    learning_rate=1e-2,
    batch_size=16,
    eval_batch_size=64,
    max_length=128,
    epochs=1000.0,  # bounded by max_steps: every run has the same number of updates
    test_split="none",
    log_tensorboard=False,
    save_every_steps=None,
)


def mpt2_prefix(name: str, sources: list[str], args: argparse.Namespace, data: Path) -> tuple[str, dict]:
    """The MPT-2 checkpoint trained on ``sources`` (trained unless already there)."""
    output = Path(args.output_dir) / "mpt2" / name
    summary_path = output / "summary.json"
    if not summary_path.is_file():
        config = TrainConfig(
            **COMMON,
            output_dir=str(output),
            max_steps=args.mpt_steps,
            eval_every_steps=args.mpt_steps,
            max_train_samples=2000,
            max_eval_samples=args.max_eval_samples or 300,
            seed=0,
        )
        train_multitask(
            config,
            sources,
            {task: str(data / SOURCES[task][0]) for task in sources},
            sampling="temperature",
            temperature=2.0,
            splits={task: SOURCES[task][1:] for task in sources},
        )
    return str(output / "checkpoint"), json.loads(summary_path.read_text())


def target_run(
    target: str, seed: int, arm: str, init_from: str | None, args: argparse.Namespace, data: Path
) -> dict:
    output = Path(args.output_dir) / target / f"{arm}-seed{seed}"
    summary_path = output / "summary.json"
    if not summary_path.is_file():
        folder, train_split, dev_split = SOURCES[target]
        config = TrainConfig(
            **COMMON,
            task=target,
            data_dir=str(data / folder),
            train_split=train_split,
            dev_split=dev_split,
            output_dir=str(output),
            max_steps=args.target_steps,
            eval_every_steps=args.target_steps,  # one evaluation, at the end: no selection on dev
            max_eval_samples=args.max_eval_samples or EVAL_CAP.get(target),
            seed=seed,
            init_prefix_from=init_from,
        )
        train(config)
    summary = json.loads(summary_path.read_text())
    metric = summary["primary_metric"]
    return {"arm": arm, "seed": seed, "dev": summary["dev"][metric], "wall_seconds": summary["wall_seconds"]}


def describe(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="outputs/bench_mpt2")
    parser.add_argument("--data", default=str(DATA), help="folder holding copa/, rte/, boolq/, wic/, sst2/")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--mpt-steps", type=int, default=300, help="MPT-2 updates (batch 16)")
    parser.add_argument("--target-steps", type=int, default=100, help="updates per target run (batch 16)")
    parser.add_argument("--loo-targets", default="", help="targets that also get the leave-one-out arm")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is ~3x faster than 2 on a CPU shared with other jobs (keep it fixed: the base "
        "fingerprint of checkpoints depends on it)",
    )
    parser.add_argument("--max-eval-samples", type=int, default=None, help="cap dev sets (smoke runs)")
    parser.add_argument("--quick", action="store_true", help="4 steps everywhere, 16 dev examples, seed 1")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.mpt_steps, args.target_steps, args.max_eval_samples, args.seeds = 4, 4, 16, "1"
    data = Path(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    loo_targets = [t for t in args.loo_targets.split(",") if t]
    started = time.perf_counter()
    settings = {**COMMON, **vars(args), "data": os.path.relpath(args.data)}  # no machine's absolute paths
    results: dict[str, Any] = {"settings": settings, "mpt2": {}, "targets": {}}
    shared, summary = mpt2_prefix("sources-" + "-".join(MPT2_SOURCES), list(MPT2_SOURCES), args, data)
    results["mpt2"]["shared"] = {key: summary[key] for key in ("tasks", "dev", "batches", "wall_seconds")}
    for target in args.targets.split(","):
        arms: dict[str, str | None] = {"plain": None, "mpt2": shared}
        if target in loo_targets:
            sources = [name for name in LOO_POOL if name != target]
            arms["mpt2-loo"], summary = mpt2_prefix(f"without-{target}", sources, args, data)
            results["mpt2"][f"without-{target}"] = {
                key: summary[key] for key in ("tasks", "dev", "batches", "wall_seconds")
            }
        runs = []
        for seed in seeds:
            for arm, init_from in arms.items():
                runs.append(target_run(target, seed, arm, init_from, args, data))
                print(f"{target} seed {seed}: {runs[-1]}", flush=True)
        results["targets"][target] = {"runs": runs}
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print("\n| target | arm | dev accuracy | paired difference to plain | seeds |")
    print("|---|---|---|---|---|")
    for target, entry in results["targets"].items():
        by_arm: dict[str, dict[int, float]] = {}
        for run in entry["runs"]:
            by_arm.setdefault(run["arm"], {})[run["seed"]] = run["dev"]
        for arm, scores in by_arm.items():
            paired = [scores[seed] - by_arm["plain"][seed] for seed in seeds]
            difference = "" if arm == "plain" else describe(paired)
            print(f"| {target} | {arm} | {describe(list(scores.values()))} | {difference} | {len(seeds)} |")
    print(f"\nwall time {results['wall_seconds']:.0f} s; results in {output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
