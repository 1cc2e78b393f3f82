"""Quantized frozen backbones: 8-bit and 4-bit (NF4) through bitsandbytes on CUDA, int8 on CPU for inference.

Why: a frozen backbone is never updated, so its weights can be stored in 8 or 4 bits while the prefix and
heads train in fp32 (QLoRA's recipe, applied to prefixes: ChatGLM's P-tuning v2 runs at 4 bits).

* CUDA: ``load_backbone(..., quantization="int8" | "nf4")`` passes a ``BitsAndBytesConfig`` to
  ``from_pretrained`` (compute dtype bf16, NF4 with double quantization). Prefixes and heads stay fp32; the
  prefix key/values are cast to the attention dtype like for any bf16 backbone (``core.precision``).
* CPU: bitsandbytes has no CPU kernels here, so ``nf4`` is refused. ``quantize_backbone`` quantizes an
  already loaded backbone's ``nn.Linear`` layers in place, two ways:

  - ``"int8"`` (weight-only): each weight is stored as int8 with one fp32 scale per output channel
    (``Int8WeightOnlyLinear``) and dequantized to the activation dtype inside ``forward``; activations are
    never quantized. Gradients flow through it to the inputs (so to the prefix).
  - ``"int8-dynamic"``: torch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``): int8
    weights *and* int8 activations, quantized per batch at run time; it has no backward, so a forward
    under autograd is refused (``PromptModel``).

  The LM head (the output embeddings) stays as it is in the weight-only path, as bitsandbytes leaves it.
  Fingerprint rule: a quantized backbone is the same base as the weights it was quantized from, so
  ``quantize_backbone`` records the fingerprints of the unquantized weights on the backbone before it
  changes a single layer (``core.fingerprint``); a prompt trained on the fp32 (or bf16) model then loads
  onto the int8 one, at startup or added later to a running server.
  torchao (0.18.0) would be the maintained choice, and it installs beside torch 2.13; but once installed,
  transformers imports it in every process, which adds two "Failed to load" warnings (its CUDA extensions)
  to every command's stderr, so it is not a dependency. Its CPU weight-only kernel
  (``torch._weight_int8pack_mm``) was also ~35x slower here than dequantize-then-``F.linear``.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptuning.core.config import ConfigError
from ptuning.core.devices import inference_device
from ptuning.core.fingerprint import FINGERPRINT_VERSIONS, FINGERPRINTS_ATTRIBUTE, base_fingerprint
from ptuning.core.precision import backbone_dtype, dtype_name, floating_dtype

QUANTIZATIONS = ("int8", "nf4")  # at load time, through bitsandbytes (CUDA)
CPU_QUANTIZATIONS = ("int8", "int8-dynamic")  # after loading, through ``quantize_backbone`` (CPU)


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
    if quantization == "int8-dynamic":
        raise ConfigError(
            "int8-dynamic is torch's CPU dynamic quantization: load the backbone, then quantize_backbone()"
        )
    _check_name(quantization)
    device = inference_device(device)
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


def quantizes_after_loading(quantization: str | None, device: str | torch.device | None = None) -> bool:
    """Whether ``quantization`` is applied by ``quantize_backbone`` to a loaded backbone (CPU int8 kinds)
    rather than by bitsandbytes while loading: int8-dynamic always, int8 when the model runs on the CPU
    (``device``, None: CUDA when there is one, ``core.devices``)."""
    return quantization == "int8-dynamic" or (
        quantization == "int8" and inference_device(device).type == "cpu"
    )


def check_quantization(
    quantization: str | None, device: torch.device, dtype: str | torch.dtype | None = None
) -> bool:
    """``quantizes_after_loading`` for a model that is to run on ``device``, loaded in ``dtype``, having refused
    in one line, before any slow load, what cannot work there: int8-dynamic off the CPU (torch's dynamic
    quantization has CPU kernels only) or on a half backbone, bitsandbytes kinds without CUDA or without the
    package (``loading_kwargs``)."""
    if quantizes_after_loading(quantization, device):
        if device.type != "cpu":
            raise ConfigError(
                f"--backbone-quantization {quantization} runs on the CPU only (torch dynamic quantization); "
                f"on {device} use int8 or nf4 (bitsandbytes), or --device cpu"
            )
        resolved = backbone_dtype(dtype, device)
        if quantization == "int8-dynamic" and resolved not in (None, torch.float32):
            raise ConfigError(
                f"--backbone-quantization int8-dynamic needs an fp32 backbone (torch dynamic quantization); "
                f"--backbone-dtype {dtype} gives {dtype_name(resolved)}: use --backbone-dtype fp32, or int8"
            )
        return True
    loading_kwargs(quantization, device)
    return False


class Int8WeightOnlyLinear(nn.Module):
    """A frozen ``nn.Linear`` stored as int8 weights with one fp32 scale per output channel.

    Why: weight-only quantization keeps the activations in their own dtype, so the only error is the
    weights' rounding (symmetric, ``scale = max|row| / 127``); ``forward`` dequantizes the weight to the
    input's dtype and calls ``F.linear``, which keeps autograd to the inputs working.
    """

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)  # (out_features,) fp32
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightOnlyLinear:
        with torch.no_grad():
            weight = linear.weight.detach().float()  # (out, in)
            scale = weight.abs().amax(dim=1) / 127
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
            weight_int8 = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(weight_int8, scale, bias)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight_int8.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(hidden.dtype)
        return F.linear(hidden, self.dequantized_weight(hidden.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def quantize_backbone(model: nn.Module, quantization: str = "int8", per_channel: bool = True) -> int:
    """Quantize the frozen backbone's ``nn.Linear`` layers to int8 in place, for CPU inference.

    ``model`` is a ``PromptModel`` (only its ``backbone`` is quantized: prefixes and heads stay fp32) or a
    bare backbone. ``"int8"``: weight-only (``Int8WeightOnlyLinear``, any float backbone dtype, the LM head
    kept). ``"int8-dynamic"``: torch dynamic quantization of every Linear (an fp32 backbone only; weight
    scales per output channel, or one per tensor with ``per_channel=False``, torch's default). The
    fingerprints of the unquantized weights are recorded first (module docstring). Not undone by
    ``detach_backbone``. Returns how many linear layers were quantized.
    """
    if quantization not in CPU_QUANTIZATIONS:
        if quantization in QUANTIZATIONS:
            raise ConfigError(
                f"{quantization} needs CUDA and bitsandbytes; on CPU: {', '.join(CPU_QUANTIZATIONS)}"
            )
        raise ConfigError(
            f"CPU backbone quantization must be one of {', '.join(CPU_QUANTIZATIONS)}; got {quantization!r}"
        )
    backbone = getattr(model, "backbone", model)
    if is_quantized(backbone):
        raise ConfigError(f"the backbone is already quantized ({_quantization_of(backbone)})")
    output_layer = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
    linears = [m for m in backbone.modules() if type(m) is nn.Linear and m is not output_layer]
    if not linears:
        raise ConfigError("the backbone's layers have no nn.Linear to quantize (GPT-2's are Conv1D)")
    if any(m.weight.device.type != "cpu" for m in linears):
        raise ConfigError("int8 through quantize_backbone is for CPU; on CUDA load with quantization='int8'")
    dtypes = {m.weight.dtype for m in linears}
    if quantization == "int8-dynamic" and dtypes != {torch.float32}:
        raise ConfigError(f"int8-dynamic needs an fp32 backbone (torch dynamic quantization); it is {dtypes}")
    fingerprints = {version: base_fingerprint(backbone, version) for version in FINGERPRINT_VERSIONS}
    if quantization == "int8":
        _swap_linears(backbone, {id(m) for m in linears})
        count = len(linears)
    else:
        count = sum(1 for m in backbone.modules() if type(m) is nn.Linear)  # the LM head too
        _quantize_dynamic(backbone, per_channel)
    setattr(backbone, FINGERPRINTS_ATTRIBUTE, fingerprints)
    backbone.ptuning_quantization = quantization
    release_freed_memory()
    return count


def release_freed_memory() -> bool:
    """Hand memory freed by the replaced float weights back to the OS; True where that could be asked.

    glibc keeps freed blocks of a few MB in its heap (its mmap threshold rises after the first large frees),
    so without this the process can stay as large as before quantizing: benchmarks/bench_memory.py's 1.1 B
    Llama, built in bf16 and quantized, held 2,391 MB resident without ``malloc_trim(0)`` and 1,744 MB with
    it. Other C libraries: nothing to do.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): no such call
        return False
    return True


