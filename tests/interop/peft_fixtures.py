"""The adapters real PEFT 0.21.2 wrote (scripts/make_peft_fixture.py) and what PEFT computed with them."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_backbone(name: str) -> torch.nn.Module:
    """The fixture's tiny base, loaded the way ptuning loads backbones (base model, no pooler; sdpa)."""
    folder = FIXTURES / name / "base"
    if "causal-lm" in name:
        return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    if name.startswith(("llama", "electra")):  # no pooling layer to leave out
        return AutoModel.from_pretrained(folder, attn_implementation="sdpa")
    return AutoModel.from_pretrained(folder, attn_implementation="sdpa", add_pooling_layer=False)


def expected(name: str) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (row 1 right-padded), logits and (not for RoBERTa / ELECTRA) last_hidden_state from PEFT."""
    return load_file(str(FIXTURES / name / "expected.safetensors"))


# PEFT's outputs were computed once, on another CPU: its kernels sum in another order, and a tiny model's
# O(1) logits then differ in the last bits (up to 2e-6 measured on 2026-12-02). 1e-5 absolute is still three
# orders below what a wrong position, mask or prefix column moves them by.
PEFT_ATOL = 1e-5


def assert_peft_close(actual: torch.Tensor, computed_by_peft: torch.Tensor) -> None:
    torch.testing.assert_close(actual, computed_by_peft, atol=PEFT_ATOL, rtol=0)


def adapter_dir(name: str) -> Path:
    return FIXTURES / name / "adapter"
