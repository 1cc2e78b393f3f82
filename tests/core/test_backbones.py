"""Loading backbones: a family without sdpa loads with the attention it supports, and says so."""

from __future__ import annotations

import logging

from core_tiny import tiny_backbone
from transformers import AutoTokenizer

from ptuning.core.backbones import load_backbone, packaged_minilm_path


def test_a_family_without_sdpa_loads_with_eager_under_the_default_sdpa(tmp_path, caplog) -> None:
    folder = tmp_path / "deberta"
    tiny_backbone("deberta-v2").save_pretrained(folder)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="ptuning.core.backbones"):
        model, _ = load_backbone(str(folder))  # attn_implementation="sdpa" by default
    assert model.config._attn_implementation == "eager"
    notes = [r.getMessage() for r in caplog.records if r.name == "ptuning.core.backbones"]
    assert (
        len(notes) == 1 and "has no sdpa attention; loading it with attn_implementation='eager'" in notes[0]
    )


def test_a_family_with_sdpa_keeps_it(tmp_path) -> None:
    folder = tmp_path / "bert"
    tiny_backbone("bert").save_pretrained(folder)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(folder)
    model, _ = load_backbone(str(folder))
    assert model.config._attn_implementation == "sdpa"