def _swap_linears(backbone: nn.Module, chosen: set[int]) -> None:
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in chosen:
                setattr(parent, name, Int8WeightOnlyLinear.from_linear(child))


def _quantize_dynamic(backbone: nn.Module, per_channel: bool) -> None:
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao (see above)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao import quantization

        qconfig = (
            quantization.per_channel_dynamic_qconfig if per_channel else quantization.default_dynamic_qconfig
        )
        quantization.quantize_dynamic(backbone, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)


def _quantization_of(backbone: nn.Module) -> str | None:
    if getattr(backbone, "ptuning_quantization", None):
        return backbone.ptuning_quantization
    if getattr(backbone, "is_quantized", False):  # bitsandbytes through from_pretrained
        method = getattr(getattr(backbone, "config", None), "quantization_config", None)
        return getattr(method, "quant_method", None) and str(method.quant_method) or "bitsandbytes"
    return None


def is_quantized(backbone: nn.Module) -> bool:
    """Whether ``quantize_backbone`` or bitsandbytes quantized this backbone."""
    return _quantization_of(backbone) is not None


def has_no_backward(backbone: nn.Module) -> bool:
    """torch's dynamic int8 Linear has no backward: a prefix behind it would get no gradient at all."""
    return getattr(backbone, "ptuning_quantization", None) == "int8-dynamic"


def backbone_storage(backbone: nn.Module) -> dict[str, Any]:
    """How the backbone's weights are stored: float dtype, quantization and bytes (what /health reports)."""
    return {
        "dtype": dtype_name(floating_dtype(backbone)),
        "quantization": _quantization_of(backbone),
        "bytes": sum(_bytes(value) for value in backbone.state_dict().values()),
    }


def _bytes(value: Any) -> int:
    """Bytes of a state-dict entry; torch's packed dynamic-quantized weights arrive as (qtensor, bias)."""
    if isinstance(value, tuple | list):
        return sum(_bytes(each) for each in value)
    if not isinstance(value, torch.Tensor):
        return 0
    if value.is_quantized:  # int8 values + float64 scale and int64 zero point per channel (or tensor)
        per_channel = value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        return value.int_repr().numel() + 16 * (value.q_per_channel_scales().numel() if per_channel else 1)
    return value.numel() * value.element_size()
