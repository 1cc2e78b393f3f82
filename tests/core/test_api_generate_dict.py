"""``generate(return_dict_in_generate=True)`` gives transformers' output object with the same new tokens as
the plain call, for every method and for encoder-decoders: its ``sequences`` are cut like the tensor."""

from __future__ import annotations

import pytest
import torch
from core_tiny import build, random_ids
from seq2seq_tiny import random_tokens, seq2seq_model
from transformers.utils import ModelOutput

NEW_TOKENS = 3


@pytest.mark.parametrize("method", ["ptuning-v2", "prompt-tuning"])
def test_a_causal_dict_output_holds_the_new_tokens_of_the_plain_call(method: str) -> None:
    model = build("llama", method, config_overrides={"initializer_range": 0.3}).model
    ids = random_ids(2, 5)
    plain = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    out = model.generate(
        ids, max_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True, output_scores=True
    )
    assert isinstance(out, ModelOutput)
    assert out.sequences.shape == (2, NEW_TOKENS)
    assert torch.equal(out.sequences, plain)
    assert len(out.scores) == NEW_TOKENS  # one per generated step: nothing of them to cut
    assert torch.equal(torch.stack(out.scores, 1).argmax(-1), plain)


def test_a_seq2seq_dict_output_holds_the_new_tokens_without_the_start_token() -> None:
    model = seq2seq_model("t5")
    ids = random_tokens(2, 6)
    plain = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    out = model.generate(
        ids, max_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True, output_scores=True
    )
    assert isinstance(out, ModelOutput)
    assert out.sequences.shape == plain.shape == (2, NEW_TOKENS)
    assert torch.equal(out.sequences, plain)
    assert torch.equal(torch.stack(out.scores, 1).argmax(-1), plain)
