"""torch.compile for a PromptModel's frozen backbone (the ``--compile`` flag of train, eval and predict).

Why the backbone and not the whole ``PromptModel.forward``: the model's own forward is Python plumbing
(which prefix each row takes, position ids checked against the model's limit with ``int(tensor)``) that
breaks a graph anyway and costs little; the backbone is where the element-wise work between the GEMMs lives
(layer norms, GELU, residual adds, dropout masks, attention softmax), which Inductor fuses. Compiling the
backbone as one module with dynamic shapes gives one graph per mode (training, eval, no-grad inference),
whatever the batch's length or size, where compiling each layer would specialise on its layer index
(one graph per layer and mode).

The prefix reaches attention as a forward keyword (``core.injection``), which Dynamo traces without a
break. Compiling costs start-up (tens of seconds on a small CPU, paid lazily in the first passes): hence a
flag, off by default. ``benchmarks/speed_compile.py`` measures whether it pays.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ptuning.core.config import ConfigError

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
    traces with Dynamo only (no kernels built): what smoke tests use to stay fast."""
    reason = missing_compiler()
    if (
        backend == "inductor"
        and reason is not None
        and next(model.backbone.parameters()).device.type == "cpu"
    ):
        raise ConfigError(f"--compile: {reason}")
    model.backbone.compile(dynamic=True, backend=backend)


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
