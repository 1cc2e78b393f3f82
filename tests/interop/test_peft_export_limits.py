"""What an export refuses because PEFT could not run it, and what it warns about because PEFT would compute
something else for some inputs."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertModel,
    AutoModel,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    MistralConfig,
    MistralModel,
)

from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.interop.peft_export import PeftExportNote, export_peft
from ptuning.interop.peft_format import PeftFormatError
from ptuning.interop.peft_heads import mapping_for_ptuning
from ptuning.interop.peft_import import PeftWindowNote, load_peft_adapter

from .peft_fixtures import FIXTURES, fixture_backbone

SHIFT = PrefixConfig(prefix_length=2, dropout=0.0, position_mode="shift")  # what PEFT numbers positions as
TAGS = ["O", "B", "I"]


def _checkpoint(backbone: torch.nn.Module, folder, kind=HeadKind.TOKEN_CLASSIFICATION, labels=TAGS, **prefix):
    torch.manual_seed(0)
    config = PrefixConfig(**{**SHIFT.to_dict(), **prefix})
    model = PromptModel(backbone, "ptuning-v2", config, head_dropout=0.0)
    model.add_task("task", HeadSpec(kind, labels))
    if kind is HeadKind.CLASSIFICATION:
        with torch.no_grad():
            model.heads["task"].linear.bias.zero_()  # a decoder's score layer has no bias
    return save_checkpoint(model.eval(), folder)


def test_a_base_whose_forward_takes_no_cache_is_refused_as_peft_would_fail_at_its_first_forward(
    tmp_path,
) -> None:
    """DistilBERT (like DeBERTa-v2, MPNet, ModernBERT): PEFT loads the adapter and then raises 'Model does not
    support past key values' at the first call; export wrote it without a word."""
    config = DistilBertConfig(
        vocab_size=64, dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=64
    )
    DistilBertModel(config).save_pretrained(tmp_path / "base")
    backbone = AutoModel.from_pretrained(tmp_path / "base", attn_implementation="sdpa")
    checkpoint = _checkpoint(backbone, tmp_path / "checkpoint")
    with pytest.raises(
        PeftFormatError,
        match=r"checkpoint: PEFT cannot run prefix tuning on its base 'distilbert': "
        r"DistilBertForTokenClassification.forward or DistilBertModel.forward takes no past_key_values",
    ):
        export_peft(checkpoint, tmp_path / "adapter")
    with pytest.raises(
        PeftFormatError, match=r"'distilbert': DistilBertModel.forward takes no past_key_values"
    ):
        export_peft(checkpoint, tmp_path / "adapter", prefix_only=True)  # FEATURE_EXTRACTION loads the base
    assert not (tmp_path / "adapter").exists()


