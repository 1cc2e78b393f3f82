"""The seq2seq-lm task: causal-lm's prompt/response files for an encoder-decoder (tiny T5, word tokenizer)."""

from __future__ import annotations

import json

import pytest
import torch
from generative_tiny import EOS, PAD, QA_ROWS, tiny_tokenizer, vocab_size, write_jsonl
from transformers import T5Config, T5ForConditionalGeneration

from ptuning.cli import main
from ptuning.core.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.generation import generate_texts
from ptuning.serve.app import create_app
from ptuning.tasks.base import DataError
from ptuning.tasks.generative import Seq2SeqLmTask
from ptuning.tasks.registry import get_task


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    config = T5Config(
        vocab_size=vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config).eval()


def test_features_are_the_prompt_for_the_encoder_and_response_plus_eos_as_labels(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task = get_task("seq2seq-lm")
    assert isinstance(task, Seq2SeqLmTask)
    examples, _ = task.read(str(write_jsonl(tmp_path / "train.jsonl", QA_ROWS[:2])), "train")
    features, report = task.featurize(examples, tokenizer, max_length=16)
    ids = tokenizer.convert_tokens_to_ids
    assert features[0]["input_ids"] == ids(["what", "is", "the", "capital", "of", "france"])
    assert features[0]["labels"] == [ids("paris"), EOS]
    assert features[1]["labels"] == [ids("rome"), EOS]
    assert features[0]["prompt_length"] == 6 and report.truncated == 0
    # A prompt over max_length is cut from the left, and counted.
    features, report = task.featurize(examples, tokenizer, max_length=4)
    assert features[0]["input_ids"] == ids(["the", "capital", "of", "france"])
    assert report.truncated == 2


def test_ptuning_train_on_a_t5_folder_lowers_the_loss_and_scores_generations(tmp_path, capsys) -> None:
    base = tmp_path / "tiny-t5"
    tiny_t5().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", QA_ROWS * 4)
    write_jsonl(data / "dev.jsonl", QA_ROWS)
    write_jsonl(data / "test.jsonl", QA_ROWS[:2])
    run = tmp_path / "run"
    code = main([
        "train", "--task", "seq2seq-lm", "--model", str(base), "--data", str(data),
        "--output-dir", str(run), "--method", "ptuning-v2", "--prefix-length", "4",
        "--learning-rate", "5e-2", "--epochs", "12", "--batch-size", "4", "--eval-batch-size", "3",
        "--max-length", "16", "--no-log-tensorboard",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["dev"]) == {"rouge1", "rouge2", "rougeL", "bleu4", "exact_match"}
    losses = [entry["train_loss"] for entry in summary["history"]]
    assert losses[-1] < 0.7 * losses[0]
    assert summary["dev"]["rougeL"] > 0  # some dev answers are right after 48 updates
    saved = read_checkpoint_config(run / "checkpoint")
    assert (
        saved["base_model"]["causal_lm"] is True
        and saved["tasks"]["seq2seq-lm"]["head"]["kind"] == "seq2seq-lm"
    )
    # ptuning eval rebuilds task and model from the checkpoint and scores dev as training did.
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "checkpoint"), "--data", str(data)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["rougeL"] == summary["dev"]["rougeL"]
    # The checkpoint reloads its base (with the LM head) and generates.
    reloaded = load_checkpoint(run / "checkpoint")
    tokenizer = tiny_tokenizer()
    prompts = [tokenizer("what is the capital of france")["input_ids"]]
    texts = generate_texts(reloaded, tokenizer, prompts, batch_size=1, max_new_tokens=4)
    assert isinstance(texts[0], str)


def test_the_server_refuses_a_seq2seq_checkpoint_saying_what_serves_it(tmp_path) -> None:
    """A folder of seq2seq-lm checkpoints makes the server load its base with the LM head; the refusal said
    "the server's backbone is a causal LM (it serves causal-lm checkpoints only)", which blames the backbone.
    It now says that the server does not decode encoder-decoders, and what does."""
    base = tmp_path / "tiny-t5"
    tiny_t5().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    model = PromptModel(tiny_t5(), "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("answer", HeadSpec(HeadKind.SEQ2SEQ_LM))
    folder = tmp_path / "served"
    save_checkpoint(model, folder / "answers", task_names={"answer": "seq2seq-lm"})
    registry = create_app(folder, str(base)).state.registry
    assert not registry.tasks
    assert registry.failed["answers"].endswith(
        "head 'answer' is seq2seq-lm; the server generates with decoder-only models only (an encoder-decoder "
        "needs its encoder pass per request): use ptuning predict"
    )


def _long_example(prompt: str, response: str) -> dict:
    return {"id": 0, "source": "f.jsonl, line 1", "prompt": prompt, "response": response, "history": [],
            "references": [response]}  # fmt: skip


def test_an_example_cut_in_prompt_and_response_is_counted_once_with_each_cut_in_the_notes() -> None:
    """report.truncated counts examples, as for every task: it said 2 of 1 example."""
    long = "one two three four five six"
    _, report = Seq2SeqLmTask().featurize([_long_example(long, long)], tiny_tokenizer(), max_length=4)
    assert (report.examples, report.truncated, report.cut_for_generation) == (1, 1, 1)
    assert any("1 of 1 prompts were longer than max_length=4" in note for note in report.notes)
    assert any("1 responses were longer than max_length=4" in note for note in report.notes)


def test_truncation_error_refuses_a_long_response_naming_the_line_and_its_length() -> None:
    """causal-lm refuses it; seq2seq-lm cut it silently (a note only) under truncation='error'."""
    task = Seq2SeqLmTask(truncation="error")
    with pytest.raises(
        DataError, match=r"f\.jsonl, line 1: response \(7 tokens\) is longer than max_length=4"
    ):
        task.featurize([_long_example("say", "one two three four five six")], tiny_tokenizer(), max_length=4)
    features, report = task.featurize([_long_example("say", "one two")], tiny_tokenizer(), max_length=4)
    assert features[0]["labels"] == [*tiny_tokenizer().convert_tokens_to_ids(["one", "two"]), EOS]
    assert report.truncated == 0
