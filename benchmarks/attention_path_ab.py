"""A/B of the attention a prefixed encoder runs on CPU: sdpa's kernel against the plain math (two matmuls and
a softmax, ``core.injection.attention_interface._math_attention``), which bf16 inference over at most
``MATH_ATTENTION_MAX_KEYS`` keys now takes.

Three parts, each interleaved in one process:

* kernels: one attention call at the shapes an inference batch has (a budget of 2,048 query tokens, 16 prefix
  keys, 12 heads, head size 32 and 64, lengths 8-240, the last 3 keys masked), fp32 and bf16, fastest of
  ``--rounds`` timings each;
* model: ours with a bf16 backbone predicting a speed workload's dev examples with the default path (the
  math up to ``MATH_ATTENTION_MAX_KEYS`` keys) and with sdpa forced, median of per-round ratios; and how far each path's logits fall from the
  same prompt on the fp32 backbone (an untrained prompt: what the rounding does, not an accuracy —
  ``bench_precision.py`` scores a trained one);
* lengths: whole-model bf16 inference on synthetic rows of 12-250 tokens, sdpa vs the math at every length vs
  the default: where the key cap comes from;
* fp32 (``--fp32``): the same model and lengths parts with an fp32 backbone, sdpa (its default) against the
  math up to the key cap (dev sets) and at every length (synthetic rows): why fp32 stays on sdpa.

    python benchmarks/attention_path_ab.py --threads 2           # ~3 minutes idle
    python benchmarks/attention_path_ab.py --threads 2 --fp32    # the fp32 parts too: 2.2 minutes in all, 2026-12-06

Writes benchmarks/results/speed/attention-path-ab.json.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
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


def math_forced() -> contextlib.AbstractContextManager[Any]:
    """Within the block bf16 inference takes the math at every length (no key cap)."""
    return mock.patch.object(attention_interface, "MATH_ATTENTION_MAX_KEYS", 1 << 30)


def fp32_math() -> contextlib.AbstractContextManager[Any]:
    """Within the block fp32 inference takes the math as bf16's does (up to the key cap unless widened)."""
    widened = (*attention_interface.MATH_ATTENTION_INFERENCE_DTYPES, torch.float32)
    return mock.patch.object(attention_interface, "MATH_ATTENTION_INFERENCE_DTYPES", widened)


@contextlib.contextmanager
def fp32_math_forced() -> Iterator[None]:
    """fp32 inference takes the math at every length."""
    with fp32_math(), math_forced():
        yield


def sdpa_forced() -> contextlib.AbstractContextManager[Any]:
    """Within the block every attention call goes to sdpa, as before the bf16 math path."""
    return mock.patch.object(attention_interface, "_takes_math_attention", lambda *args: False)


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
    outputs = {"default": predict(half)}
    with sdpa_forced():
        outputs["sdpa"] = predict(half)
    agreement = {name: distance(found, reference) for name, found in outputs.items()}
    agreement["default vs sdpa"] = distance(outputs["default"], outputs["sdpa"])
    run = functools.partial(predict, half)
    seconds = interleaved({"sdpa": under(sdpa_forced, run), "default": run}, rounds)
    return dev_result(workload, len(data.dev), seconds, "default", agreement)


def fp32_model(workload: Workload, data_root: Path, work_dir: Path, rounds: int) -> dict[str, Any]:
    """ours with an fp32 backbone predicting the dev examples: sdpa (the fp32 default) against the math up to
    ``MATH_ATTENTION_MAX_KEYS`` keys as bf16 takes it; median of per-round ratios, and the logits' distance."""
    from transformers import AutoTokenizer

    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    torch.manual_seed(0)
    system = PromptSystem(folder, data, workload, backbone_dtype="fp32")
    run = functools.partial(
        predict_outputs, system.model, "task", data.dev, data.pad_id, workload.eval_batch_size
    )
    reference = run()
    with fp32_math():
        agreement = distance(run(), reference)
    seconds = interleaved({"sdpa": run, "math": under(fp32_math, run)}, rounds)
    return dev_result(workload, len(data.dev), seconds, "math", agreement)


def dev_result(
    workload: Workload, examples: int, seconds: dict[str, list[float]], path: str, agreement: dict[str, Any]
) -> dict[str, Any]:
    """One dev-set A/B's record: examples/s of each path (median round), ``path``'s speed-up over sdpa."""
    return {
        "workload": workload.name,
        "dev_examples": examples,
        "examples_per_second": {name: examples / statistics.median(s) for name, s in seconds.items()},
        f"{path}_speedup": speedup(seconds, path),
        "agreement": agreement,
    }


SYNTHETIC_LENGTHS = (12, 24, 48, 96, 250)  # tokens per row; the prefix adds 16 keys
LENGTH_PATHS: dict[str, dict[str, Callable[[], contextlib.AbstractContextManager[Any]]]] = {
    "bf16": {"sdpa": sdpa_forced, "math": math_forced, "default": contextlib.nullcontext},
    "fp32": {"sdpa": sdpa_forced, "math": fp32_math_forced},  # the fp32 default is sdpa
}


