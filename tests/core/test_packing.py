"""Packing several inputs into one row (core/packing.py) computes what each input computes alone.

Tolerance: fp32 tiny models with O(1) activations, 1e-5 absolute (rounding differs because rows differ in
length); a change in one segment must leave the others within 1e-6.
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import ENCODER_SIZES, build, tiny_backbone
from test_precision_minilm import minilm_model, sst2_rows
from transformers import AutoConfig, AutoModel

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.geometry import PositionKind
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.packing import PACKABLE_FAMILIES, check_packable, pack_features, segment_labels
from ptuning.tasks.collate import collate

ATOL = 1e-5


def random_features(count: int, seed: int = 3, types: bool = False, tags: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(count):
        length = int(torch.randint(3, 13, (1,), generator=generator))
        feature = {"input_ids": torch.randint(3, 100, (length,), generator=generator).tolist()}
        if types:
            feature["token_type_ids"] = [0] * (length // 2) + [1] * (length - length // 2)
        feature["labels"] = (
            torch.randint(0, 3, (length,), generator=generator).tolist()
            if tags
            else int(torch.randint(0, 2, (1,), generator=generator))
        )
        features.append(feature)
    return features


def model_for(
    family: str = "bert",
    kind: HeadKind = HeadKind.CLASSIFICATION,
    pooling: str | None = None,
    method: str = "ptuning-v2",
    attn: str | None = None,
    **prefix_fields,
) -> PromptModel:
    backbone = tiny_backbone(family, attn)
    torch.manual_seed(1)
    config = PrefixConfig(prefix_length=4, dropout=0.0, init_std=1.0, **prefix_fields)
    model = PromptModel(backbone, method, config, head_dropout=0.0).eval()
    labels = ["a", "b", "c"] if kind is HeadKind.TOKEN_CLASSIFICATION else ["neg", "pos"]
    model.add_task("t", HeadSpec(kind, labels, pooling))
    return model


def unpacked_logits(
    model: PromptModel, features: list[dict], side: str = "right", task: str = "t"
) -> list[torch.Tensor]:
    """One logits tensor per feature from an ordinary padded batch (real tokens only for tagging)."""
    batch = collate([{k: v for k, v in f.items() if k != "labels"} for f in features], 0, side)
    with torch.no_grad():
        logits = model(**batch, task=task).logits
    if logits.dim() == 2:
        return list(logits)
    return [row[mask.bool()] for row, mask in zip(logits, batch["attention_mask"], strict=True)]


def packed_logits(
    model: PromptModel, features: list[dict], max_length: int = 32, task: str = "t"
) -> list[torch.Tensor]:
    rows = pack_features(features, max_length, pad_token_id=0)
    with torch.no_grad():
        logits = model(input_ids=None, packed=rows, task=task).logits
    if logits.dim() == 2:
        return list(logits)
    return [logits[n, : int(rows.length[n])] for n in range(rows.num_segments)]


def assert_all_close(actual: list[torch.Tensor], expected: list[torch.Tensor], atol: float = ATOL) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=atol, rtol=0)


def test_pack_features_fills_rows_longest_first_and_restarts_positions() -> None:
    features = [{"input_ids": [5] * n} for n in (6, 3, 5, 2)]
    rows = pack_features(features, max_length=8, pad_token_id=0)
    assert rows.input_ids.shape == (2, 8)  # 6+2 and 5+3
    assert rows.row.tolist() == [0, 1, 1, 0] and rows.start.tolist() == [0, 5, 0, 6]
    assert rows.local_positions[1].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert rows.segment_ids[0].tolist() == [0] * 6 + [1] * 2
    assert rows.padding_fraction == 0.0
    even = pack_features([{"input_ids": [5] * n} for n in (4, 4, 4, 2)], max_length=10, pad_token_id=0)
    assert even.input_ids.shape == (2, 8)  # 4+4 | 4+2, not first-fit's 4+4+2 | 4
    alone = pack_features([{"input_ids": [5] * 10}, *features], max_length=8, pad_token_id=0)
    assert alone.input_ids.shape == (3, 10) and alone.row.tolist()[0] == 0 and alone.length[0] == 10
    mask = rows.attention_mask()[1, 0]
    assert mask[0, :5].all() and not mask[0, 5:].any() and mask[6, 5:].all() and not mask[6, :5].any()


def test_an_over_long_feature_gets_its_own_row_and_the_others_keep_max_length() -> None:
    """A feature longer than max_length used to raise every row's capacity to its length."""
    features = [{"input_ids": [5] * 16}, {"input_ids": [6] * 20}, {"input_ids": [7] * 3}, {"input_ids": [8]}]
    rows = pack_features(features, max_length=16, pad_token_id=0)
    assert (rows.segment_ids >= 0).sum(1).tolist() == [20, 16, 4]
    assert rows.row.tolist() == [1, 0, 2, 2] and rows.input_ids.shape == (3, 20)
    two_long = pack_features([{"input_ids": [5] * 9}, {"input_ids": [6] * 12}], max_length=8, pad_token_id=0)
    assert two_long.row.tolist() == [1, 0] and two_long.start.tolist() == [0, 0]


