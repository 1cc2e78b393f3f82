"""Loading a backbone prints no transformers LOAD REPORT table; one line only when chosen weights are missing."""

from __future__ import annotations

import logging

import torch
from safetensors.torch import load_file, save_file
from tiny_models import minilm_tokenizer_dir, save_tiny_bert
from transformers import AutoTokenizer, BertConfig, BertModel

from ptuning.core.backbones import load_backbone

MISSING_LINE = "weights are not in the checkpoint and start random"


def _bert_with_pooler(folder) -> str:
    """Like a sentence-embedding checkpoint: it holds pooler weights that our encoders do not build."""
    AutoTokenizer.from_pretrained(minilm_tokenizer_dir()).save_pretrained(folder)
    config = BertConfig(
        vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=True).save_pretrained(folder)
    return str(folder)


def test_unused_checkpoint_weights_print_nothing(tmp_path, capfd, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        load_backbone(_bert_with_pooler(tmp_path))
    assert "LOAD REPORT" not in capfd.readouterr().err + caplog.text
    assert not [r for r in caplog.records if MISSING_LINE in r.getMessage()]


def test_missing_weights_of_the_chosen_model_are_one_line(tmp_path, capfd, caplog) -> None:
    folder = save_tiny_bert(tmp_path / "bert")
    weights = load_file(f"{folder}/model.safetensors")
    del weights["encoder.layer.1.output.dense.weight"]
    save_file(weights, f"{folder}/model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        load_backbone(folder)
    assert "LOAD REPORT" not in capfd.readouterr().err + caplog.text
    lines = [r.getMessage() for r in caplog.records if MISSING_LINE in r.getMessage()]
    assert lines == [
        f"{folder}: 1 weights are not in the checkpoint and start random: encoder.layer.1.output.dense.weight"
    ]