def lengths(folder: str, rounds: int, dtype: str = "bf16") -> list[dict[str, Any]]:
    """Whole-model inference on rows of one length each (random ids, a tagging head, batches of about
    2,048 tokens as ``predict_outputs`` cuts them): sdpa forced, the math forced at every length, and (bf16)
    the default (the math up to ``MATH_ATTENTION_MAX_KEYS`` keys, sdpa beyond). Median of per-round ratios."""
    from ptuning.core.backbones import load_backbone
    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel

    backbone, _ = load_backbone(folder, attn_implementation="sdpa", dtype=dtype)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=PREFIX)).eval()
    model.add_task("tags", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["O", "B", "I"]))
    generator = torch.Generator().manual_seed(0)
    paths = LENGTH_PATHS[dtype]
    rows = []
    for length in SYNTHETIC_LENGTHS:
        ids = torch.randint(1000, 20000, (max(1, QUERY_TOKENS // length), length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length // 2 :] = 0  # one padded row
        forward = functools.partial(model, ids, mask, task="tags")
        with torch.no_grad():
            seconds = interleaved({name: under(context, forward) for name, context in paths.items()}, rounds)
        takes_math = dtype == "bf16" and length + PREFIX <= attention_interface.MATH_ATTENTION_MAX_KEYS
        rows.append(
            {
                "dtype": dtype,
                "length": length,
                "rows": ids.shape[0],
                "keys": length + PREFIX,
                "ms": {name: 1e3 * statistics.median(s) for name, s in seconds.items()},
                "math_speedup": speedup(seconds, "math"),
                "default_speedup": speedup(seconds, "default") if "default" in seconds else 1.0,
                "default_path": "math" if takes_math else "sdpa",
            }
        )
        print(
            f"{dtype} length {length}: math x{rows[-1]['math_speedup']:.2f}, default ({rows[-1]['default_path']}) "
            f"x{rows[-1]['default_speedup']:.2f} over sdpa",
            flush=True,
        )
    return rows


def under(context: Callable[[], Any], function: Callable[[], Any]) -> Callable[[], None]:
    """``function`` run inside a fresh ``context()`` (a path switch) on every call."""

    def run() -> None:
        with context():
            function()

    return run


def speedup(seconds: dict[str, list[float]], name: str) -> float:
    """The median over rounds of sdpa's time over ``name``'s."""
    return statistics.median(s / n for s, n in zip(seconds["sdpa"], seconds[name], strict=True))


def distance(found: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """Largest |logit difference|, and how many predicted labels (per example or per token) differ, of how many."""
    worst = max(float(np.abs(a - b).max()) for a, b in zip(found, reference, strict=True))
    changed = sum(int((a.argmax(-1) != b.argmax(-1)).sum()) for a, b in zip(found, reference, strict=True))
    labels = sum(int(np.prod(a.shape[:-1])) for a in reference)
    return {"max_abs_logit_difference": worst, "labels_changed": changed, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    parser = kernel_ab_parser(__doc__, rounds=7, kernel_rounds=5)
    parser.add_argument("--fp32", action="store_true", help="also the fp32 parts (dev sets, lengths)")
    args = parser.parse_args(argv)
    workloads, work_dir = kernel_ab_setup(args, eval_batch_size=4)
    loads = [load_average()]
    kernel_rows = kernels(args.kernel_rounds)
    results = [model(workload, args.data_root, work_dir, args.rounds) for workload in workloads]
    folder = model_folder(workloads[0].backbone, work_dir)
    length_rows = lengths(folder, args.rounds)
    fp32 = {}
    if args.fp32:
        fp32 = {
            "fp32_workloads": [fp32_model(w, args.data_root, work_dir, args.rounds) for w in workloads],
            "fp32_lengths": lengths(folder, args.rounds, dtype="fp32"),
        }
    loads.append(load_average())
    write(
        args.results_dir / "attention-path-ab.json",
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "load_average": loads,
            "kernels": kernel_rows,
            "workloads": results,
            "lengths": length_rows,
            **fp32,
            **environment(),
        },
    )
    for result in results:
        rates = result["examples_per_second"]
        print(
            f"{result['workload']} bf16 inference: sdpa {rates['sdpa']:.1f} ex/s, default {rates['default']:.1f} "
            f"ex/s (x{result['default_speedup']:.3f}); agreement {result['agreement']}"
        )
    for result in fp32.get("fp32_workloads", []):
        rates = result["examples_per_second"]
        print(
            f"{result['workload']} fp32 inference: sdpa {rates['sdpa']:.1f} ex/s, math up to the key cap "
            f"{rates['math']:.1f} ex/s (x{result['math_speedup']:.3f}); agreement {result['agreement']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
