"""Which base model a prompt belongs to: a prompt trained on one backbone is meaningless on another.

Version 3 (current) hashes only what makes the model: its type, the config fields that define the
architecture (sizes, activation, normalisation, position scheme) and sampled weight values of its base
transformer (``backbone.base_model``: ``LlamaForCausalLM``'s ``model``, without the LM head), so one folder
loaded with its LM head (generative tasks) or without (heads) is one base, and a prompt moves between them
(``--init-prefix-from``). Version 2 hashed every tensor of the module under its own names, which differ
between the two loads (``model.layers.0...`` and ``lm_head`` against ``layers.0...``). Runtime flags
(``use_cache``, ``output_hidden_states``, ``pad_token_id``, ``return_dict``, dropout rates, label maps,
``dtype``, the attention backend...) are left out, so the same weights loaded with other flags are the same
base. Version 1 hashed the whole config minus a few keys. Checkpoints that carry an older version are still
checked with it (``fingerprint_version`` in their config), so they keep loading on the base they were saved with.

A quantized backbone is the same base as the weights it was quantized from: ``quantize_backbone`` computes
the fingerprints (both versions) from the unquantized weights before it changes them and records them on
the backbone (``FINGERPRINTS_ATTRIBUTE``), and ``base_fingerprint`` answers those. A bf16 copy needs no
record: its sampled values round to the same bfloat16 bits. An fp16 copy is another base: rounding to fp16
first moves about 6 % of the samples by one bfloat16 step, so a prompt trained on fp32 or bf16 weights is
refused on fp16 ones (``dtype_hint`` says so in the refusal).
"""

from __future__ import annotations

import hashlib
import json

import torch

FINGERPRINT_VERSION = 3
FINGERPRINT_VERSIONS = (1, 2, 3)  # each still checked where a checkpoint recorded it

# Config fields that define the function the weights compute (names differ between model families; a field
# a config lacks is skipped). Shapes are hashed with the tensors too, so sizes are listed only for clarity.
ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "embedding_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
    "rms_norm_eps",
    "position_embedding_type",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "attention_bias",
    "mlp_bias",
    "relative_attention",
    "max_relative_positions",
    "position_buckets",
    "pos_att_type",
    "share_att_key",
    "norm_rel_ebd",
    "position_biased_input",
    # GPT-2 spellings
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "n_positions",
    "activation_function",
    "layer_norm_epsilon",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
)

_V1_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "transformers_version",
    "_attn_implementation",
    "architectures",
    "dtype",
    "torch_dtype",
}

_FINGERPRINT_SAMPLES = 64
FINGERPRINTS_ATTRIBUTE = "ptuning_base_fingerprints"  # version -> fingerprint of the unquantized weights


def base_fingerprint(backbone: torch.nn.Module, version: int = FINGERPRINT_VERSION) -> str:
    """A short hash of the backbone's architecture and weights: equal iff it is (almost surely) the same model.

        Hashes the architecture fields of the config plus, per tensor, its name, shape and 64 evenly spaced
        values rounded to bfloat16. No arithmetic touches the values, so the hash is the same on every device
        (sums differ between CPU and GPU), and the same for the fp32 and bf16 copies of one model; fast even for
        large models. ``version=1`` gives the older hash, for checkpoints that recorded it. A quantized
    backbone answers the fingerprint recorded from its unquantized weights (module docstring).
    """
    recorded = getattr(backbone, FINGERPRINTS_ATTRIBUTE, None)
    if recorded and version in recorded:
        return recorded[version]
    config = backbone.config.to_dict()
    if version == 1:
        described = {k: v for k, v in config.items() if k not in _V1_VOLATILE_CONFIG_KEYS}
    elif version in (2, 3):
        described = {"fingerprint_version": version}
        described.update({k: config[k] for k in ARCHITECTURE_KEYS if k in config})
    else:
        raise ValueError(f"unknown fingerprint version {version!r}; known: {FINGERPRINT_VERSIONS}")
    hashed = getattr(backbone, "base_model", backbone) if version == 3 else backbone
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(hashed.state_dict().items()):
            values = tensor.detach().flatten()
            # integer spacing: a float linspace over ~10^7 elements rounds past the last index
            picks = (
                torch.arange(_FINGERPRINT_SAMPLES) * max(values.numel() - 1, 0) // (_FINGERPRINT_SAMPLES - 1)
            )
            sample = values[picks.to(values.device)] if values.numel() else values
            sample = sample.cpu().to(torch.bfloat16).view(torch.int16).tolist()
            digest.update(f"{name}|{tuple(tensor.shape)}|{sample}".encode())
    return digest.hexdigest()[:16]


def dtype_hint(backbone: torch.nn.Module, trained_on: str | None = None) -> str:
    """What to add to a fingerprint refusal when fp16 is on one side (module docstring): the backbone given
    is stored in fp16, or the checkpoint says (``base_model.dtype``) that the prompt was trained on an fp16 one."""
    if any(p.dtype is torch.float16 for p in backbone.parameters()):
        return (
            "; the backbone is stored in fp16, whose rounding changes the fingerprint of the fp32/bf16 weights a "
            "prompt is usually trained on: load it in bf16 or fp32, or train the prompt on the fp16 backbone"
        )
    if trained_on == "fp16":
        return (
            "; the prompt was trained on the backbone stored in fp16, whose rounding changes the fingerprint: "
            "load it in fp16 too (--backbone-dtype fp16; in Python, load_checkpoint(..., backbone_dtype='fp16') "
            "or a backbone loaded in fp16)"
        )
    return ""