@pytest.mark.parametrize("family", PACKABLE_FAMILIES)
def test_every_packable_family_packs_to_the_unpacked_outputs(family: str) -> None:
    """The allow-list is what this proves: per-token logits, where any mixing across segments shows."""
    model = model_for(family, kind=HeadKind.TOKEN_CLASSIFICATION)
    types = getattr(model.backbone.config, "type_vocab_size", 0) > 1
    features = random_features(7, types=types, tags=True)
    assert_all_close(packed_logits(model, features), unpacked_logits(model, features))


_MIXING_FAMILIES = {  # model type -> (method, config fields): each mixes tokens outside attention or crashed
    "mobilebert": ("ptuning-v2", dict(embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32)),
    "convbert": ("linear-probe", dict(embedding_size=32, head_ratio=2, conv_kernel_size=3)),
    "fnet": ("linear-probe", {}),
    "layoutlm": ("linear-probe", {}),
    "longformer": ("linear-probe", dict(attention_window=[4, 4])),
}


@pytest.mark.parametrize("model_type", sorted(_MIXING_FAMILIES))
def test_packing_refuses_families_outside_the_proven_list_by_name(model_type: str) -> None:
    """MobileBERT's trigram input, ConvBERT's convolution and FNet's Fourier mixing read across segment
    boundaries (packed outputs differed); LayoutLM and Longformer crashed on the packed mask."""
    method, fields = _MIXING_FAMILIES[model_type]
    config = AutoConfig.for_model(model_type, **ENCODER_SIZES, **fields)
    torch.manual_seed(0)
    model = PromptModel(AutoModel.from_config(config).eval(), method, PrefixConfig(prefix_length=4)).eval()
    model.add_task("t", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["a", "b"]))
    with pytest.raises(ConfigError, match=f"cannot pack {model_type}: packing is proven"):
        model.check_packable("t")


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_packed_classification_equals_unpacked(family: str, pooling: str) -> None:
    model = model_for(family, pooling=pooling)
    features = random_features(9, types=family == "bert")
    assert_all_close(packed_logits(model, features), unpacked_logits(model, features))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_tagging_equals_unpacked_on_both_attention_kernels(attn: str) -> None:
    model = model_for(kind=HeadKind.TOKEN_CLASSIFICATION, attn=attn)
    features = random_features(7, tags=True)
    assert_all_close(packed_logits(model, features), unpacked_logits(model, features))


@pytest.mark.parametrize("method", ["prefix-mlp", "linear-probe", "finetune"])
def test_packing_takes_other_methods_and_shift_positions(method: str) -> None:
    model = model_for("roberta", pooling="mean", method=method)
    features = random_features(6)
    assert_all_close(packed_logits(model, features), unpacked_logits(model, features))
    shifted = model_for("roberta", position_mode="shift")
    assert_all_close(packed_logits(shifted, features), unpacked_logits(shifted, features))


def test_layout_and_padding_side_do_not_change_outputs() -> None:
    model = model_for(pooling="mean")
    features = random_features(10)
    expected = unpacked_logits(model, features)
    assert_all_close(unpacked_logits(model, features, side="left"), expected)
    for max_length in (12, 20, 64):  # rows of 64 are longer than the 64-4 usable positions of the table
        assert_all_close(packed_logits(model, features, max_length), expected)
    order = list(reversed(range(len(features))))
    assert_all_close(packed_logits(model, [features[i] for i in order]), [expected[i] for i in order])


