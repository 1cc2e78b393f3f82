"""Which vector a head reads by default: the family decides (not the class that saved the folder), the
checkpoint records the choice, and left padding is refused where it would move a token's position."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from core_tiny import family_available, pad_rows, random_ids, tiny_backbone
from seq2seq_tiny import tiny_seq2seq

from ptuning.core.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.geometry import PrefixGeometry
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.readout import FIRST_TOKEN_FAMILIES

VOCAB = 100
# Causal families (and XLNet, whose summary <cls> is last) whose base class / sequence classifier names
# nothing causal in ``architectures`` and has no module flagged ``is_causal``.
CAUSAL_BASES = {
    "bloom": lambda: transformers.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=VOCAB),
    "mpt": lambda: transformers.MptConfig(d_model=32, n_layers=2, n_heads=4, vocab_size=VOCAB),
    "xglm": lambda: transformers.XGLMConfig(
        d_model=32, num_layers=2, attention_heads=4, ffn_dim=64, vocab_size=VOCAB
    ),
    "openai-gpt": lambda: transformers.OpenAIGPTConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB),
    "xlnet": lambda: transformers.XLNetConfig(d_model=32, n_layer=2, n_head=4, d_inner=64, vocab_size=VOCAB),
}


def base_model(family: str, saved_as: str) -> torch.nn.Module:
    """A tiny random base model whose config says it was saved as ``saved_as`` (as a folder's would)."""
    config = CAUSAL_BASES[family]()
    config.architectures = [saved_as]
    torch.manual_seed(0)
    return transformers.AutoModel.from_config(config).eval()


def classifier(backbone: torch.nn.Module, method: str = "linear-probe") -> PromptModel:
    prefix = PrefixConfig(prefix_length=3, dropout=0.0) if method != "linear-probe" else None
    torch.manual_seed(1)
    model = PromptModel(backbone, method, prefix, head_dropout=0.0).eval()
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b", "c"]))
    return model


# ----------------------------------------------------------------- defect 1: decoder by family
@pytest.mark.parametrize("saved_as", ["Model", "ForSequenceClassification"])
@pytest.mark.parametrize("family", ["bloom", "mpt", "xglm", "openai-gpt"])
def test_a_causal_family_saved_without_its_lm_head_reads_the_whole_input(family: str, saved_as: str) -> None:
    prefix = {"bloom": "Bloom", "mpt": "Mpt", "xglm": "XGLM", "openai-gpt": "OpenAIGPT"}[family]
    model = classifier(base_model(family, prefix + saved_as))
    first = torch.tensor([[5, 17, 33, 90, 60]])
    other = torch.tensor([[5, 50, 3, 61, 7]])  # the same first token, then other words
    with torch.no_grad():
        logits = [model(ids, torch.ones_like(ids), task="t").logits for ids in (first, other)]
    # position 0 of a causal model sees only itself: a first-token head gave these two the same logits
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    assert model.geometry.is_decoder and model.heads["t"].pooling is Pooling.LAST


def test_xlnet_reads_its_final_cls_token() -> None:
    model = classifier(base_model("xlnet", "XLNetForSequenceClassification"))
    ids, mask = pad_rows([random_ids(1, 6)[0], random_ids(1, 4, seed=2)[0]], "right", 0)
    with torch.no_grad():
        logits = model(ids, mask, task="t").logits
        hidden = model.encode(ids, mask, None, ["t", "t"])
        last_real = hidden[torch.arange(2), mask.sum(-1) - 1]  # where XLNet's tokenizer puts <cls>
        expected = model.heads["t"].linear(last_real)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    assert model.heads["t"].pooling is Pooling.LAST


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("bert", Pooling.FIRST),
        ("roberta", Pooling.FIRST),
        ("electra", Pooling.FIRST),
        ("mpnet", Pooling.FIRST),
        ("albert", Pooling.FIRST),
        ("deberta-v2", Pooling.FIRST),
        ("distilbert", Pooling.FIRST),
        ("bart", Pooling.MEAN),
        ("t5", Pooling.MEAN),
    ],
)
def test_encoders_keep_their_default_and_the_first_token_readout(family: str, expected: Pooling) -> None:
    seq2seq = family in ("bart", "t5")
    if not seq2seq and (reason := family_available(family)):
        pytest.skip(reason)
    backbone = tiny_seq2seq(family) if seq2seq else tiny_backbone(family)
    model = classifier(backbone, "ptuning-v2")
    assert not model.geometry.is_decoder and model.heads["t"].pooling is expected
    assert model.reads_first_token("t") is (family in FIRST_TOKEN_FAMILIES)


