"""End to end: the training engine on a causal-LM task, then the prompt checkpoint reloaded for generation."""

from __future__ import annotations

import json

import pytest
import torch
from generative_tiny import QA_ROWS, tiny_causal_lm, tiny_tokenizer, write_jsonl

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.generation import generate_texts
from ptuning.training.config import TrainConfig
from ptuning.training.engine import train


@pytest.fixture
def base_folder(tmp_path):
    """A tiny Llama + tokenizer saved like a real model folder, so load_backbone() can load it by path."""
    folder = tmp_path / "tiny-llama"
    tiny_causal_lm("llama").save_pretrained(folder)
    tiny_tokenizer(chat_template=True).save_pretrained(folder)
    return folder


@pytest.fixture
def data_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", QA_ROWS * 4)
    write_jsonl(folder / "dev.jsonl", QA_ROWS)
    write_jsonl(folder / "test.jsonl", QA_ROWS[:2])
    return folder


def test_engine_trains_a_causal_lm_task_and_scores_generations(tmp_path, base_folder, data_folder) -> None:
    config = TrainConfig(
        task="causal-lm",
        model=str(base_folder),
        data_dir=str(data_folder),
        method="ptuning-v2",
        output_dir=str(tmp_path / "run"),
        prefix_length=4,
        learning_rate=3e-2,
        epochs=2,
        batch_size=4,
        eval_batch_size=3,
        max_length=32,
        log_tensorboard=False,
        task_options={"chat_template": True, "max_new_tokens": 4},
    )
    result = train(config)
    summary = result.summary
    assert summary["task"] == "causal-lm" and summary["updates"] == 8
    assert set(summary["dev"]) == {"rouge1", "rouge2", "rougeL", "bleu4", "exact_match"}
    assert summary["test"] is not None
    history_losses = [entry["train_loss"] for entry in result.history]
    assert all(loss is not None and loss == loss for loss in history_losses)
    saved = read_checkpoint_config(tmp_path / "run" / "checkpoint")
    assert saved["base_model"]["causal_lm"] is True
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task_options"]["chat_template"] is True


def test_a_causal_lm_checkpoint_reloads_its_base_and_generates_the_same(tmp_path, base_folder) -> None:
    backbone, tokenizer = load_backbone(str(base_folder), causal_lm=True)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0))
    model.add_task("t", HeadSpec(HeadKind.CAUSAL_LM))  # a random std-1 prefix stands in for a trained one
    save_checkpoint(model, tmp_path / "ckpt", {"t": "causal-lm"})

    reloaded = load_checkpoint(tmp_path / "ckpt")  # base loaded from the saved name, as a causal LM
    assert hasattr(reloaded.backbone, "lm_head")
    prompts = [tokenizer("what is the capital of france")["input_ids"], tokenizer("say a b")["input_ids"]]
    expected = generate_texts(model.eval(), tokenizer, prompts, batch_size=2, max_new_tokens=5)
    assert generate_texts(reloaded, tokenizer, prompts, batch_size=2, max_new_tokens=5) == expected
    for name, tensor in model.prefixes.state_dict().items():
        torch.testing.assert_close(reloaded.prefixes.state_dict()[name], tensor)


def test_decoding_past_the_position_table_is_refused_before_training(tmp_path) -> None:
    """--max-length fitted GPT-2's 128 learned positions, but the dev prompts + max_new_tokens did not: the
    run trained and then failed at its first evaluation, with nothing saved."""
    from ptuning.core.config import ConfigError

    base_folder = tmp_path / "tiny-gpt2"
    tiny_causal_lm("gpt2").save_pretrained(base_folder)
    tiny_tokenizer().save_pretrained(base_folder)
    data = tmp_path / "long"
    data.mkdir()
    rows = [{"prompt": " ".join(["what"] * 80), "response": "paris"}] * 4
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "dev.jsonl", rows)
    config = TrainConfig(
        task="causal-lm", model=str(base_folder), data_dir=str(data), output_dir=str(tmp_path / "run"),
        prefix_length=4, epochs=1, batch_size=4, max_length=100, log_tensorboard=False, test_split="none",
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"the longest prompt \(\d+ tokens\) \+ max_new_tokens \(64\) - 1 exceed"
    ):
        train(config)
    assert not (tmp_path / "run").exists()  # refused before the output folder was touched
