"""Does training without the frozen backbone's dropout keep the dev score? The accuracy side of
``--backbone-dropout 0`` (docs/BENCHMARKS.md: the masks and their products cost time in every training step).

Trains each preset (``sst2-minilm``: 4,000 SST-2 examples x 3 epochs; ``conll2003-minilm``: 3,000 CoNLL-2003
sentences x 1 epoch, 1,000 dev sentences) once per seed with the backbone's own dropout (MiniLM's 0.1 on hidden
states and attention probabilities) and once with ``backbone_dropout=0``, alternated, each in a fresh process
through the engine's normal path (``bf16_ab.py --one``), the backbone stored in ``--dtype`` (bf16 by default:
where the change pays most). Reports the dev primary metric per seed, mean and spread, training examples/s,
and whether the mean without dropout is at least the lowest seed with it (issue 16's rule for keeping a speed
change). Writes benchmarks/results/speed/backbone-dropout-ab.json.

    python benchmarks/backbone_dropout_ab.py        # 2 presets x 3 seeds x 2 arms: ~15 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bf16_ab import DATA_ROOT, PRESETS, REPO, summarize, verdict

RESULT = REPO / "benchmarks" / "results" / "speed" / "backbone-dropout-ab.json"
ARMS = {"model's dropout": [], "backbone_dropout 0": ["--set=backbone_dropout=0"]}


def run(preset: str, dtype: str, seed: int, data_root: Path, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, str(REPO / "benchmarks" / "bf16_ab.py"), "--one", preset, dtype, str(seed)]
    command += ["--data-root", str(data_root), *extra]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset option (both arms)"
    )
    args = parser.parse_args(argv)
    from speed_common import environment

    common = [f"--set={item}" for item in args.set]
    result: dict[str, Any] = {
        "environment": environment(),
        "dtype": args.dtype,
        "overrides": args.set,
        "seeds": args.seeds,
        "presets": {},
    }
    for preset in args.presets:
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        for seed in args.seeds:
            for arm, extra in ARMS.items():  # alternated, so a slower stretch of the machine hits both alike
                runs[arm].append(
                    {"seed": seed, **run(preset, args.dtype, seed, args.data_root, common + extra)}
                )
                print(preset, arm, runs[arm][-1], flush=True)
        with_dropout, without = (summarize(runs[arm]) for arm in ARMS)
        result["presets"][preset] = {
            "metric": runs["model's dropout"][0]["metric"],
            "runs": runs,
            "summary": {"model's dropout": with_dropout, "backbone_dropout 0": without},
            # bf16_ab's rule: kept if the mean without is at least the lowest seed with the dropout
            "without_vs_with": verdict(with_dropout, without),
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({p: r["without_vs_with"] for p, r in result["presets"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
