"""The adapters real PEFT wrote (scripts/make_peft_fixture.py) and what PEFT computed with them: PEFT 0.21.2 on
transformers 5.23 (``adapter/``, ``expected.safetensors``) and PEFT 0.22.0 on transformers 5.25 over the same
bases (``adapter-peft-0.22.0/``, ``expected-peft-0.22.0.safetensors``)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

FIXTURES = Path(__file__).parent / "fixtures"
FIRST_RELEASE = "0.21.2"
PEFT_RELEASES = (FIRST_RELEASE, "0.22.0")


def fixture_backbone(name: str) -> torch.nn.Module:
    """The fixture's tiny base, loaded the way ptuning loads backbones (base model, no pooler; sdpa)."""
    folder = FIXTURES / name / "base"
    if "causal-lm" in name:
        return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    if name.startswith(("llama", "electra")):  # no pooling layer to leave out
        return AutoModel.from_pretrained(folder, attn_implementation="sdpa")
    return AutoModel.from_pretrained(folder, attn_implementation="sdpa", add_pooling_layer=False)


def _suffix(release: str) -> str:
    return "" if release == FIRST_RELEASE else f"-peft-{release}"


def expected(name: str, release: str = FIRST_RELEASE) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (row 1 right-padded), logits and (not for RoBERTa / ELECTRA) last_hidden_state from PEFT."""
    return load_file(str(FIXTURES / name / f"expected{_suffix(release)}.safetensors"))


# PEFT's outputs were computed once, on another CPU: its kernels sum in another order, and a tiny model's
# O(1) logits then differ in the last bits (up to 2e-6 measured on 2026-12-02). 1e-5 absolute is still three
# orders below what a wrong position, mask or prefix column moves them by.
PEFT_ATOL = 1e-5


def assert_peft_close(actual: torch.Tensor, computed_by_peft: torch.Tensor) -> None:
    torch.testing.assert_close(actual, computed_by_peft, atol=PEFT_ATOL, rtol=0)


def adapter_dir(name: str, release: str = FIRST_RELEASE) -> Path:
    return FIXTURES / name / f"adapter{_suffix(release)}"
