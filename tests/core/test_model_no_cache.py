"""A head's forward asks a decoder for no generation cache: left to its default, the decoder builds one and keeps
every layer's keys and values alive until the pass ends, which a one-pass head never reads (``generate`` has its
own path and still caches)."""

from __future__ import annotations

import pytest
import torch
from core_tiny import build, family_available, random_ids, tiny_config
from seq2seq_tiny import random_tokens, tiny_seq2seq
from transformers import AutoModel, cache_utils

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

DECODERS = ["llama", "gpt2", "qwen3", "gpt_neox", "opt"]
METHODS = ["ptuning-v2", "prompt-tuning", "finetune"]


@pytest.fixture
def caches_built(monkeypatch) -> list[str]:
    """The class name of every cache built from the moment it is cleared."""
    built: list[str] = []
    original = cache_utils.Cache.__init__

    def counting(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(cache_utils.Cache, "__init__", counting)
    return built


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", DECODERS)
def test_a_pooled_head_on_a_decoder_builds_no_cache(
    family: str, method: str, caches_built: list[str]
) -> None:
    if reason := family_available(family):
        pytest.skip(reason)
    torch.manual_seed(0)
    model = PromptModel(AutoModel.from_config(tiny_config(family)), method, PrefixConfig(prefix_length=4))
    model.add_task("c", HeadSpec(HeadKind.CLASSIFICATION, ["neg", "pos"]))
    caches_built.clear()  # attaching the prefix ran one probe forward of the bare backbone
    ids = random_ids(2, 5)
    with torch.no_grad():
        model.eval()(ids, torch.ones_like(ids), task="c")
    assert caches_built == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", DECODERS)
def test_the_causal_lm_head_builds_no_cache_but_generation_does(
    family: str, method: str, caches_built: list[str]
) -> None:
    if reason := family_available(family):
        pytest.skip(reason)
    built = build(family, method)
    caches_built.clear()  # attaching the prefix ran one probe forward of the bare backbone
    ids = random_ids(2, 5)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        built.model(ids, mask, task="t", labels=ids)
    assert caches_built == []
    built.model.generate(ids, mask, task="t", max_new_tokens=2, do_sample=False)
    assert caches_built, "generation must still cache"


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_heads_and_seq2seq_loss_build_no_cache(family: str, caches_built: list[str]) -> None:
    model = PromptModel(tiny_seq2seq(family), "ptuning-v2", PrefixConfig(prefix_length=4))
    model.add_task("c", HeadSpec(HeadKind.CLASSIFICATION, ["neg", "pos"]))  # reads the encoder alone
    model.add_task("s", HeadSpec(HeadKind.SEQ2SEQ_LM))
    caches_built.clear()  # attaching the prefix ran one probe forward of the bare backbone
    ids = random_tokens(2, 5)
    with torch.no_grad():
        model.eval()(ids, torch.ones_like(ids), task="c")
        model(ids, torch.ones_like(ids), task="s", labels=ids)
    assert caches_built == []
