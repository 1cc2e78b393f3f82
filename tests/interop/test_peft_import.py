"""Adapters written by real PEFT (0.21.2, and 0.22.0 for the outputs) give PEFT's own outputs in ptuning, to fp32
rounding (CI needs no PEFT; ``peft_fixtures.PEFT_ATOL`` says why not bit for bit)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from ptuning.core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from ptuning.interop.peft_import import PeftPositionNote, PeftRevisionNote, PeftTokenTypeNote

from .peft_fixtures import (
    FIXTURES,
    PEFT_RELEASES,
    adapter_dir,
    assert_peft_close,
    expected,
    fixture_backbone,
)


def _real(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The rows/tokens that are not padding (PEFT and ptuning number padding positions differently)."""
    return values[mask.bool()] if values.dim() == 3 else values


@pytest.mark.parametrize(
    "name",
    [
        "llama-gqa-causal-lm",
        "llama-gqa-seq-cls",
        "bert-token-cls-projection",
        "bert-seq-cls",
        "roberta-seq-cls",
        "electra-seq-cls",
    ],
)
@pytest.mark.parametrize("release", PEFT_RELEASES)
def test_a_peft_adapter_gives_the_logits_peft_computed(name, release) -> None:
    data = expected(name, release)
    with pytest.warns(PeftPositionNote, match="position_mode='shift'"):
        model = load_checkpoint(adapter_dir(name, release), backbone=fixture_backbone(name))
    with torch.no_grad():
        logits = model(data["input_ids"], data["attention_mask"]).logits
    mask = data["attention_mask"]
    assert_peft_close(_real(mask, logits), _real(mask, data["logits"]))


def test_the_gqa_prefix_has_the_kv_head_count() -> None:
    with pytest.warns(PeftPositionNote):
        model = load_checkpoint(
            adapter_dir("llama-gqa-causal-lm"), backbone=fixture_backbone("llama-gqa-causal-lm")
        )
    keys, values = model.prefix_kv(["adapter"]).layers[0]
    assert keys.shape == values.shape == (1, 2, 3, 4)  # 2 KV heads (4 query heads), P 3, head size 4


def test_a_bert_classifier_takes_the_pooler_from_the_base_checkpoint() -> None:
    with pytest.warns(PeftPositionNote):
        model = load_checkpoint(adapter_dir("bert-seq-cls"), backbone=fixture_backbone("bert-seq-cls"))
    pooler = load_file(str(FIXTURES / "bert-seq-cls" / "base" / "model.safetensors"))[
        "bert.pooler.dense.weight"
    ]
    assert model.head_specs["adapter"].dense_activation == "tanh"
    assert torch.equal(model.heads["adapter"].dense.weight, pooler)
    # frozen as PEFT keeps it: training the imported model goes on with PEFT's trainable parameters
    assert not any(p.requires_grad for p in model.heads["adapter"].dense.parameters())
    assert all(p.requires_grad for p in model.heads["adapter"].linear.parameters())


def test_a_bert_classifier_over_a_base_without_pooler_weights_is_refused(tmp_path) -> None:
    shutil.copytree(FIXTURES / "bert-seq-cls", tmp_path / "fixture")
    weights_path = tmp_path / "fixture" / "base" / "model.safetensors"
    weights = {k: v for k, v in load_file(str(weights_path)).items() if "pooler" not in k}
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    stripped = AutoModel.from_pretrained(tmp_path / "fixture" / "base", add_pooling_layer=False)
    with (
        pytest.warns(PeftPositionNote),
        pytest.raises(CheckpointError, match="holds no local pooler weights"),
    ):  # the pooler is read from the base that was given
        load_checkpoint(tmp_path / "fixture" / "adapter", backbone=stripped)


def test_its_prefix_alone_gives_the_hidden_states_peft_computed() -> None:
    data = expected("bert-seq-cls")
    with pytest.warns(PeftPositionNote):
        model = load_checkpoint(
            adapter_dir("bert-seq-cls"), fixture_backbone("bert-seq-cls"), prefix_only=True
        )
    assert model.tasks == [] and list(model.prefixes) == ["adapter"]
    with torch.no_grad():
        hidden = model.encode(data["input_ids"], data["attention_mask"], None, ["adapter", "adapter"])
    mask = data["attention_mask"].bool()
    assert_peft_close(hidden[mask], data["last_hidden_state"][mask])