def test_a_base_whose_layers_share_one_prefix_is_refused(tmp_path) -> None:
    """ALBERT's 2 layers share weights and so one prefix; the adapter said num_layers 1 for a 2-layer base."""
    config = AlbertConfig(
        vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    AlbertModel(config).save_pretrained(tmp_path / "base")
    backbone = AutoModel.from_pretrained(
        tmp_path / "base", attn_implementation="sdpa", add_pooling_layer=False
    )
    checkpoint = _checkpoint(backbone, tmp_path / "checkpoint")
    with pytest.raises(
        PeftFormatError, match="'albert' has 2 layers \\(num_hidden_layers\\) but its prefix 1"
    ):
        export_peft(checkpoint, tmp_path / "adapter", prefix_only=True)


def test_a_head_refusal_names_the_checkpoint_and_task_and_gives_the_export_hint(tmp_path) -> None:
    with pytest.raises(
        PeftFormatError, match="ContextPooler.*export the prefix alone with --prefix-only"
    ) as error:
        mapping_for_ptuning(HeadKind.CLASSIFICATION, None, None, "deberta-v2")
    assert "prefix_only=True" not in str(error.value)  # the import's hint, which export has no option for
    checkpoint = _checkpoint(
        fixture_backbone("bert-seq-cls"), tmp_path / "checkpoint", HeadKind.CLASSIFICATION
    )
    with pytest.raises(
        PeftFormatError,
        match=f"^{re.escape(str(checkpoint))}, task 'task': this classification head is one linear layer",
    ):
        export_peft(checkpoint, tmp_path / "adapter")


def test_an_accepted_position_change_is_said_out_loud(tmp_path) -> None:
    checkpoint = _checkpoint(
        fixture_backbone("llama-gqa-causal-lm"),
        tmp_path / "checkpoint",
        HeadKind.CAUSAL_LM,
        None,
        position_mode="keep",
    )
    with pytest.warns(
        PeftExportNote, match="position_mode 'keep' exported anyway.*computes other outputs in PEFT"
    ):
        export_peft(checkpoint, tmp_path / "adapter", allow_position_change=True)


def test_a_decoder_classifier_whose_pad_token_is_its_eos_token_is_warned_about(tmp_path) -> None:
    """transformers pools the last token that is not pad_token_id: with pad = eos (SmolLM2) an input ending in
    eos is pooled elsewhere in PEFT than in ptuning."""
    base = tmp_path / "base"
    shutil.copytree(FIXTURES / "llama-gqa-seq-cls" / "base", base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "pad_token_id": config["eos_token_id"]}))
    backbone = AutoModel.from_pretrained(base, attn_implementation="sdpa")
    checkpoint = _checkpoint(backbone, tmp_path / "checkpoint", HeadKind.CLASSIFICATION, ["no", "yes"])
    with pytest.warns(PeftExportNote, match="pad_token_id 2 is its end-of-sequence token"):
        export_peft(checkpoint, tmp_path / "adapter")
    fixture = _checkpoint(
        fixture_backbone("llama-gqa-seq-cls"), tmp_path / "fixture", HeadKind.CLASSIFICATION, ["no", "yes"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", PeftExportNote)  # pad 0, eos 2: nothing to say
        export_peft(fixture, tmp_path / "fixture-adapter")


def test_a_qa_head_on_a_base_with_token_types_is_warned_about(tmp_path) -> None:
    """PEFT 0.21.2's question answering drops token_type_ids under prefix tuning, while ptuning's squad
    features give context tokens type 1: the export was silent about the different logits."""
    checkpoint = _checkpoint(
        fixture_backbone("bert-qa"), tmp_path / "checkpoint", HeadKind.QUESTION_ANSWERING, None
    )
    with pytest.warns(PeftExportNote, match="question answering ignores token_type_ids.*2 token types"):
        export_peft(checkpoint, tmp_path / "adapter")
    config = BertConfig.from_pretrained(FIXTURES / "bert-qa" / "base", type_vocab_size=1)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "base")  # one token type: none lost
    backbone = AutoModel.from_pretrained(tmp_path / "base", attn_implementation="sdpa")
    one_type = _checkpoint(backbone, tmp_path / "one-type", HeadKind.QUESTION_ANSWERING, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PeftExportNote)
        export_peft(one_type, tmp_path / "one-type-adapter")


@pytest.mark.parametrize("window", [6, None])
def test_a_base_with_sliding_window_layers_is_warned_about_both_ways(tmp_path, window) -> None:
    """ptuning's sliding-window layers see the prefix beside their window; PEFT's cache holds it at positions
    0..P-1, which the window leaves behind: on a Mistral with window 6 and P = 2, logits differed from the 5th
    token on (by 0.3 on a tiny model), and export and import said nothing."""
    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        sliding_window=window,
        pad_token_id=0,
    )
    MistralModel(config).save_pretrained(tmp_path / "base")
    backbone = AutoModel.from_pretrained(tmp_path / "base", attn_implementation="sdpa")
    checkpoint = _checkpoint(backbone, tmp_path / "checkpoint", HeadKind.CLASSIFICATION, ["no", "yes"])
    said = "sliding-window layers \\(window 6\\).*past the first 4 tokens of an input"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = export_peft(checkpoint, tmp_path / "adapter")
        load_peft_adapter(adapter, backbone)
    notes = [(type(note.message), str(note.message)) for note in caught]
    windows = [kind for kind, text in notes if re.search(said, text)]
    assert windows == ([PeftExportNote, PeftWindowNote] if window else []), notes