@pytest.mark.parametrize("flag", [False, True])
def test_a_family_with_an_is_decoder_switch_follows_it(flag: bool) -> None:
    """BertGeneration is a causal-LM family in transformers' registry, but runs bidirectionally unless told."""
    config = transformers.BertGenerationConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, is_decoder=flag
    )
    assert PrefixGeometry.from_config(config).is_decoder is flag


# ----------------------------------------------------------------- defect 2: the pooling is recorded
@pytest.mark.parametrize(("family", "expected"), [("bloom", "last"), ("bert", "first")])
def test_a_saved_head_records_the_default_pooling_it_used(family: str, expected: str, tmp_path) -> None:
    backbone = base_model("bloom", "BloomForCausalLM") if family == "bloom" else tiny_backbone("bert")
    model = PromptModel(backbone, "linear-probe")
    spec = HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"])
    model.add_task("t", spec)
    model.add_task("tags", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["O", "X"]))
    save_checkpoint(model, tmp_path / "ckpt")
    heads = {
        task: entry["head"]
        for task, entry in json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())["tasks"].items()
    }
    assert heads["t"]["pooling"] == expected
    assert heads["tags"]["pooling"] is None  # a token head pools nothing
    assert spec.pooling is None  # the caller's spec is left as it was


def test_a_loaded_head_keeps_its_pooling_on_a_backbone_with_another_default(tmp_path) -> None:
    """The same BERT weights loaded as a decoder (is_decoder=True: last-token default) still read [CLS]."""
    model = PromptModel(tiny_backbone("bert"), "linear-probe")
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    save_checkpoint(model, tmp_path / "ckpt")
    as_decoder = tiny_backbone("bert", is_decoder=True)
    assert PrefixGeometry.from_model(as_decoder).is_decoder  # its own default would be the last token
    assert load_checkpoint(tmp_path / "ckpt", as_decoder).heads["t"].pooling is Pooling.FIRST


def test_an_older_checkpoint_without_pooling_takes_the_backbone_default(tmp_path) -> None:
    model = PromptModel(base_model("bloom", "BloomForCausalLM"), "linear-probe")
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    save_checkpoint(model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(path.read_text())
    config["tasks"]["t"]["head"]["pooling"] = None  # as checkpoints were written before it was recorded
    path.write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path / "ckpt", base_model("bloom", "BloomModel"))
    assert loaded.heads["t"].pooling is Pooling.LAST


# ----------------------------------------------------------------- defect 3: left padding without positions
@pytest.mark.parametrize("family", ["bart", "mbart"])
def test_left_padding_is_refused_where_positions_cannot_be_given(family: str) -> None:
    model = classifier(tiny_seq2seq(family), "ptuning-v2")
    rows = [random_ids(1, 6)[0], random_ids(1, 3, seed=2)[0]]
    with torch.no_grad():
        right = model(*pad_rows(rows, "right", 0), task="t").logits
        alone = model(rows[1][None], torch.ones(1, 3, dtype=torch.long), task="t").logits
        torch.testing.assert_close(right[1:], alone, rtol=0, atol=1e-5)
        left_ids, left_mask = pad_rows(rows, "left", 0)
        with pytest.raises(ConfigError, match=rf"{family} numbers positions .* right-pad the batch"):
            model(left_ids, left_mask, task="t")
        with pytest.raises(ConfigError, match="right-pad"):
            model.encode(left_ids, left_mask, None, ["t", "t"])


def test_left_padding_stays_allowed_where_positions_come_from_the_mask() -> None:
    model = classifier(tiny_seq2seq("t5"), "ptuning-v2")  # relative positions: no table to misnumber
    rows = [random_ids(1, 6)[0], random_ids(1, 3, seed=2)[0]]
    with torch.no_grad():
        left = model(*pad_rows(rows, "left", 0), task="t").logits
        alone = model(rows[1][None], torch.ones(1, 3, dtype=torch.long), task="t").logits
    torch.testing.assert_close(left[1:], alone, rtol=0, atol=1e-5)
