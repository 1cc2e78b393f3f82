"""Generation with a prefix: batching, beam search and refusals. That greedy ``generate`` (prefix via
context, real-token cache) equals a manual loop of full forwards, with dynamic and static caches, is checked
for every decoder family by the conformance suite (test_conformance.py), which uses the loop below.

Decoders here use a larger init range (0.3) so random models do not just repeat one token, which would let
a generation that ignored the prefix pass by accident.
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import Built, build, pad_rows, random_ids
from transformers import GenerationConfig

from ptuning.core.config import ConfigError

PAD, EOS = 0, 2  # the tiny decoders' pad and eos ids
NEW_TOKENS = 6


def generator(family: str) -> Built:
    return build(family, prefix_length=4, config_overrides={"initializer_range": 0.3})


def prompts() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Two prompts of lengths 5 and 3, left-padded (the side generation needs)."""
    rows = [random_ids(1, 5)[0], random_ids(1, 3, seed=2)[0]]
    ids, mask = pad_rows(rows, "left", PAD)
    return ids, mask, rows


@torch.no_grad()
def greedy_by_full_forward(built: Built, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Greedy decoding with no cache: every step reruns the prompt model on the whole sequence so far.
    Rows that produced EOS continue with PAD, as ``generate`` does."""
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    new = []
    for _ in range(NEW_TOKENS):
        logits = built.model(ids, mask).logits[:, -1]
        token = logits.argmax(dim=-1).masked_fill(finished, PAD)
        finished |= token == EOS
        new.append(token)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(new, dim=1)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_left_padded_batch_generates_what_single_rows_generate(family: str) -> None:
    built = generator(family)
    ids, mask, rows = prompts()
    batched = built.model.generate(ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    for i, row in enumerate(rows):
        alone = built.model.generate(row[None], max_new_tokens=NEW_TOKENS, do_sample=False)
        assert torch.equal(batched[i], alone[0])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_beam_search_runs_with_a_prefix(family: str) -> None:
    built = generator(family)
    ids, mask, _ = prompts()
    beams = built.model.generate(
        ids, mask, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False
    )
    assert beams.shape[0] == 4 and 1 <= beams.shape[1] <= 4
    assert int(beams.min()) >= 0 and int(beams.max()) < 100


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_shift_mode_generation_numbers_real_tokens_after_the_prefix_as_forward_does(family: str) -> None:
    # generate() alone would put real tokens at 0..; a shift-mode prefix (PEFT's numbering) was trained with
    # them at P.. (rotary models too: prefix keys are not rotated), so generate must get P.. as well.
    built = build(family, prefix_length=4, position_mode="shift", config_overrides={"initializer_range": 0.3})
    ids, mask, _ = prompts()
    generated = built.model.generate(ids, mask, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(generated, greedy_by_full_forward(built, ids, mask))


@pytest.mark.parametrize("mode, fits", [("keep", 5), ("shift", 2)])
def test_generation_past_the_position_table_is_refused_before_decoding(mode: str, fits: int) -> None:
    """GPT-2's 64 positions, P = 3, a 60-token prompt: one new token more than fits failed mid-decoding with
    IndexError (a device assert on CUDA). The last new token takes no position; shift spends P on the prefix."""
    built = build("gpt2", prefix_length=3, position_mode=mode)
    ids = random_ids(1, 60)
    assert built.model.generate(ids, max_new_tokens=fits, do_sample=False).shape == (1, fits)
    message = rf"the longest prompt \(60 tokens.*\) \+ max_new_tokens \({fits + 1}\) - 1 exceed gpt2's 64"
    with pytest.raises(ConfigError, match=message):
        built.model.generate(ids, max_new_tokens=fits + 1, do_sample=False)
    with pytest.raises(ConfigError, match=message):  # max_length counts the prompt's columns
        built.model.generate(ids, max_length=61 + fits, do_sample=False)
    with pytest.raises(ConfigError, match=message):  # as generation.texts passes its settings
        built.model.generate(
            ids, generation_config=GenerationConfig(max_new_tokens=fits + 1, do_sample=False)
        )
