"""Which base model a prompt belongs to: a prompt trained on one backbone is meaningless on another."""

from __future__ import annotations

import hashlib
import json

import torch

_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "transformers_version",
    "_attn_implementation",
    "architectures",
    "dtype",
    "torch_dtype",
}

_FINGERPRINT_SAMPLES = 64


def base_fingerprint(backbone: torch.nn.Module) -> str:
    """A short hash of the backbone's config and weights: equal iff it is (almost surely) the same model.

    Hashes the architecture config plus, per tensor, its name, shape and 64 evenly spaced values rounded to
    bfloat16. No arithmetic touches the values, so the hash is the same on every device (sums differ between
    CPU and GPU), and the same for the fp32 and bf16 copies of one model; fast even for large models.
    """
    config = {k: v for k, v in backbone.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(backbone.state_dict().items()):
            values = tensor.detach().flatten()
            # integer spacing: a float linspace over ~10^7 elements rounds past the last index
            picks = (
                torch.arange(_FINGERPRINT_SAMPLES) * max(values.numel() - 1, 0) // (_FINGERPRINT_SAMPLES - 1)
            )
            sample = values[picks.to(values.device)] if values.numel() else values
            sample = sample.cpu().to(torch.bfloat16).view(torch.int16).tolist()
            digest.update(f"{name}|{tuple(tensor.shape)}|{sample}".encode())
    return digest.hexdigest()[:16]