def test_the_adapter_reads_as_a_shift_mode_checkpoint_config() -> None:
    config = read_checkpoint_config(adapter_dir("bert-token-cls-projection"))
    assert config["prefix"]["prefix_length"] == 3
    assert config["prefix"]["position_mode"] == "shift"
    assert config["prefix"]["dropout"] == 0.0
    assert config["method"] == "ptuning-v2"  # PEFT saved the MLP's output table, not the MLP
    assert config["extra"]["prefix_projection"] is True
    assert config["tasks"]["adapter"]["head"]["kind"] == "token-classification"
    assert config["tasks"]["adapter"]["head"]["label_names"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert config["tasks"]["adapter"]["task"] == "ner-generic"
    assert config["base_model"]["fingerprint"] is None
    assert config["base_model"]["name_or_path"].endswith("bert-token-cls-projection/base")


def test_a_base_of_another_shape_is_refused_with_both_shapes() -> None:
    with pytest.raises(
        CheckpointError, match=r"made for 2 layers x 4 KV heads x head size 4, but the given llama"
    ):
        load_checkpoint(
            adapter_dir("bert-token-cls-projection"), backbone=fixture_backbone("llama-gqa-seq-cls")
        )


def _copy(name: str, tmp_path) -> tuple:
    folder = tmp_path / "adapter"
    shutil.copytree(adapter_dir(name), folder)
    return folder, json.loads((folder / "adapter_config.json").read_text())


def test_a_lora_adapter_is_refused_by_its_peft_type(tmp_path) -> None:
    folder, config = _copy("llama-gqa-seq-cls", tmp_path)
    (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(CheckpointError, match="peft_type is 'LORA'; only PREFIX_TUNING"):
        read_checkpoint_config(folder)


def test_a_table_that_does_not_fit_the_config_names_both_shapes(tmp_path) -> None:
    folder, config = _copy("llama-gqa-seq-cls", tmp_path)
    (folder / "adapter_config.json").write_text(json.dumps({**config, "num_virtual_tokens": 4}))
    with pytest.raises(
        CheckpointError, match=r"prompt_embeddings has shape \(3, 32\); adapter_config.json says \(4, 32\)"
    ):
        read_checkpoint_config(folder)


def test_a_pickled_adapter_is_refused_without_unpickling(tmp_path) -> None:
    folder, _ = _copy("llama-gqa-seq-cls", tmp_path)
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="a pickle"):
        read_checkpoint_config(folder)


def test_an_encoder_decoder_adapter_is_refused(tmp_path) -> None:
    folder, config = _copy("llama-gqa-seq-cls", tmp_path)
    (folder / "adapter_config.json").write_text(json.dumps({**config, "num_transformer_submodules": 2}))
    with pytest.raises(CheckpointError, match="encoder-decoder"):
        read_checkpoint_config(folder)


@pytest.mark.parametrize("release", PEFT_RELEASES)
def test_a_causal_lm_adapter_decodes_what_peft_decoded(release) -> None:
    data = expected("llama-gqa-causal-lm", release)
    with pytest.warns(PeftPositionNote):
        model = load_checkpoint(
            adapter_dir("llama-gqa-causal-lm", release), backbone=fixture_backbone("llama-gqa-causal-lm")
        )
    ids, mask = data["generate_input_ids"], data["generate_attention_mask"]  # left-padded
    generated = model.generate(ids, mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, data["generated"])
    assert len(set(generated.flatten().tolist())) > 2  # a decoding that depends on the prefix and positions


def test_an_unreadable_base_model_is_named_in_the_error(tmp_path) -> None:
    folder, config = _copy("llama-gqa-seq-cls", tmp_path)
    (folder / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "no/such-model"})
    )
    with pytest.raises(CheckpointError, match="cannot read the config of its base model 'no/such-model'"):
        read_checkpoint_config(folder)


def test_a_pinned_base_revision_is_warned_about_since_the_base_loads_unpinned(tmp_path) -> None:
    folder, config = _copy("llama-gqa-seq-cls", tmp_path)
    pinned = {**config, "base_model_name_or_path": "no/such-model", "revision": "0123abc"}
    (folder / "adapter_config.json").write_text(json.dumps(pinned))
    with (
        pytest.warns(PeftRevisionNote, match="revision '0123abc' of no/such-model"),
        pytest.raises(CheckpointError),
    ):
        read_checkpoint_config(folder)


def test_a_token_classifier_whose_base_names_no_tags_is_refused_with_the_reason() -> None:
    """Its base config's id2label is LABEL_0..2: no BIO tags for ner-generic to decode (was a bare ValueError)."""
    from ptuning.tasks.rebuild import rebuild_task

    folder = adapter_dir("bert-token-cls-projection")
    config = read_checkpoint_config(folder)
    with pytest.raises(CheckpointError, match="cannot be task 'ner-generic'.*'LABEL_0' is neither 'O' nor"):
        rebuild_task(folder, config, "adapter")


