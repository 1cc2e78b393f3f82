"""A/B of the attention a prefixed encoder trains with on CPU when nothing drops attention probabilities:
sdpa's kernel against the plain math (``core.injection.attention_interface._math_attention``), which bf16
training now takes up to ``MATH_ATTENTION_MAX_TRAINING_KEYS`` keys. (With attention dropout every CPU training
step already took the math: sdpa would run its own math path with a costlier mask.)

Two parts, each interleaved in one process:

* kernels: one attention call forward + backward at a MiniLM training batch's shapes (32 rows, 12 heads, head
  size 32, 16 prefix keys, lengths 8-240, the last 3 keys masked), fp32 and bf16, median of ``--rounds``;
* model: a training round of ours (the speed workloads' 256 examples, batches of 32) with every dropout of the
  backbone at 0, in bf16 and fp32, with the default path and with the other one forced; median of per-round
  ratios.

    python benchmarks/attention_training_ab.py --threads 2      # ~4 minutes idle

Writes benchmarks/results/speed/attention-training-ab.json.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from speed_common import (
    Workload,
    environment,
    interleaved,
    kernel_ab_parser,
    kernel_ab_setup,
    load_average,
    load_data,
    model_folder,
    write,
)
from speed_systems import PromptSystem

from ptuning.core.injection import attention_interface

ROWS, HEADS, HEAD_SIZE, PREFIX = 32, 12, 32, 16
LENGTHS = (8, 16, 32, 48, 64, 96, 128, 144, 176, 208, 240)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def kernels(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name, dtype in DTYPES.items():
        for length in LENGTHS:
            rows.append(kernel_row(dtype, length, rounds))
            print(
                f"{name} L={length}: sdpa {rows[-1]['sdpa_ms']:.2f} ms, math {rows[-1]['math_ms']:.2f} ms "
                f"(x{rows[-1]['math_speedup']:.2f})",
                flush=True,
            )
    return rows


def kernel_row(dtype: torch.dtype, length: int, rounds: int, calls: int = 5) -> dict[str, Any]:
    """Forward + backward of one attention call, timed with sdpa's kernel and with the plain math."""
    query = torch.randn(ROWS, HEADS, length, HEAD_SIZE, dtype=dtype, requires_grad=True)
    key, value = (
        torch.randn(ROWS, HEADS, length + PREFIX, HEAD_SIZE, dtype=dtype, requires_grad=True) for _ in "kv"
    )
    mask = torch.ones(ROWS, 1, length, length + PREFIX, dtype=torch.bool)
    mask[..., -3:] = False
    paths: dict[str, Callable[[], torch.Tensor]] = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(query, key, value, mask),
        "math": lambda: attention_interface._math_attention(query, key, value, mask)[0],
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for function in paths.values():
        function().sum().backward()  # warm-up
    for round_index in range(rounds):  # alternate the order, so a slow spell hits both
        for name in list(paths)[:: 1 if round_index % 2 else -1]:
            start = time.perf_counter()
            for _ in range(calls):
                paths[name]().sum().backward()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    sdpa_ms, math_ms = statistics.median(times["sdpa"]), statistics.median(times["math"])
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "length": length,
        "keys": length + PREFIX,
        "sdpa_ms": sdpa_ms,
        "math_ms": math_ms,
        "math_speedup": sdpa_ms / math_ms,
    }


def without_dropout(system: PromptSystem) -> PromptSystem:
    for module in system.model.backbone.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return system


def math_everywhere() -> Any:
    """fp32 (and every length) trains through the math: the path the default does not take for it."""
    widened = (*attention_interface.MATH_ATTENTION_TRAINING_DTYPES, torch.float32)
    return mock.patch.multiple(
        attention_interface, MATH_ATTENTION_TRAINING_DTYPES=widened, MATH_ATTENTION_MAX_TRAINING_KEYS=1 << 30
    )


def sdpa_everywhere() -> Any:
    return mock.patch.object(attention_interface, "_takes_math_attention", lambda *args: False)


def model(workload: Workload, data_root: Path, work_dir: Path, rounds: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    runs: dict[str, Callable[[], Any]] = {}
    for name in DTYPES:
        system = without_dropout(PromptSystem(folder, data, workload, backbone_dtype=name))
        other = sdpa_everywhere if name == "bf16" else math_everywhere
        runs[f"{name}-default"] = lambda s=system: s.train_round(0)
        runs[f"{name}-other"] = lambda s=system, o=other: _under(o, lambda: s.train_round(0))
    seconds = interleaved(runs, rounds)
    rates = {name: workload.train_examples / statistics.median(s) for name, s in seconds.items()}
    speedups = {
        name: statistics.median(
            o / d for o, d in zip(seconds[f"{name}-other"], seconds[f"{name}-default"], strict=True)
        )
        for name in DTYPES
    }
    return {
        "workload": workload.name,
        "train_examples_per_second": rates,
        "default_over_other": speedups,  # bf16: default = math up to the cap, other = sdpa; fp32: the reverse
        "seconds": seconds,
    }


def _under(context: Callable[[], Any], function: Callable[[], Any]) -> Any:
    with context():
        return function()


def main(argv: list[str] | None = None) -> int:
    parser = kernel_ab_parser(__doc__, rounds=5, kernel_rounds=7)
    args = parser.parse_args(argv)
    workloads, work_dir = kernel_ab_setup(args, batch_size=4)
    loads = [load_average()]
    kernel_rows = kernels(args.kernel_rounds)
    results = [model(workload, args.data_root, work_dir, args.rounds) for workload in workloads]
    loads.append(load_average())
    write(
        args.results_dir / "attention-training-ab.json",
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "load_average": loads,
            "max_training_keys": attention_interface.MATH_ATTENTION_MAX_TRAINING_KEYS,
            "kernels": kernel_rows,
            "workloads": results,
            **environment(),
        },
    )
    for result in results:
        rates, ratio = result["train_examples_per_second"], result["default_over_other"]
        print(
            f"{result['workload']} training without dropout: bf16 math {rates['bf16-default']:.1f} ex/s vs sdpa "
            f"{rates['bf16-other']:.1f} (x{ratio['bf16']:.3f}); fp32 sdpa {rates['fp32-default']:.1f} vs math "
            f"{rates['fp32-other']:.1f} (x{ratio['fp32']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
