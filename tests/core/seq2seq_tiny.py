"""Tiny random encoder-decoders (T5, mT5, BART, mBART) for the seq2seq proofs, built from configs (no hub).

Encoder 2 layers, decoder 2 layers (T5: 3 encoder layers, so the slot arithmetic E + j is not E = D), every
dropout at 0, T5's relative bias scaled up so that a bias wrongly given to prefix columns shows.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

SEQ2SEQ_FAMILIES = ("t5", "mt5", "bart", "mbart")
VOCAB = 100
PAD, EOS, START = 0, 2, 0

_T5 = dict(d_model=16, d_kv=4, d_ff=32, num_layers=3, num_decoder_layers=2, num_heads=4, dropout_rate=0.0)
_BART = dict(
    d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=32, decoder_ffn_dim=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    max_position_embeddings=64,
)  # fmt: skip
_SIZES = {"t5": _T5, "mt5": _T5, "bart": _BART, "mbart": _BART}


def tiny_seq2seq(family: str, attn_implementation: str = "eager", seed: int = 0) -> torch.nn.Module:
    ids = dict(pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=START, bos_token_id=1)
    ids |= dict(forced_eos_token_id=None, forced_bos_token_id=None)  # BART forces EOS at max length
    config = AutoConfig.for_model(family, vocab_size=VOCAB, **_SIZES[family], **ids)
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attn_implementation).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_attention_bias" in name:
                parameter.mul_(8.0)
    return model


def seq2seq_model(
    family: str, attn_implementation: str = "eager", prefix_length: int = 3, seed: int = 0
) -> PromptModel:
    """A PromptModel with one seq2seq-lm task ``s`` whose prefix is moved off its (tiny) initial values."""
    model = PromptModel(
        tiny_seq2seq(family, attn_implementation, seed),
        "ptuning-v2",
        PrefixConfig(prefix_length=prefix_length),
    )
    model.add_task("s", HeadSpec(HeadKind.SEQ2SEQ_LM))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.prefixes.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def random_tokens(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Ids clear of pad/start/eos/bos (0-2) so no row ends early or reads as padding."""
    return torch.randint(3, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))