def _edit_weights(folder, change) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def test_damaged_or_edited_adapters_are_refused_naming_what_is_wrong(tmp_path) -> None:
    """Found by a bug hunt: each was a silent difference from PEFT's logits, a bare KeyError or a torch error."""
    cases = [
        ("llama-gqa-seq-cls", lambda t: t.update({"base_model.score.bias": torch.ones(2)}),
         "holds score.bias, but transformers' 'score' layer has no bias"),
        ("roberta-seq-cls", lambda t: t.pop("base_model.classifier.dense.weight"),
         "lacks a weight of its classifier head"),
        ("bert-seq-cls", lambda t: t.update({"base_model.classifier.bias": torch.zeros(5)}),
         r"a classifier bias has shape \(5,\), expected \(2,\)"),
        ("bert-seq-cls", lambda t: t.update({"prompt_embeddings": t["prompt_embeddings"].long()}),
         "'prompt_embeddings' is torch.int64; expected a floating-point table"),
    ]  # fmt: skip
    for number, (name, change, said) in enumerate(cases):
        folder, _ = _copy(name, tmp_path / str(number))
        _edit_weights(folder, change)
        with pytest.raises(CheckpointError, match=said):
            load_checkpoint(folder, backbone=fixture_backbone(name))


def test_a_given_base_stands_for_a_missing_base_name_and_null_fields_mean_their_default(tmp_path) -> None:
    """load_checkpoint(adapter, backbone=...) refused an adapter without base_model_name_or_path ("pass the
    base model", which was passed); num_transformer_submodules null read as an encoder-decoder."""
    folder, config = _copy("llama-gqa-seq-cls", tmp_path)
    del config["base_model_name_or_path"]
    (folder / "adapter_config.json").write_text(json.dumps({**config, "num_transformer_submodules": None}))
    with pytest.warns(PeftPositionNote):
        model = load_checkpoint(folder, backbone=fixture_backbone("llama-gqa-seq-cls"))
    assert model.tasks == ["adapter"]
    (folder / "adapter_config.json").write_text(json.dumps({**config, "task_type": None}))
    with pytest.raises(CheckpointError, match="adapter_config.json: task_type None has no task head"):
        load_checkpoint(folder, backbone=fixture_backbone("llama-gqa-seq-cls"))


@pytest.mark.parametrize("release", PEFT_RELEASES)
def test_an_imported_qa_adapter_ignores_token_types_as_peft_does(release) -> None:
    """PEFT's question answering (0.21.2 and 0.22.0) drops token_type_ids under prefix tuning; the squad task
    gives context tokens type 1, which moved the import's start logits by up to 0.42 from PEFT's (argmax
    differed)."""
    data = expected("bert-qa", release)
    adapter = adapter_dir("bert-qa", release)
    with pytest.warns(PeftTokenTypeNote, match="never passes token_type_ids"), pytest.warns(PeftPositionNote):
        model = load_checkpoint(adapter, backbone=fixture_backbone("bert-qa"))
    assert read_checkpoint_config(adapter)["extra"]["ignores_token_type_ids"] is True
    with torch.no_grad():
        out = model(data["input_ids"], data["attention_mask"], data["token_type_ids"], task="adapter")
    mask = data["attention_mask"].bool()
    assert_peft_close(out.start_logits[mask], data["start_logits"][mask])
    assert_peft_close(out.end_logits[mask], data["end_logits"][mask])


def test_an_imported_qa_adapter_saved_again_still_ignores_token_types(tmp_path) -> None:
    """save_checkpoint wrote the import with extra {} and load_checkpoint built a plain PromptModel, which
    reads token types: its start logits moved by up to 2.0 from PEFT's, without a word."""
    data = expected("bert-qa")
    with pytest.warns(PeftTokenTypeNote), pytest.warns(PeftPositionNote):
        imported = load_checkpoint(adapter_dir("bert-qa"), backbone=fixture_backbone("bert-qa"))
    saved = save_checkpoint(imported, tmp_path / "saved")
    assert read_checkpoint_config(saved)["extra"] == {"ignores_token_type_ids": True}
    model = load_checkpoint(saved, backbone=fixture_backbone("bert-qa"))
    with torch.no_grad():
        out = model(data["input_ids"], data["attention_mask"], data["token_type_ids"], task="adapter")
    mask = data["attention_mask"].bool()
    assert_peft_close(out.start_logits[mask], data["start_logits"][mask])
    assert_peft_close(out.end_logits[mask], data["end_logits"][mask])


