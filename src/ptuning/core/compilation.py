"""torch.compile for a PromptModel's frozen backbone (the ``--compile`` flag of train, eval and predict).

Why the backbone and not the whole ``PromptModel.forward``: the model's own forward is Python plumbing
(which prefix each row takes, position ids checked against the model's limit with ``int(tensor)``) that
breaks a graph anyway and costs little; the backbone is where the element-wise work between the GEMMs lives
(layer norms, GELU, residual adds, dropout masks, attention softmax), which Inductor fuses. Compiling the
backbone as one module with dynamic shapes gives one graph per mode (training, eval, no-grad inference),
whatever the batch's length or size, where compiling each layer would specialise on its layer index
(one graph per layer and mode).

The prefix reaches attention as a forward keyword (``core.injection``), which Dynamo traces without a
break. Compiling costs start-up (40-90 s of Dynamo + Inductor on the 2-core CPUs measured, about 5 minutes
for a bf16 backbone on an AVX2-only one; paid lazily in the first passes): hence a flag, off by default. ``benchmarks/speed_compile.py`` measures whether it pays.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ptuning.core.config import ConfigError
from ptuning.core.quantization import is_quantized

if TYPE_CHECKING:
    from ptuning.core.model import PromptModel


def missing_compiler() -> str | None:
    """Why Inductor cannot build CPU kernels here (no C++ compiler on PATH), or None when it can."""
    candidates = [os.environ.get("CXX"), "c++", "g++", "clang++"]
    if any(name and shutil.which(name) for name in candidates):
        return None
    return "torch.compile needs a C++ compiler for CPU kernels (none of $CXX, c++, g++, clang++ is on PATH)"


def compile_backbone(model: PromptModel, backend: str = "inductor") -> None:
    """Compile ``model.backbone`` in place (``nn.Module.compile``, dynamic shapes); ``uncompile_backbone``
    undoes it. Outputs equal eager ones to fp32 rounding (tests/core/test_compile.py). ``backend="eager"``
    traces with Dynamo only (no kernels built): what smoke tests use to stay fast.

    A backbone the method freezes is compiled with Inductor's ``freezing``: its inference graphs (no grad)
    take the weights as constants, so on CPU the linear layers run on weights prepacked for oneDNN with the
    following bias/GELU fused in (docs/BENCHMARKS.md: MiniLM bf16 inference x1.16-1.18, fp32 x1.07-1.08). The
    price: memory (MiniLM: an inference round peaks 150-160 MB higher, compiler included), and weights changed after
    an inference graph was compiled are not seen by it (training graphs, and the prefix and heads, which are
    inputs, are).
    A quantized backbone is compiled without it: folding would store its dequantized weights in full."""
    reason = missing_compiler()
    if (
        backend == "inductor"
        and reason is not None
        and next(model.backbone.parameters()).device.type == "cpu"
    ):
        raise ConfigError(f"--compile: {reason}")
    model.backbone.compile(dynamic=True, backend=backend)
    if backend == "inductor" and folds_weights(model):
        model.backbone._compiled_call_impl = _freezing_weights(model.backbone._compiled_call_impl)


def folds_weights(model: PromptModel) -> bool:
    """Whether ``compile_backbone`` takes the backbone's weights as constants (Inductor's ``freezing``)."""
    return model.method.freezes_backbone and not is_quantized(model.backbone)


def _freezing_weights(compiled_call: Callable[..., Any]) -> Callable[..., Any]:
    """Dynamo reads ``freezing`` when it traces (parameters become constants instead of graph inputs) and
    Inductor when it compiles, and both happen lazily inside a call, so ``torch.compile(options=...)``, which
    reaches Inductor only, does not freeze: the setting is switched on around each call of this backbone."""
    from torch._inductor import config as inductor_config

    @functools.wraps(compiled_call)
    def call(*args: Any, **kwargs: Any) -> Any:
        with inductor_config.patch(freezing=True):
            return compiled_call(*args, **kwargs)

    return call


def uncompile_backbone(model: PromptModel) -> None:
    """Back to the eager backbone (the compiled code stays cached in Dynamo, unused)."""
    model.backbone._compiled_call_impl = None


def is_compiled(model: PromptModel) -> bool:
    return getattr(model.backbone, "_compiled_call_impl", None) is not None


@dataclass(frozen=True)
class CompileStats:
    """Graphs Dynamo compiled in this process and the seconds it spent compiling them (Dynamo + Inductor,
    backward graphs included): the start-up ``--compile`` costs. More graphs than modes run means recompiles
    (a shape or mode the compiled code did not cover)."""

    graphs: int
    seconds: float

    @classmethod
    def now(cls) -> CompileStats:
        from torch._dynamo.utils import compilation_time_metrics, counters

        seconds = sum(compilation_time_metrics.get("_compile.compile_inner", []))
        return cls(int(counters["stats"]["unique_graphs"]), float(seconds))

    def since(self, earlier: CompileStats) -> CompileStats:
        return CompileStats(self.graphs - earlier.graphs, self.seconds - earlier.seconds)

    def __str__(self) -> str:
        return f"torch.compile: {self.graphs} graph(s) compiled in {self.seconds:.1f} s (start-up cost)"
