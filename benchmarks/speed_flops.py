"""How many FLOPs a round did and how fast this machine multiplies matrices: the GEMM-efficiency column."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ptuning.core.precision import native_bf16


@dataclass(frozen=True)
class Shape:
    """The matmul shape of a BERT-like encoder."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def of(cls, folder: str) -> Shape:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size)


def step_flops(
    shape: Shape,
    batches: list[tuple[int, int]],
    prefix: int,
    training: bool,
    first_token_only: bool = False,
) -> float:
    """Analytic FLOPs of the encoder's matmuls over these (batch, length) shapes.

    Forward, per layer: the Q, K, V, O and FFN projections cost 2 x (4 H^2 + 2 H I) per token, and attention
    2 x 2 x T x (P + T) x H per sequence (Q K^T and probabilities x V). Training through a *frozen* backbone
    computes input gradients only (one more GEMM per projection, no weight gradients): projections x2 in
    total, i.e. ~4 x params x tokens instead of fine-tuning's ~6 x; attention backward has four matmuls
    (gradients of Q, K, V and of the probabilities), so attention x3. Embeddings, norms, activations and the
    head are not counted (they are not GEMMs). ``first_token_only``: the last layer's feed-forward ran for each
    row's first position only (``core.readout``, a [CLS] head of ours).
    """
    projections, attention = step_flops_parts(shape, batches, prefix, training, first_token_only)
    return projections + attention


def step_flops_parts(
    shape: Shape,
    batches: list[tuple[int, int]],
    prefix: int,
    training: bool,
    first_token_only: bool = False,
) -> tuple[float, float]:
    """``step_flops`` as (projections, attention): the projections always run as GEMM ops (mm/addmm), the
    attention matmuls only under eager attention (sdpa does them inside its own kernel), so a GEMM-op rate
    needs the two apart."""
    linear_per_token = 2 * (4 * shape.hidden**2 + 2 * shape.hidden * shape.intermediate)
    feed_forward_per_token = 2 * 2 * shape.hidden * shape.intermediate
    linear = attention = 0.0
    for batch, length in batches:
        linear += shape.layers * linear_per_token * batch * length
        if first_token_only:  # the last layer's feed-forward skipped every position but the first
            linear -= feed_forward_per_token * batch * (length - 1)
        attention += shape.layers * 4 * batch * length * (prefix + length) * shape.hidden
    return (2 * linear, 3 * attention) if training else (linear, attention)


GEMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_size(dtype: str = "fp32") -> int:
    """The side of the square GEMM that ``gemm_rate`` measures by default: 2048, or 512 for bf16 on a CPU
    without bf16 instructions (see ``gemm_rate``). Result files record it beside the rate."""
    return 2048 if dtype == "fp32" or native_bf16("cpu") else 512


def gemm_sizes() -> dict[str, int]:
    """``gemm_size`` of each dtype in ``GEMM_DTYPES``, the record a result file keeps beside its rates."""
    return {dtype: gemm_size(dtype) for dtype in GEMM_DTYPES}


def describe_gemm_sizes(sizes: dict[str, int] | None) -> str:
    """ "2048^3", or "fp32 2048^3, bf16 512^3" where the two differ; files written before the sizes were
    recorded measured both at 2048^3."""
    sizes = sizes or {"fp32": 2048, "bf16": 2048}
    if len(set(sizes.values())) == 1:
        return f"{next(iter(sizes.values()))}^3"
    return ", ".join(f"{dtype} {size}^3" for dtype, size in sizes.items())


def gemm_rate(size: int | None = None, repeats: int = 3, dtype: str = "fp32") -> float:
    """GFLOP/s of a square GEMM in ``dtype`` ("fp32" or "bf16"): the machine's matmul rate at the current
    thread count, 2048^3 by default. The bf16 one is the yardstick of a bf16 backbone (oneDNN's AVX512-BF16/AMX
    kernels where the CPU has them). A CPU without bf16 instructions shows it as a rate far below fp32's,
    measured at 512^3: on an AVX2-only EPYC one 2048^3 bf16 product took 80 s (0.2 GFLOP/s against fp32's
    47), which made every throughput round four minutes longer."""
    size = gemm_size(dtype) if size is None else size
    a = torch.randn(size, size, dtype=GEMM_DTYPES[dtype])
    b = torch.randn(size, size, dtype=GEMM_DTYPES[dtype])
    a @ b
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(best) / 1e9
