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

import torch

from ptuning.core.config import ConfigError

BACKBONE_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def backbone_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp32" | "bf16" | "fp16"`` (or a torch float dtype) -> the torch dtype; None stays None."""
    if value is None or isinstance(value, torch.dtype) and value in BACKBONE_DTYPES.values():
        return value
    if isinstance(value, str) and value in BACKBONE_DTYPES:
        return BACKBONE_DTYPES[value]
    raise ConfigError(f"backbone dtype must be one of {', '.join(BACKBONE_DTYPES)}; got {value!r}")


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