def test_changing_one_segment_leaves_the_others_untouched() -> None:
    model = model_for(kind=HeadKind.TOKEN_CLASSIFICATION)
    features = random_features(6, tags=True)
    before = packed_logits(model, features, max_length=64)  # all six in one row
    assert pack_features(features, 64, 0).input_ids.shape[0] == 1
    changed = [dict(f) for f in features]
    changed[2] = {**changed[2], "input_ids": [7] * len(changed[2]["input_ids"])}
    after = packed_logits(model, changed, max_length=64)
    assert not torch.allclose(after[2], before[2], atol=1e-3)
    for n in (0, 1, 3, 4, 5):
        torch.testing.assert_close(after[n], before[n], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", [HeadKind.CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION])
def test_packed_loss_and_gradients_equal_unpacked_and_reach_only_prefix_and_head(kind: HeadKind) -> None:
    model = model_for(kind=kind, pooling="mean")
    features = random_features(8, tags=kind is HeadKind.TOKEN_CLASSIFICATION)
    batch = collate(features, 0)
    loss = model(**batch, task="t").loss
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    rows = pack_features(features, 32, 0)
    packed_loss = model(input_ids=None, packed=rows, labels=segment_labels(features, kind), task="t").loss
    torch.testing.assert_close(packed_loss, loss, atol=ATOL, rtol=0)
    packed_loss.backward()
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert set(got) == set(expected) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith(("prefixes.", "heads.")) for name in got)
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("family", "kind", "method", "named"),
    [
        ("bert", HeadKind.QUESTION_ANSWERING, "ptuning-v2", "question-answering"),
        ("bert", HeadKind.CLASSIFICATION, "prompt-tuning", "prompt-tuning"),
        ("deberta-v2", HeadKind.CLASSIFICATION, "ptuning-v2", "deberta-v2"),
    ],
)
def test_packing_refuses_what_it_cannot_reproduce_naming_it(family, kind, method, named) -> None:
    model = model_for(family, kind=kind, method=method)
    with pytest.raises(ConfigError, match=named):
        model.check_packable("t")
    with pytest.raises(ConfigError, match="pack"):
        model(input_ids=None, packed=pack_features(random_features(2), 32, 0), task="t")


def test_packing_refuses_a_family_with_its_own_attention_patch_even_with_absolute_positions() -> None:
    """DeBERTa-v2 without relative attention reads as absolute, but its attention is ptuning's own patch,
    whose mask packing's 4-D mask is not (it crashed inside DeBERTa's embeddings)."""
    backbone = tiny_backbone("deberta-v2", None, relative_attention=False, position_biased_input=True)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0)).eval()
    assert model.geometry.position_kind is PositionKind.ABSOLUTE
    with pytest.raises(ConfigError, match="deberta-v2, whose attention ptuning patches itself"):
        check_packable(model.method, model.geometry, HeadKind.CLASSIFICATION, "eager")


def test_packing_refuses_decoders_and_multiple_choice_features() -> None:
    llama = build("llama").model
    with pytest.raises(ConfigError, match="llama, a decoder"):
        check_packable(llama.method, llama.geometry, HeadKind.CLASSIFICATION, "sdpa")
    with pytest.raises(ConfigError, match="multiple choice"):
        pack_features([{"input_ids": [[5, 6], [7, 8]]}], 32, 0)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_packed_minilm_equals_unpacked_on_real_sst2_sentences(pooling: str) -> None:
    model, tokenizer = minilm_model("fp32")
    model.heads["sst2"].pooling = Pooling(pooling)
    sentences, _ = sst2_rows("dev", 24)
    features = [dict(tokenizer(s, truncation=True, max_length=128)) for s in sentences]
    expected = unpacked_logits(model, features, task="sst2")
    assert_all_close(packed_logits(model, features, 128, task="sst2"), expected)


def test_packing_survives_gradient_checkpointing() -> None:
    model = model_for(pooling="mean")
    features = random_features(6)
    rows, labels = pack_features(features, 32, 0), segment_labels(features, HeadKind.CLASSIFICATION)
    model(packed=rows, labels=labels, task="t").loss.backward()
    expected = model.prefixes["t"].embedding.weight.grad.clone()
    model.zero_grad()
    model.train()  # checkpointing replays only in training mode; the tiny models have no dropout
    model.enable_gradient_checkpointing()
    model(packed=rows, labels=labels, task="t").loss.backward()
    torch.testing.assert_close(model.prefixes["t"].embedding.weight.grad, expected, atol=ATOL, rtol=0)
