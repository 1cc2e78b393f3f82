"""An encoder-decoder run with
``--prefix-init activations`` stops with the one-line error the engine makes of the ValueError."""

from __future__ import annotations

import torch
from generative_tiny import EOS, PAD, QA_ROWS, tiny_tokenizer, vocab_size, write_jsonl
from transformers import T5Config, T5ForConditionalGeneration

from ptuning.cli import main


def test_an_encoder_decoder_run_is_refused_in_one_line(tmp_path, capsys) -> None:
    config = T5Config(
        vocab_size=vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    torch.manual_seed(0)
    base = tmp_path / "tiny-t5"
    T5ForConditionalGeneration(config).save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", QA_ROWS * 4)
    write_jsonl(data / "dev.jsonl", QA_ROWS)
    capsys.readouterr()
    code = main([
        "train", "--task", "seq2seq-lm", "--model", str(base), "--data", str(data),
        "--output-dir", str(tmp_path / "run"), "--prefix-length", "4", "--max-length", "16",
        "--prefix-init", "activations", "--no-log-tensorboard",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--prefix-init activations: model type 't5'" in err and "encoder-decoder" in err, err
