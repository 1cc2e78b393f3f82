"""A/B of how ``predict_outputs`` cuts its sorted inputs into batches: the token budget alone against the budget
with a padding cap (``MAX_PADDING_SHARE``), ours in fp32 and with a bf16 backbone, interleaved rounds in one
process (the median of per-round ratios), on the speed workloads' dev examples.

    python benchmarks/inference_batches_ab.py --workloads sst2-minilm conll2003-minilm --threads 2

Writes benchmarks/results/speed/inference-batches-ab.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from speed_common import (
    DATA_ROOT,
    RESULTS_DIR,
    WORKLOADS,
    environment,
    load_average,
    load_data,
    model_folder,
    write,
)
from speed_systems import PromptSystem

import ptuning.training.inference as inference

POLICIES = {
    "budget only": 1.0,
    "padding <= 20 %": 0.2,
    "padding <= 10 % (default)": inference.MAX_PADDING_SHARE,
}
BASELINE = "budget only"


def measure(workload_name: str, data_root: Path, work_dir: Path, rounds: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    workload = WORKLOADS[workload_name]
    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    lengths = [inference.feature_length(f) for f in data.dev]
    out: dict[str, Any] = {
        "workload": workload_name,
        "dev_examples": len(data.dev),
        "real_tokens": sum(lengths),
    }
    for name, share in POLICIES.items():
        batches = cut(data.dev, workload.eval_batch_size, share)
        out.setdefault("batches", {})[name] = {
            "count": len(batches),
            "padded_tokens": sum(len(b) * max(lengths[i] for i in b) for b in batches),
        }
    for dtype in ("fp32", "bf16"):
        system = PromptSystem(folder, data, workload, backbone_dtype=dtype)
        seconds: dict[str, list[float]] = {name: [] for name in POLICIES}
        names = list(POLICIES)
        for index in range(rounds + 1):  # the first round warms up
            for name in names[index % len(names) :] + names[: index % len(names)]:
                start = time.perf_counter()
                with padding_cap(POLICIES[name]):
                    inference.predict_outputs(
                        system.model, "task", data.dev, data.pad_id, workload.eval_batch_size
                    )
                if index:
                    seconds[name].append(time.perf_counter() - start)
        out[dtype] = {
            name: {
                "examples_per_second": len(data.dev) / statistics.median(seconds[name]),
                "speedup": statistics.median(
                    b / s for b, s in zip(seconds[BASELINE], seconds[name], strict=True)
                ),
            }
            for name in POLICIES
        }
    return out


def cut(features: list[dict[str, Any]], batch_size: int, share: float) -> list[list[int]]:
    with padding_cap(share):
        return inference.inference_batches(features, batch_size)


@contextlib.contextmanager
def padding_cap(share: float) -> Iterator[None]:
    """Within the block ``predict_outputs`` caps padding at ``share`` of a batch's tokens (1.0: no cap)."""
    saved, inference.MAX_PADDING_SHARE = inference.MAX_PADDING_SHARE, share
    try:
        yield
    finally:
        inference.MAX_PADDING_SHARE = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=["sst2-minilm", "conll2003-minilm"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.gettempdir()) / "ptuning-speed"
    loads = [load_average()]
    results = [measure(name, args.data_root, work_dir, args.rounds) for name in args.workloads]
    loads.append(load_average())
    write(
        args.results_dir / "inference-batches-ab.json",
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "load_average": loads,
            "workloads": results,
            **environment(),
        },
    )
    for result in results:
        for dtype in ("fp32", "bf16"):
            for name, entry in result[dtype].items():
                print(
                    f"{result['workload']} {dtype} {name}: {entry['examples_per_second']:.1f} ex/s x{entry['speedup']:.3f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