def _with_hub_base(name: str, tmp_path) -> tuple:
    """The fixture's adapter naming a hub id that is not cached (as adapters from the hub do)."""
    folder, config = _copy(name, tmp_path)
    (folder / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "someorg/tiny-bert-not-cached"})
    )
    return folder, FIXTURES / name / "base"


def test_a_given_backbone_gives_the_pooler_not_the_adapters_hub_base(tmp_path) -> None:
    """A BERT SEQ_CLS import read the pooler under the adapter's hub id although the base was passed."""
    folder, base = _with_hub_base("bert-seq-cls", tmp_path)
    data = expected("bert-seq-cls")
    with pytest.warns(PeftPositionNote):
        model = load_checkpoint(folder, backbone=fixture_backbone("bert-seq-cls"))
    pooler = load_file(str(base / "model.safetensors"))["bert.pooler.dense.weight"]
    assert torch.equal(model.heads["adapter"].dense.weight, pooler)
    # a base weight, frozen as in PEFT, and recorded so: a save and load keep it frozen
    assert model.head_specs["adapter"].frozen_dense
    assert not any(p.requires_grad for p in model.heads["adapter"].dense.parameters())
    with torch.no_grad():
        logits = model(data["input_ids"], data["attention_mask"]).logits
    assert_peft_close(logits, data["logits"])


def test_a_given_base_model_stands_for_the_adapters_hub_base_when_reading_its_config(tmp_path) -> None:
    """predict/eval --model: the adapter's config was read from its hub id first, which fails offline."""
    folder, base = _with_hub_base("bert-token-cls-projection", tmp_path)
    with pytest.raises(CheckpointError, match="someorg/tiny-bert-not-cached"):
        read_checkpoint_config(folder)
    config = read_checkpoint_config(folder, base_model=str(base))
    assert config["base_model"]["name_or_path"] == str(base)
    assert config["base_model"]["model_type"] == "bert"
    assert config["tasks"]["adapter"]["head"]["kind"] == "token-classification"


def test_predict_on_a_given_model_loads_an_adapter_whose_hub_base_is_not_cached(tmp_path) -> None:
    """load_for_inference(model_path=...) (predict/eval --model) read the adapter's hub-id base first and
    failed offline before --model was used; it now predicts, with PEFT's own logits."""
    from transformers import BertTokenizerFast

    from ptuning.training.predict import load_for_inference

    folder, base = _with_hub_base("bert-seq-cls", tmp_path)
    model_dir = tmp_path / "base"
    shutil.copytree(base, model_dir)
    words = [f"w{i}" for i in range(AutoModel.from_pretrained(base).config.vocab_size - 5)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}).save_pretrained(model_dir)
    with pytest.warns(PeftPositionNote):
        loaded = load_for_inference(folder, model_path=str(model_dir), max_length=16)
    data = expected("bert-seq-cls")
    with torch.no_grad():
        logits = loaded.model(data["input_ids"], data["attention_mask"]).logits
    assert_peft_close(logits, data["logits"])


def test_nan_or_inf_in_an_adapter_is_refused_naming_the_file_and_tensor(tmp_path) -> None:
    """ptuning's own loader refuses non-finite weights; an adapter's loaded silently (every logit NaN)."""
    cases = [
        ("prompt_embeddings", lambda t: t["prompt_embeddings"].__setitem__((0, 5), float("nan"))),
        ("base_model.classifier.weight", lambda t: t["base_model.classifier.weight"].fill_(float("inf"))),
    ]
    for number, (tensor, change) in enumerate(cases):
        folder, _ = _copy("bert-token-cls-projection", tmp_path / str(number))
        _edit_weights(folder, change)
        said = rf"adapter_model.safetensors: NaN or Inf values in tensor '{tensor}'; expected finite weights"
        with pytest.raises(CheckpointError, match=said):
            load_checkpoint(folder, backbone=fixture_backbone("bert-token-cls-projection"))
        with pytest.raises(CheckpointError, match=said):
            read_checkpoint_config(folder)


def test_an_adapter_for_another_family_names_both_heads_tensors() -> None:
    """A BERT SEQ_CLS adapter on an ELECTRA base of the same shape was told it 'also trained' its classifier."""
    with pytest.raises(
        CheckpointError,
        match=r"the electra base's SEQ_CLS head 'classifier' holds \['classifier.dense.bias', "
        r"'classifier.dense.weight', 'classifier.out_proj.bias', 'classifier.out_proj.weight'\], but "
        r"adapter_model.safetensors has \['classifier.bias', 'classifier.weight'\]; was the adapter made for "
        r"another base model\?",
    ):
        load_checkpoint(adapter_dir("bert-seq-cls"), backbone=fixture_backbone("electra-seq-cls"))
