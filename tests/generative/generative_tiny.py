"""Tiny causal LMs (GPT-2 and GQA Llama) with a word-level tokenizer, for the generative tasks' proofs.

Every word of the test data is one token, so label positions can be checked by hand. The tokenizer has
special tokens <pad>=0, <s>=1, </s>=2 (EOS), <unk>=3 and a small chat template made of known words.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = " ".join(
    [
        "what is the capital of france italy spain paris rome madrid question answer : hello hi how are you",
        "fine thanks user assistant system say a b c d e f g h one two three four five six seven eight nine",
        "ten red green blue cat dog sat on mat big small yes no",
    ]
).split(" ")
PAD, BOS, EOS = 0, 1, 2
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : {% endif %}"
)
FAMILIES = ("gpt2", "llama")
GQA_SHAPE = dict(  # 4 query heads over 2 KV heads
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def tiny_tokenizer(chat_template: bool = False) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def vocab_size() -> int:
    return len(SPECIALS) + len(WORDS)


def tiny_causal_lm(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random 2-layer causal LM in eval mode; Llama uses GQA (4 query heads over 2 KV heads)."""
    ids = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, vocab_size=vocab_size())
    if family == "gpt2":
        config = GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
        model_class = GPT2LMHeadModel
    elif family == "llama":
        config = LlamaConfig(**GQA_SHAPE, **ids)
        model_class = LlamaForCausalLM
    elif family == "mistral-window":  # every layer slides an 8-token window: shorter than prefix + prompt
        config = MistralConfig(**GQA_SHAPE, sliding_window=8, **ids)
        model_class = MistralForCausalLM
    else:
        raise ValueError(family)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return model_class(config).to(dtype).eval()


def prompt_model(
    family: str, prefix_length: int = 4, dropout: float = 0.0, task: str = "t", **backbone_kwargs
) -> PromptModel:
    """A P-tuning v2 model over a tiny causal LM; prefix std 1 so that the prefix visibly changes outputs."""
    model = PromptModel(
        tiny_causal_lm(family, **backbone_kwargs),
        "ptuning-v2",
        PrefixConfig(prefix_length=prefix_length, dropout=dropout),
    )
    model.add_task(task, HeadSpec(HeadKind.CAUSAL_LM))
    return model.eval()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


QA_ROWS = [
    {"prompt": "what is the capital of france", "response": "paris"},
    {"prompt": "what is the capital of italy", "response": "rome"},
    {"prompt": "hello how are you", "response": "fine thanks", "history": [["hi", "hello"]]},
    {"prompt": "say one two three", "response": "one two three"},
]
