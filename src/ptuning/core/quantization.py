"""Quantized frozen backbones: 8-bit and 4-bit (NF4) through bitsandbytes on CUDA, int8 on CPU for inference.

Why: a frozen backbone is never updated, so its weights can be stored in 8 or 4 bits while the prefix and
heads train in fp32 (QLoRA's recipe, applied to prefixes: ChatGLM's P-tuning v2 runs at 4 bits).

* CUDA: ``load_backbone(..., quantization="int8" | "nf4")`` passes a ``BitsAndBytesConfig`` to
  ``from_pretrained`` (compute dtype bf16, NF4 with double quantization). Prefixes and heads stay fp32; the
  prefix key/values are cast to the attention dtype like for any bf16 backbone (``core.precision``).
* CPU: bitsandbytes has no CPU kernels here, so ``nf4`` is refused. ``int8`` is weight-only quantization of
  the backbone's ``nn.Linear`` layers for inference (eval, predict, serve) through torch's dynamic
  quantization (``quantize_backbone``), applied *after* the prompt checkpoint is loaded, because the
  fingerprint is taken from the unquantized weights. Training through it is refused (it has no backward).
  torchao (0.18.0) would be the maintained choice, and it installs beside torch 2.13; but once installed,
  transformers imports it in every process, which adds two "Failed to load" warnings (its CUDA extensions)
  to every command's stderr, so it is not a dependency.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import torch
from torch import nn

from ptuning.core.config import ConfigError

QUANTIZATIONS = ("int8", "nf4")


def _check_name(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ConfigError(
            f"backbone quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}"
        )


def loading_kwargs(quantization: str | None, device: str | torch.device | None = None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a bitsandbytes-quantized backbone (empty for None).

    Refuses, in one line, what cannot work: any bitsandbytes quantization without CUDA or without the
    package; CPU int8 is not a loading option (see ``quantize_backbone``).
    """
    if quantization is None:
        return {}
    _check_name(quantization)
    device = torch.device(device) if device is not None else _default_device()
    if device.type != "cuda":
        if quantization == "int8":
            raise ConfigError(
                "int8 at load time needs CUDA and bitsandbytes; on CPU load the backbone in fp32 and call "
                "quantize_backbone(model, 'int8') for inference"
            )
        raise ConfigError(f"{quantization} needs CUDA and bitsandbytes (this device is {device.type})")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{quantization} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    return {"quantization_config": config, "dtype": torch.bfloat16, "device_map": {"": device.index or 0}}


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def quantize_backbone(model: nn.Module, quantization: str = "int8", per_channel: bool = True) -> int:
    """Quantize the frozen backbone's ``nn.Linear`` weights to int8 in place, for CPU inference.

    ``model`` is a ``PromptModel`` (only its ``backbone`` is quantized: prefixes and heads stay fp32) or a
    bare backbone. Weights get one scale per output channel (``per_channel=False``: one per tensor, torch's
    default, which moved MiniLM's hidden states about twice as far); activations are quantized per batch at
    run time (torch dynamic quantization). Not undone by ``detach_backbone``. Returns how many linear layers
    were quantized.
    """
    _check_name(quantization)
    if quantization != "int8":
        raise ConfigError(f"{quantization} needs CUDA and bitsandbytes; on CPU only int8 is available")
    backbone = getattr(model, "backbone", model)
    output_layer = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
    linears = [m for m in backbone.modules() if type(m) is nn.Linear]
    if not [m for m in linears if m is not output_layer]:
        raise ConfigError("the backbone's layers have no nn.Linear to quantize (GPT-2's are Conv1D)")
    dtypes = {m.weight.dtype for m in linears}
    if dtypes != {torch.float32}:
        raise ConfigError(f"int8 on CPU needs an fp32 backbone (torch dynamic quantization); it is {dtypes}")
    if any(m.weight.device.type != "cpu" for m in linears):
        raise ConfigError("int8 through quantize_backbone is for CPU; on CUDA load with quantization='int8'")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao (see above)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao import quantization

        qconfig = (
            quantization.per_channel_dynamic_qconfig if per_channel else quantization.default_dynamic_qconfig
        )
        quantization.quantize_dynamic(backbone, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    backbone.ptuning_quantization = quantization
    return len(linears)


def is_quantized(backbone: nn.Module) -> bool:
    """Whether ``quantize_backbone`` or bitsandbytes quantized this backbone (no backward on CPU int8)."""
    return bool(getattr(backbone, "ptuning_quantization", None) or getattr(backbone, "is_quantized", False))
