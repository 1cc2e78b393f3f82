"""``--pooling pooler``: [CLS] through the checkpoint's own pooler, as transformers' BERT classifiers
(and so PEFT) read it. The logits equal transformers' pooled output through our linear layer, the pooler stays
frozen with the backbone (and trains with it when fine-tuning), and a checkpoint keeps it."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_tiny import run_cli, save_tiny_bert, train_args
from transformers import BertModel

from ptuning.core.checkpoint import load_checkpoint, read_checkpoint_config
from ptuning.core.config import ConfigError
from ptuning.core.pooler import load_pretrained_pooler
from ptuning.tasks.registry import get_task
from ptuning.training import engine
from ptuning.training.config import TrainConfig

SENTENCES = ["a lovely film", "boring and far too long for what it has to say"]


@pytest.fixture(scope="module")
def pooled_bert(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-pooler"), pooler=True)


def pooled_reference(folder: str, tokenizer, head_linear: torch.nn.Linear) -> torch.Tensor:
    """transformers' BertModel with its pooler, then our head's linear layer: what BertForSequenceClassification
    computes (its dropout off)."""
    bert = BertModel.from_pretrained(folder, add_pooling_layer=True).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return head_linear(bert(**batch).pooler_output)


def logits_of(model, tokenizer, task: str = "sst2") -> torch.Tensor:
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch, task=task).logits


def test_the_head_reads_cls_through_the_checkpoints_pooler(pooled_bert) -> None:
    config = TrainConfig(model=pooled_bert, task="sst2", method="linear-probe", pooling="pooler")
    model, tokenizer = engine.build_model(config, get_task("sst2"))
    reference = pooled_reference(pooled_bert, tokenizer, model.heads["sst2"].linear)
    torch.testing.assert_close(logits_of(model, tokenizer), reference, rtol=1e-5, atol=1e-6)


def test_the_pooler_is_frozen_with_the_backbone_and_trained_with_it(pooled_bert) -> None:
    config = TrainConfig(
        model=pooled_bert, task="sst2", method="ptuning-v2", prefix_length=4, pooling="pooler"
    )
    model, tokenizer = engine.build_model(config, get_task("sst2"))
    head = model.heads["sst2"]
    assert not head.dense.weight.requires_grad and not head.dense.bias.requires_grad
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    model.train()(**batch, labels=torch.tensor([1, 0]), task="sst2").loss.backward()
    assert head.dense.weight.grad is None and head.linear.weight.grad is not None
    assert all(p.grad is not None for p in model.prefixes.parameters() if p.requires_grad)

    finetune, _ = engine.build_model(config.replace(method="finetune"), get_task("sst2"))
    assert finetune.heads["sst2"].dense.weight.requires_grad


def test_a_trained_checkpoint_keeps_the_pooler_bit_for_bit(pooled_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = train_args(pooled_bert, sst2_dir, tmp_path / "run", "--max-steps", "2", "--pooling", "pooler")
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    checkpoint = tmp_path / "run" / "checkpoint"
    head = read_checkpoint_config(checkpoint)["tasks"]["sst2"]["head"]
    assert (head["pooling"], head["dense_activation"]) == ("first", "tanh")
    saved = load_file(checkpoint / "prompt.safetensors")
    base = load_file(f"{pooled_bert}/model.safetensors")
    # two AdamW updates at lr 3e-2 (which move every weight with a gradient) left the frozen pooler as it was
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["updates"] == 2
    torch.testing.assert_close(saved["heads.sst2.dense.weight"], base["pooler.dense.weight"], rtol=0, atol=0)

    backbone = BertModel.from_pretrained(pooled_bert, add_pooling_layer=False)
    loaded = load_checkpoint(str(checkpoint), backbone=backbone).heads["sst2"]
    assert loaded.dense_activation == "tanh"
    torch.testing.assert_close(loaded.dense.bias, base["pooler.dense.bias"], rtol=0, atol=0)
    torch.testing.assert_close(loaded.linear.weight, saved["heads.sst2.linear.weight"], rtol=0, atol=0)


def test_a_checkpoint_without_a_pooler_is_refused_naming_it(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    code, _, err = run_cli(train_args(tiny_bert, sst2_dir, tmp_path / "run", "--pooling", "pooler"), capsys)
    assert code == 2
    assert "--pooling pooler" in err and tiny_bert in err and "pooler.dense.weight" in err
    assert not (tmp_path / "run" / "checkpoint").exists()
    with pytest.raises(ConfigError, match="no pooler weights"):
        engine.build_model(TrainConfig(model=tiny_bert, task="sst2", pooling="pooler"), get_task("sst2"))


def test_a_tagging_head_has_no_pooled_vector(pooled_bert, conll_dir, tmp_path, capsys) -> None:
    argv = train_args(pooled_bert, conll_dir, tmp_path / "run", "--pooling", "pooler", task="conll2003")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--pooling applies to classification" in err


def test_a_pooler_that_was_never_trained_gets_a_note(pooled_bert, tmp_path, caplog) -> None:
    # BertModel starts its pooler's bias at 0, and only training moves it: the tiny model's was never trained
    dense = torch.nn.Linear(32, 32)
    with caplog.at_level(logging.WARNING, logger="ptuning.core.pooler"):
        load_pretrained_pooler(dense, pooled_bert)
    assert "pooler has an all-zero bias: it looks never trained" in caplog.text

    weights = load_file(f"{pooled_bert}/model.safetensors")
    weights["pooler.dense.bias"] = torch.full((32,), 0.01)
    (tmp_path / "trained").mkdir()
    save_file(weights, tmp_path / "trained" / "model.safetensors")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptuning.core.pooler"):
        load_pretrained_pooler(dense, str(tmp_path / "trained"))
    assert caplog.text == "" and torch.equal(dense.bias, weights["pooler.dense.bias"])
