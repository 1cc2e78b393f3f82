"""Does training with a bf16 backbone keep the dev score? The accuracy side of the ``ours-bf16`` speed row.

Trains each preset (by default ``sst2-minilm``: 4,000 SST-2 examples x 3 epochs, and ``conll2003-minilm``:
3,000 CoNLL-2003 sentences x 1 epoch, scored on 1,000 dev sentences) once per seed with the frozen backbone
stored in fp32 and once in bf16 (``TrainConfig(backbone_dtype=...)``, what ``ptuning train --backbone-dtype``
sets; prefixes, heads, optimizer and loss stay fp32), each run in a fresh process through the engine's normal
path. Reports, per preset and dtype, the dev primary metric (accuracy / entity F1) per seed, its mean and
spread, training examples/s, and whether bf16's mean lies within the fp32 seeds' spread (issue 16: a change is
kept only if dev scores hold within the seeds' spread). Writes benchmarks/results/speed/bf16-ab.json.

    python benchmarks/bf16_ab.py        # 2 presets x 3 seeds x 2 dtypes: ~15 minutes on 2 idle cores

Inference alone on a bf16 backbone (one fp32-trained prompt scored on fp32, bf16 and int8 backbones) is
benchmarks/bench_precision.py; this script answers the other question, training in bf16.
``--set KEY=VALUE`` overrides preset options (the smoke test uses a tiny model and a few examples).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data"
RESULT = REPO / "benchmarks" / "results" / "speed" / "bf16-ab.json"
PRESETS = ("sst2-minilm", "conll2003-minilm")
DTYPES = ("fp32", "bf16")


def run_one(preset: str, dtype: str, seed: int, data_root: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One training run of ``preset`` in this process with the backbone stored in ``dtype``."""
    from ptuning.tasks.registry import get_task
    from ptuning.training.config import TrainConfig
    from ptuning.training.engine import train
    from ptuning.training.presets import get_preset

    options = dict(get_preset(preset).options)
    metric = get_task(options["task"]).primary_metric
    with tempfile.TemporaryDirectory(prefix="ptuning-bf16-ab-") as output:
        options.update(overrides)
        options.update(data_dir=str(data_root / options["task"]), output_dir=output, backbone_dtype=dtype)
        config = TrainConfig(**options, seed=seed, save_every_steps=None, log_tensorboard=False)
        summary = train(config).summary
    return {
        "metric": metric,
        "max_grad_norm": config.max_grad_norm,  # the recipe: ptuning train clips by default since 2026-12-05
        "backbone_dropout": config.backbone_dropout,  # None: the model's own rates
        "dev": summary["dev"][metric],
        "train_examples_per_second": summary["train_examples_per_second"],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["dev"] for r in runs]
    return {
        "mean_dev": statistics.mean(scores),
        "min_dev": min(scores),
        "max_dev": max(scores),
        "stdev_dev": statistics.stdev(scores) if len(scores) > 1 else None,
        "median_train_examples_per_second": statistics.median(r["train_examples_per_second"] for r in runs),
    }


def verdict(fp32: dict[str, Any], bf16: dict[str, Any]) -> dict[str, Any]:
    """bf16 minus fp32, and whether the score holds: bf16's mean is at least fp32's lowest seed (inside the
    fp32 seeds' spread, or above it), the issue's rule for keeping a speed change."""
    return {
        "dev_difference": bf16["mean_dev"] - fp32["mean_dev"],
        "holds": bf16["mean_dev"] >= fp32["min_dev"],
        "train_speedup": bf16["median_train_examples_per_second"] / fp32["median_train_examples_per_second"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset option"
    )
    parser.add_argument("--one", nargs=3, metavar=("PRESET", "DTYPE", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # the smoke test's
    args = parser.parse_args(argv)
    overrides = {key: json.loads(value) if value[:1].isdigit() else value for key, value in
                 (item.split("=", 1) for item in args.set)}  # fmt: skip
    if args.one:
        preset, dtype, seed = args.one
        print(json.dumps(run_one(preset, dtype, int(seed), args.data_root, overrides)))
        return 0
    from speed_common import environment  # benchmarks/ is on the path when this file runs as a script

    result: dict[str, Any] = {
        "environment": environment(),
        "overrides": overrides,
        "seeds": args.seeds,
        "presets": {},
    }
    for preset in args.presets:
        runs: dict[str, list[dict[str, Any]]] = {dtype: [] for dtype in DTYPES}
        for seed in args.seeds:
            for dtype in DTYPES:  # alternated, so a slower stretch of the machine hits both alike
                if args.in_process:
                    run = run_one(preset, dtype, seed, args.data_root, overrides)
                else:  # a fresh process per run, as dropout_ab.py does
                    command = [sys.executable, __file__, "--one", preset, dtype, str(seed)]
                    command += ["--data-root", str(args.data_root), *[f"--set={item}" for item in args.set]]
                    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    run = json.loads(output.splitlines()[-1])
                runs[dtype].append({"seed": seed, **run})
                print(preset, dtype, runs[dtype][-1], flush=True)
        summary = {dtype: summarize(r) for dtype, r in runs.items()}
        result["presets"][preset] = {
            "metric": runs["fp32"][0]["metric"],
            "runs": runs,
            "summary": summary,
            "bf16_vs_fp32": verdict(summary["fp32"], summary["bf16"]),
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({p: r["bf16_vs_fp32"] for p, r in result["presets"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
