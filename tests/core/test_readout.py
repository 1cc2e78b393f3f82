"""First-token readout (core/readout.py): a [CLS] head's logits and gradients equal the full forward's, while
the last layer's feed-forward really runs for one position only."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from core_tiny import assert_close, build, family_available, pad_id, pad_rows, random_ids

from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.readout import FIRST_TOKEN_FAMILIES, READOUT_ATTRIBUTE

FAMILIES = sorted(FIRST_TOKEN_FAMILIES)


def skip_if_absent(family: str) -> None:
    if reason := family_available(family):
        pytest.skip(reason)


def padded_batch(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_ids(3, 9)
    return pad_rows([ids[0], ids[1, :5], ids[2, :2]], "right", pad_id(family))


@contextmanager
def feed_forward_positions(model: PromptModel):
    """Records how many positions the last layer's feed-forward ran for, per call."""
    seen: list[int] = []
    intermediate = model.backbone.encoder.layer[-1].intermediate
    handle = intermediate.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    try:
        yield seen
    finally:
        handle.remove()


def full_forward_logits(model: PromptModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The head over every position of the last layer: what the model computed before the readout."""
    hidden = model.encode(ids, mask, None, ["t"] * ids.shape[0])
    return model.heads["t"](hidden, mask)["logits"]


@pytest.mark.parametrize("family", FAMILIES)
def test_first_token_logits_equal_the_full_forward_and_skip_the_other_positions(family) -> None:
    skip_if_absent(family)
    built = build(family)
    model = built.model
    ids, mask = padded_batch(family)
    assert model.reads_first_token("t")
    with torch.no_grad(), feed_forward_positions(model) as seen:
        expected = full_forward_logits(model, ids, mask)
        actual = model(input_ids=ids, attention_mask=mask).logits
    assert seen == [ids.shape[1], 1]  # full forward, then the readout: position 0 alone
    assert_close(actual, expected)


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_the_prefix_and_head_gradients_are_the_full_forwards(family) -> None:
    model = build(family).model.train()  # every dropout is 0 in the tiny configs
    ids, mask = padded_batch(family)
    labels = torch.tensor([0, 1, 1])

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    logits = full_forward_logits(model, ids, mask)
    expected = gradients(torch.nn.functional.cross_entropy(logits, labels))
    with feed_forward_positions(model) as seen:
        actual = gradients(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert seen == [1]
    assert expected.keys() == actual.keys() and any("prefixes" in n for n in actual)
    for name in expected:
        assert_close(actual[name], expected[name])


def test_heads_that_read_every_position_run_the_whole_last_layer() -> None:
    model = build("bert").model
    model.add_task("tags", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["O", "B", "I"]), prefix_name="t")
    model.add_task("mean", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"], pooling="mean"), prefix_name="t")
    ids, mask = padded_batch("bert")
    with torch.no_grad(), feed_forward_positions(model) as seen:
        for task in ("tags", "mean"):
            assert not model.reads_first_token(task)
            model(input_ids=ids, attention_mask=mask, task=task)
    assert seen == [ids.shape[1]] * 2


def test_fine_tuning_and_other_families_do_not_take_it() -> None:
    assert not build("bert", method="finetune").model.reads_first_token("t")
    assert not build("distilbert").model.reads_first_token("t")


def test_detaching_removes_the_patch_of_the_last_layer() -> None:
    model = build("bert").model
    last = model.backbone.encoder.layer[-1]
    assert getattr(last, READOUT_ATTRIBUTE) and "forward" in vars(last)
    model.detach_backbone()
    assert READOUT_ATTRIBUTE not in vars(last) and "forward" not in vars(last)


@pytest.mark.parametrize("family", ["bert", "mpnet", "roberta"])
@pytest.mark.parametrize("method", ["ptuning-v2", "prompt-tuning"])  # with and without the readout shortcut
def test_a_left_padded_row_reads_its_own_first_token(family, method) -> None:
    """With left padding [CLS] is not at column 0: the head read a pad position (logits off by 0.3-2)."""
    skip_if_absent(family)
    model = build(family, method=method).model
    ids = random_ids(2, 9)
    alone = [
        model(input_ids=row[None], attention_mask=torch.ones_like(row)[None]).logits
        for row in (ids[0], ids[1, :5])
    ]
    batch, mask = pad_rows([ids[0], ids[1, :5]], "left", pad_id(family))
    with torch.no_grad():
        together = model(input_ids=batch, attention_mask=mask).logits
    assert_close(together, torch.cat(alone).detach())
