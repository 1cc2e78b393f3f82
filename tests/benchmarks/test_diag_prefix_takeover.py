"""The prefix-takeover probe (benchmarks/diag_prefix_takeover.py): its token-specific share worked by hand, its
attention share against the injected attention's own probabilities, and a two-step run on a tiny random MPNet
that records every field at every check."""

from __future__ import annotations

import argparse

import diag_prefix_takeover as probe
import pytest
import torch
from tiny_models import minilm_tokenizer_dir
from transformers import AutoTokenizer, MPNetConfig, MPNetModel

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

SENTENCES = [
    "EU B-ORG\nrejects O\nGerman B-MISC\ncall O",
    "Peter B-PER\nBlackburn I-PER\nvisits O\nLondon B-LOC",
    "BRUSSELS B-LOC\n1996-08-22 O",
    "The O\nEuropean B-ORG\nCommission I-ORG\nsaid O",
]


def test_the_token_specific_share_is_what_is_left_after_the_common_part() -> None:
    same = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    assert probe.token_specific_share(same) == pytest.approx(0.0)
    opposite = torch.tensor([[3.0, 4.0], [-3.0, -4.0]])  # mean 0: all of each state is its own
    assert probe.token_specific_share(opposite) == pytest.approx(1.0)
    shifted = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # mean (1, 1): |(0, -1)| / 1 and |(0, 1)| / sqrt(5)
    assert probe.token_specific_share(shifted) == pytest.approx((1.0 + 5**-0.5) / 2)


def tiny_mpnet(tokenizer) -> MPNetModel:
    config = MPNetConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return MPNetModel(config)


def test_the_attention_share_is_the_injected_attentions_own(tmp_path) -> None:
    """The share the probe reports is the prefix columns of the real tokens' rows in MPNet's prefixed attention
    (its probabilities, asked for in a separate forward here), and the probe leaves the config as it was."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    backbone = tiny_mpnet(tokenizer).eval()
    with torch.no_grad():  # a bias large enough that leaving it out would move every share
        backbone.encoder.relative_attention_bias.weight.normal_(0.0, 3.0)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0))
    model.add_task(probe.TASK, HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["O", "B-PER"]))
    texts = ["peter visits london today", "the european commission said so on monday", "eu"]
    features = [{"input_ids": tokenizer(text)["input_ids"]} for text in texts]
    batch_probe = probe.Probe(features, tokenizer.pad_token_id)

    shares = batch_probe.measure(model)["prefix_attention"]

    ids, mask = batch_probe.batch["input_ids"], batch_probe.batch["attention_mask"]
    inputs = model._backbone_inputs(ids, mask, None, [probe.TASK] * len(texts))
    with torch.no_grad():
        attentions = model.backbone(**inputs, output_attentions=True).attentions
    real = mask.bool()
    expected = [layer[..., :4].sum(-1).permute(0, 2, 1)[real].mean().item() for layer in attentions]
    assert shares == pytest.approx(expected, abs=6e-4)  # the probe rounds to 3 decimals
    assert not backbone.config.output_attentions


def test_a_short_run_records_every_field_at_each_check(tmp_path) -> None:
    model_dir = tmp_path / "mpnet"
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    tokenizer.save_pretrained(model_dir)
    tiny_mpnet(tokenizer).save_pretrained(model_dir)
    data = tmp_path / "conll2003"
    data.mkdir()
    for name in ("train.txt", "valid.txt"):
        (data / name).write_text("\n\n".join(s.replace(" ", " NN O ") for s in SENTENCES) + "\n")
    args = argparse.Namespace(
        model=str(model_dir), data=data, method="prefix-mlp", learning_rate=1e-3, checks=[0, 2],
        train_examples=4, batch_size=2, seed=0, threads=1,
    )  # fmt: skip
    records = probe.run(args)
    assert [r["step"] for r in records] == [0, 2]
    assert records[0]["loss"] is None and records[1]["loss"] > 0
    for record in records:
        assert len(record["prefix_attention"]) == 2
        assert all(0 < share < 1 for share in record["prefix_attention"])
        assert 0 < record["token_specific"] <= 1 and record["key_ratio"] > 0 and record["value_ratio"] > 0
