"""The prefix-takeover probe (benchmarks/diag_prefix_takeover.py): its token-specific share worked by hand, and
a two-step run on a tiny random MPNet that records every field at every check."""

from __future__ import annotations

import argparse

import diag_prefix_takeover as probe
import pytest
import torch
from tiny_models import minilm_tokenizer_dir
from transformers import AutoTokenizer, MPNetConfig, MPNetModel

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


def test_a_short_run_records_every_field_at_each_check(tmp_path) -> None:
    model_dir = tmp_path / "mpnet"
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    tokenizer.save_pretrained(model_dir)
    config = MPNetConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    MPNetModel(config).save_pretrained(model_dir)
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
