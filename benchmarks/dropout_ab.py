"""Is FastDropout neutral for quality, and what does it save end to end? The README's main job, both ways.

Trains the ``sst2-minilm`` preset (4,000 SST-2 examples x 3 epochs, P-tuning v2 on the packaged MiniLM) once
per seed with ``FastDropout`` (the default) and once with torch's own dropout masks everywhere (FastDropout
and the CPU attention-dropout path switched off), each run in a fresh process, one after the other. Writes
benchmarks/results/speed/dropout-ab.json and prints dev accuracy and training examples/s per run.

    python benchmarks/dropout_ab.py                 # seeds 42 43 44, ~10 minutes on 2 idle cores

``--set KEY=VALUE`` overrides preset options (the smoke test uses a tiny model and one epoch).
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
DATA = REPO.parent / "shared" / "data" / "sst2"
RESULT = REPO / "benchmarks" / "results" / "speed" / "dropout-ab.json"
KINDS = ("torch", "fast")


def run_one(kind: str, seed: int, data: Path, overrides: dict[str, Any]) -> dict[str, float]:
    """One training run in this process; ``kind='torch'`` restores torch's dropout masks first."""
    import torch

    from ptuning.training.config import TrainConfig
    from ptuning.training.engine import train
    from ptuning.training.presets import get_preset

    if kind == "torch":
        from ptuning.core import dropout
        from ptuning.core.injection import attention_interface

        dropout.FastDropout.forward = torch.nn.Dropout.forward
        attention_interface._takes_math_attention = lambda *args, **kwargs: False
    with tempfile.TemporaryDirectory(prefix="ptuning-dropout-ab-") as output:
        options = {
            **get_preset("sst2-minilm").options,
            **overrides,
            "data_dir": str(data),
            "output_dir": output,
        }
        config = TrainConfig(**options, seed=seed, save_every_steps=None, log_tensorboard=False)
        summary = train(config).summary
    return {
        "dev_accuracy": summary["dev"]["accuracy"],
        "train_examples_per_second": summary["train_examples_per_second"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset option"
    )
    parser.add_argument("--one", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = {key: json.loads(value) if value[:1].isdigit() else value for key, value in
                 (item.split("=", 1) for item in args.set)}  # fmt: skip
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.data, overrides)))
        return 0
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for seed in args.seeds:
        for kind in KINDS:
            command = [sys.executable, __file__, "--one", kind, str(seed), "--data", str(args.data)]
            command += [f"--set={item}" for item in args.set]
            lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
            runs[kind].append({"seed": seed, **json.loads(lines[-1])})
            print(kind, runs[kind][-1], flush=True)
    summary = {
        kind: {
            "mean_dev_accuracy": statistics.mean(r["dev_accuracy"] for r in results),
            "median_train_examples_per_second": statistics.median(
                r["train_examples_per_second"] for r in results
            ),
        }
        for kind, results in runs.items()
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"overrides": overrides, "runs": runs, "summary": summary}, indent=2) + "\n"
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
