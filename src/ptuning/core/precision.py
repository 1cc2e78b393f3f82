"""Which dtype a frozen backbone is stored in, and the rule for everything around it.

Why: nothing in a frozen backbone is ever updated, so it can be stored in bf16/fp16 (half the memory, and
on CPUs with bf16 instructions several times faster), while the tensors that are trained stay fp32 master
weights. The rule, applied where the tensors meet:

* prefix tables, the prefix MLP and heads are created and kept in fp32;
* prefix key/values are cast to the attention's key/value dtype where they are concatenated
  (``core.injection``), so gradients reach the fp32 table through the cast;
* hidden states are cast to the head's dtype (fp32) and the head runs outside autocast, so logits and the
  loss are fp32; a causal LM's logits are returned in fp32 too (transformers computes its loss in fp32).
"""

from __future__ import annotations

import warnings

import torch

from ptuning.core.config import AUTO_DTYPE, BACKBONE_DTYPE_CHOICES, ConfigError

BACKBONE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


_CPU_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID checks


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX. None means the device training takes (accelerate's: CUDA when torch sees one, else the CPU); the
    inference commands pass theirs, so ``--device cpu`` on a GPU machine asks the CPU, not the GPU. Why it
    matters: elsewhere bf16 matrix products are emulated and slower than fp32, while on this project's
    avx512_bf16 CPU a frozen bf16 backbone trained 3.4-3.7x faster than PEFT + Trainer in fp32 at the same
    dev scores (docs/BENCHMARKS.md)."""
    if _computing_device(device).type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # pre-Ampere GPUs only emulate it
    return cpu_computes_bf16()


def _computing_device(device: str | torch.device | None) -> torch.device:
    """``device``, or where training runs when it is None: CUDA when torch sees one, else the CPU."""
    return torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), by torch's own CPUID checks."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in _CPU_BF16_PROBES)


class EmulatedPrecisionNote(UserWarning):
    """A frozen backbone stored in bf16 on a CPU without bf16 instructions: it runs, slower than in fp32."""


def emulated_bf16_note(what: str, device: str | torch.device | None = None) -> str | None:
    """What to tell a user who asks for bf16 ``what`` on ``device`` (None: where training runs) where bf16
    matrix products are emulated; None where they are not. Why: bf16 is the fast setting on CPUs that have
    the instructions (docs/BENCHMARKS.md), while on an AVX2-only EPYC oneDNN's bf16 products ran 36x slower
    than fp32 (512^3) and a MiniLM training step 4-17x slower (a bf16-stored backbone, bf16 autocast)."""
    if _computing_device(device).type != "cpu" or cpu_computes_bf16():
        return None
    return (
        f"{what} on a CPU without bf16 instructions (AVX512-BF16 or AMX): its matrix products are emulated, "
        "several times slower than fp32 here"
    )


def note_emulated_bf16(dtype: torch.dtype, device: str | torch.device | None) -> None:
    """Warn (``EmulatedPrecisionNote``) where a backbone stored in ``dtype`` on ``device`` computes bf16 by
    emulation (``emulated_bf16_note``); ``auto`` would have picked fp32 there."""
    note = emulated_bf16_note("backbone dtype bf16", device) if dtype == torch.bfloat16 else None
    if note is not None:
        warnings.warn(
            EmulatedPrecisionNote(f"{note}; --backbone-dtype auto (or fp32) stores it in fp32"), stacklevel=3
        )


def resolve_auto(name: str, device: str | torch.device | None = None) -> str:
    """``"auto"`` -> ``"bf16"`` where ``native_bf16(device)``, else ``"fp32"``; any other name unchanged."""
    if name != AUTO_DTYPE:
        return name
    return "bf16" if native_bf16(device) else "fp32"


def backbone_dtype(
    value: str | torch.dtype | None, device: str | torch.device | None = None
) -> torch.dtype | None:
    """``"fp32" | "bf16" | "fp16" | "auto"`` (or a torch float dtype) -> the torch dtype; None stays None.
    ``"auto"`` is answered for ``device`` (``native_bf16``)."""
    if value is None or isinstance(value, torch.dtype) and value in BACKBONE_DTYPES.values():
        return value
    if isinstance(value, str) and value in BACKBONE_DTYPE_CHOICES:
        return BACKBONE_DTYPES[resolve_auto(value, device)]
    raise ConfigError(f"backbone dtype must be one of {', '.join(BACKBONE_DTYPE_CHOICES)}; got {value!r}")


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a backbone dtype (``torch.bfloat16`` -> ``"bf16"``), or its torch name."""
    for name, known in BACKBONE_DTYPES.items():
        if known == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def floating_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's floating-point parameters (quantized weights are not floating point)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32
