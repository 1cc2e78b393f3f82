"""Loading backbones: a family without sdpa loads with the attention it supports, and says so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from core_tiny import tiny_backbone
from safetensors.torch import load_file
from tiny_models import save_tiny_bert
from transformers import AutoTokenizer

from ptuning import cli
from ptuning.core.backbones import (
    PACKAGED_MODELS,
    BackboneNotFoundError,
    load_backbone,
    packaged_minilm_path,
    recorded_name,
)


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


def test_a_folder_saved_without_its_tokenizer_is_refused(tmp_path) -> None:
    """transformers 5 builds an empty tokenizer there: every word would become [UNK] and every score wrong."""
    folder = save_tiny_bert(tmp_path / "bert")
    load_backbone(folder)  # whole, it loads
    for name in Path(folder).iterdir():
        if name.name not in ("config.json", "model.safetensors"):
            name.unlink()
    with pytest.raises(BackboneNotFoundError, match=r"its tokenizer has \d+ tokens for the model's 30522"):
        load_backbone(folder)


def test_a_local_folder_is_recorded_absolute_and_tilde_is_expanded(tmp_path, monkeypatch) -> None:
    """A checkpoint naming 'models/bert' would load only from the folder its run was started in."""
    save_tiny_bert(tmp_path / "models" / "bert")
    monkeypatch.chdir(tmp_path)
    model, _ = load_backbone("models/bert")
    assert model.ptuning_source == str(tmp_path / "models" / "bert")
    monkeypatch.setenv("HOME", str(tmp_path))
    model, _ = load_backbone("~/models/bert")
    assert model.ptuning_source == str(tmp_path / "models" / "bert")
    assert recorded_name("minilm") == "minilm" and recorded_name("org/some-model") == "org/some-model"


def test_every_packaged_name_passes_the_offline_model_check(monkeypatch) -> None:
    """`--model mpnet` (README, the *-mpnet presets) was taken for a hub id and refused offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in PACKAGED_MODELS:
        cli._check_model(name)
    with pytest.raises(BackboneNotFoundError):
        cli._check_model("no-such-org/no-such-model")


def test_pickled_weights_are_refused_without_being_unpickled(tmp_path, monkeypatch) -> None:
    folder = Path(save_tiny_bert(tmp_path / "bert"))
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", _never)
    with pytest.raises(BackboneNotFoundError, match=r"holds only pickled weights \(\*\.bin\); loading never"):
        load_backbone(str(folder))


def _never(*args, **kwargs):
    raise AssertionError("torch.load was called")
