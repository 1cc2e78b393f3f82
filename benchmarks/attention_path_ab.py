"""A/B of the attention a prefixed encoder runs on CPU: sdpa's kernel against the plain math (two matmuls and
a softmax, ``core.injection.attention_interface._math_attention``), which a bf16 backbone now takes.

Two parts, each interleaved in one process:

* kernels: one attention call at the shapes an inference batch has (a budget of 2,048 query tokens, 16 prefix
  keys, 12 heads, head size 32 and 64, lengths 8-240, the last 3 keys masked), fp32 and bf16, fastest of
  ``--rounds`` timings each;
* model: ours with a bf16 backbone predicting a speed workload's dev examples with the math path (the
  default) and with sdpa forced, median of per-round ratios; and how far each path's logits fall from the
  same prompt on the fp32 backbone (an untrained prompt: what the rounding does, not an accuracy —
  ``bench_precision.py`` scores a trained one).

    python benchmarks/attention_path_ab.py --threads 2    # ~3 minutes idle

Writes benchmarks/results/speed/attention-path-ab.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_common import (
    DATA_ROOT,
    RESULTS_DIR,
    WORKLOADS,
    Workload,
    environment,
    load_average,
    load_data,
    model_folder,
    write,
)
from speed_systems import PromptSystem

from ptuning.core.injection import attention_interface
from ptuning.training.inference import predict_outputs

PREFIX = 16
HEADS = 12
QUERY_TOKENS = 2048  # the inference batches' token budget on CPU (64 rows x 32 tokens)
LENGTHS = (8, 25, 48, 96, 128, 240)


def fastest(function: Callable[[], Any], rounds: int, calls: int = 10) -> float:
    """The fastest of ``rounds`` timings of ``calls`` calls, per call, in milliseconds."""
    function()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def kernels(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for head_size in (32, 64):
        for dtype in (torch.float32, torch.bfloat16):
            for length in LENGTHS:
                rows.append(kernel_row(head_size, dtype, length, rounds))
                print(
                    f"head {head_size} {rows[-1]['dtype']} L={length}: sdpa {rows[-1]['sdpa_ms']:.2f} ms, "
                    f"math {rows[-1]['math_ms']:.2f} ms (x{rows[-1]['math_speedup']:.2f})",
                    flush=True,
                )
    return rows


def kernel_row(head_size: int, dtype: torch.dtype, length: int, rounds: int) -> dict[str, Any]:
    """One attention call of an inference batch's shape, timed with sdpa's kernel and with the plain math."""
    batch = max(1, QUERY_TOKENS // length)
    query = torch.randn(batch, HEADS, length, head_size, dtype=dtype)
    key, value = (torch.randn(batch, HEADS, length + PREFIX, head_size, dtype=dtype) for _ in "kv")
    mask = torch.ones(batch, 1, length, length + PREFIX, dtype=torch.bool)
    mask[..., -3:] = False
    paths = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(query, key, value, mask),
        "math": lambda: attention_interface._math_attention(query, key, value, mask),
    }
    times: dict[str, list[float]] = {"sdpa": [], "math": []}
    for _ in range(2):  # alternate, so a slow spell of a shared machine hits both
        for name, function in paths.items():
            times[name].append(fastest(function, rounds))
    sdpa_ms, math_ms = min(times["sdpa"]), min(times["math"])
    return {
        "head_size": head_size,
        "dtype": str(dtype).removeprefix("torch."),
        "length": length,
        "rows": batch,
        "sdpa_ms": sdpa_ms,
        "math_ms": math_ms,
        "math_speedup": sdpa_ms / math_ms,
    }


@contextlib.contextmanager
def sdpa_forced() -> Iterator[None]:
    """Within the block every attention call goes to sdpa, as before the bf16 math path."""
    saved = attention_interface._takes_math_attention
    attention_interface._takes_math_attention = lambda *args: False
    try:
        yield
    finally:
        attention_interface._takes_math_attention = saved


def model(workload: Workload, data_root: Path, work_dir: Path, rounds: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    torch.manual_seed(0)
    half = PromptSystem(folder, data, workload, backbone_dtype="bf16")
    full = PromptSystem(folder, data, workload, backbone_dtype="fp32")
    trained = {name for name, p in half.model.named_parameters() if p.requires_grad}
    full.model.load_state_dict(  # the same prefix and head on the fp32 backbone
        {name: tensor for name, tensor in half.model.state_dict().items() if name in trained}, strict=False
    )
    predict = lambda system: predict_outputs(  # noqa: E731
        system.model, "task", data.dev, data.pad_id, workload.eval_batch_size
    )
    reference = predict(full)
    outputs = {"math": predict(half)}
    with sdpa_forced():
        outputs["sdpa"] = predict(half)
    agreement = {name: distance(found, reference) for name, found in outputs.items()}
    agreement["math vs sdpa"] = distance(outputs["math"], outputs["sdpa"])
    seconds: dict[str, list[float]] = {"sdpa": [], "math": []}
    for index in range(rounds + 1):  # the first round warms up
        for name in ("sdpa", "math") if index % 2 else ("math", "sdpa"):
            with sdpa_forced() if name == "sdpa" else contextlib.nullcontext():
                start = time.perf_counter()
                predict(half)
                if index:
                    seconds[name].append(time.perf_counter() - start)
    return {
        "workload": workload.name,
        "dev_examples": len(data.dev),
        "examples_per_second": {name: len(data.dev) / statistics.median(s) for name, s in seconds.items()},
        "math_speedup": statistics.median(
            s / m for s, m in zip(seconds["sdpa"], seconds["math"], strict=True)
        ),
        "agreement": agreement,
    }


def distance(found: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """Largest |logit difference| and the share of predicted labels (per example or per token) that differ."""
    worst = max(float(np.abs(a - b).max()) for a, b in zip(found, reference, strict=True))
    changed = sum(int((a.argmax(-1) != b.argmax(-1)).sum()) for a, b in zip(found, reference, strict=True))
    labels = sum(int(np.prod(a.shape[:-1])) for a in reference)
    return {"max_abs_logit_difference": worst, "labels_changed": changed, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=["sst2-minilm", "conll2003-minilm"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kernel-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--smoke", metavar="MODEL_DIR", help="tiny model folder: a seconds-long run (CI)")
    args = parser.parse_args(argv)
    workloads = [WORKLOADS[name] for name in args.workloads]
    if args.smoke:
        workloads = [Workload("smoke", "sst2", args.smoke, 8, 8, repeats=1, eval_batch_size=4)]
        args.rounds, args.kernel_rounds = 1, 1
    torch.set_num_threads(args.threads)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.gettempdir()) / "ptuning-speed"
    loads = [load_average()]
    kernel_rows = kernels(args.kernel_rounds)
    results = [model(workload, args.data_root, work_dir, args.rounds) for workload in workloads]
    loads.append(load_average())
    write(
        args.results_dir / "attention-path-ab.json",
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "load_average": loads,
            "kernels": kernel_rows,
            "workloads": results,
            **environment(),
        },
    )
    for result in results:
        rates = result["examples_per_second"]
        print(
            f"{result['workload']} bf16 inference: sdpa {rates['sdpa']:.1f} ex/s, math {rates['math']:.1f} ex/s "
            f"(x{result['math_speedup']:.3f}); agreement {result['agreement']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
