"""ptuning -> PEFT -> ptuning is exact, and PEFT -> ptuning -> PEFT gives back PEFT's own files."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, Qwen3Config, Qwen3Model

from ptuning.cli import main
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.pooler import POOLER_ACTIVATION, load_pretrained_pooler
from ptuning.interop.peft_export import PeftExportNote, export_peft
from ptuning.interop.peft_format import PeftFormatError
from ptuning.interop.peft_heads import mapping_for_peft

from .peft_fixtures import FIXTURES, adapter_dir, assert_peft_close, expected, fixture_backbone

INPUT_IDS = torch.tensor([[5, 9, 14, 3, 22, 7], [8, 31, 2, 40, 0, 0]])
ATTENTION_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def _model(base: str, kind: HeadKind, labels=None, method="ptuning-v2", mode="shift", seed=0) -> PromptModel:
    torch.manual_seed(seed)
    config = PrefixConfig(prefix_length=4, dropout=0.0, position_mode=mode, mlp_hidden_size=8)
    model = PromptModel(fixture_backbone(base), method, config, head_dropout=0.0)
    model.add_task("task", HeadSpec(kind, labels))
    return model.eval()


def _reimported(model: PromptModel, tmp_path, **export_options) -> PromptModel:
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    adapter = export_peft(checkpoint, tmp_path / "adapter", **export_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_checkpoint(adapter, backbone=model.backbone)


def _logits(model: PromptModel, task: str) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT_IDS, ATTENTION_MASK, task=task).logits


def test_a_causal_lm_prefix_round_trips_bit_for_bit(tmp_path) -> None:
    model = _model("llama-gqa-causal-lm", HeadKind.CAUSAL_LM)
    again = _reimported(model, tmp_path)
    assert torch.equal(_logits(again, "adapter"), _logits(model, "task"))
    assert torch.equal(again.prefixes["adapter"].embedding.weight, model.prefixes["task"].embedding.weight)


def test_a_prefix_mlp_is_collapsed_into_the_table_it_produces(tmp_path) -> None:
    model = _model("bert-token-cls-projection", HeadKind.TOKEN_CLASSIFICATION, ["O", "B", "I"], "prefix-mlp")
    again = _reimported(model, tmp_path)
    assert again.prefixes["adapter"].mlp is None
    assert torch.equal(_logits(again, "adapter"), _logits(model, "task"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["prefix_projection"] is False and config["task_type"] == "TOKEN_CLS"
    assert config["modules_to_save"] == ["classifier"]


def test_a_collapsed_prefix_mlp_checkpoint_exports_the_table_it_stores(tmp_path) -> None:
    """After collapse_prefixes() only the table is saved (prefix_forms says 'table'); export rebuilt the MLP
    from the method and refused the file as 'not what prompt_config.json describes'."""
    model = _model("bert-token-cls-projection", HeadKind.TOKEN_CLASSIFICATION, ["O", "B", "I"], "prefix-mlp")
    logits = _logits(model, "task")
    model.collapse_prefixes()
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    assert json.loads((checkpoint / "prompt_config.json").read_text())["prefix_forms"] == {"task": "table"}
    table = model.prefixes["task"].embedding.weight
    old_style = tmp_path / "old-style"  # written before prefix_forms existed: no mlp. tensors says collapsed
    shutil.copytree(checkpoint, old_style)
    config = json.loads((old_style / "prompt_config.json").read_text())
    del config["prefix_forms"]
    (old_style / "prompt_config.json").write_text(json.dumps(config))
    for source in (checkpoint, old_style):
        adapter = export_peft(source, tmp_path / f"adapter-{source.name}")
        assert torch.equal(load_file(str(adapter / "adapter_model.safetensors"))["prompt_embeddings"], table)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = load_checkpoint(adapter, backbone=model.backbone)
        assert torch.equal(_logits(again, "adapter"), logits)


def test_a_decoder_classifier_round_trips_when_it_has_no_bias(tmp_path) -> None:
    model = _model("llama-gqa-seq-cls", HeadKind.CLASSIFICATION, ["no", "yes"])
    with torch.no_grad():
        model.heads["task"].linear.bias.zero_()  # transformers' score layer has no bias
    again = _reimported(model, tmp_path)
    assert torch.equal(_logits(again, "adapter"), _logits(model, "task"))
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert sorted(tensors) == ["base_model.score.weight", "prompt_embeddings"]


def test_a_decoder_classifier_with_a_bias_is_refused_with_the_reason(tmp_path) -> None:
    model = _model("llama-gqa-seq-cls", HeadKind.CLASSIFICATION, ["no", "yes"])
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match="'score' layer has none"):
        export_peft(checkpoint, tmp_path / "adapter")
    export_peft(checkpoint, tmp_path / "adapter", prefix_only=True)  # the prefix alone still goes
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "FEATURE_EXTRACTION" and config["modules_to_save"] is None


def test_decoders_are_recognised_by_what_transformers_builds_not_by_a_list(tmp_path) -> None:
    """Qwen3 (like Gemma, Phi-3...): a decoder, whose token classifier is transformers' ``score``."""
    config = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    prefix = PrefixConfig(prefix_length=4, dropout=0.0, position_mode="shift")  # PEFT numbers them so
    Qwen3Model(config).save_pretrained(tmp_path / "qwen3")  # export reads the base's config from its folder
    backbone = AutoModel.from_pretrained(tmp_path / "qwen3", attn_implementation="sdpa")
    model = PromptModel(backbone, "ptuning-v2", prefix, 0.0)
    model.add_task("task", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["O", "B", "I"]))
    again = _reimported(model.eval(), tmp_path)
    assert torch.equal(_logits(again, "adapter"), _logits(model, "task"))
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "TOKEN_CLS" and adapter["modules_to_save"] == ["score"]
    assert mapping_for_peft("CAUSAL_LM", "qwen3").kind is HeadKind.CAUSAL_LM
    assert mapping_for_peft("SEQ_CLS", "gemma").module == "score"  # not DeBERTa's refused ContextPooler
    assert mapping_for_peft("TOKEN_CLS", "gpt2").module == "classifier"
    with pytest.raises(PeftFormatError, match="ptuning generates with decoders"):
        mapping_for_peft("CAUSAL_LM", "bert")  # BERT has a causal-LM class, but it is an encoder


def test_a_keep_mode_prefix_is_refused_unless_the_position_change_is_accepted(tmp_path) -> None:
    model = _model("llama-gqa-causal-lm", HeadKind.CAUSAL_LM, mode="keep")
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match="position_mode 'keep'.*--position-mode shift"):
        export_peft(checkpoint, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    with pytest.warns(PeftExportNote, match="computes other outputs in PEFT"):
        export_peft(checkpoint, tmp_path / "adapter", allow_position_change=True)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("name", ["llama-gqa-seq-cls", "bert-seq-cls", "roberta-seq-cls"])
def test_peft_files_come_back_unchanged_through_ptuning(tmp_path, name) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_checkpoint(adapter_dir(name), backbone=fixture_backbone(name))
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    export_peft(checkpoint, tmp_path / "adapter")
    original = load_file(str(adapter_dir(name) / "adapter_model.safetensors"))
    written = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert sorted(written) == sorted(original)
    assert all(torch.equal(written[key], original[key]) for key in original)
    peft_config = json.loads((adapter_dir(name) / "adapter_config.json").read_text())
    ours = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    for field in (
        "num_virtual_tokens",
        "num_layers",
        "num_attention_heads",
        "token_dim",
        "task_type",
        "peft_type",
    ):
        assert ours[field] == peft_config[field], field
    data = expected(name)  # and the re-exported adapter still computes PEFT's logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_checkpoint(tmp_path / "adapter", backbone=model.backbone)
    native = load_checkpoint(
        checkpoint, backbone=model.backbone
    )  # the ptuning checkpoint keeps the head's shape
    with torch.no_grad():
        assert_peft_close(again(data["input_ids"], data["attention_mask"]).logits, data["logits"])
        assert_peft_close(native(data["input_ids"], data["attention_mask"]).logits, data["logits"])


def test_a_bert_classifier_without_the_pooler_layer_is_refused(tmp_path) -> None:
    model = _model("bert-seq-cls", HeadKind.CLASSIFICATION, ["no", "yes"])  # ptuning's own: one linear layer
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    with pytest.raises(
        CheckpointError, match="one linear layer; transformers' bert sequence classifier is dense"
    ):
        export_peft(checkpoint, tmp_path / "adapter")


def test_a_bert_classifier_read_through_the_frozen_pretrained_pooler_round_trips(tmp_path) -> None:
    # what `ptuning train --pooling pooler` builds: the base's own pooler, frozen, before the linear layer
    torch.manual_seed(0)
    config = PrefixConfig(prefix_length=4, dropout=0.0, position_mode="shift")
    model = PromptModel(fixture_backbone("bert-seq-cls"), "ptuning-v2", config, head_dropout=0.0)
    model.add_task("task", HeadSpec(HeadKind.CLASSIFICATION, ["no", "yes"], "first", POOLER_ACTIVATION))
    load_pretrained_pooler(model.heads["task"].dense, str(FIXTURES / "bert-seq-cls" / "base"))
    again = _reimported(model.eval(), tmp_path)
    assert torch.equal(_logits(again, "adapter"), _logits(model, "task"))


def test_a_bert_classifier_whose_pooler_was_trained_is_refused(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_checkpoint(adapter_dir("bert-seq-cls"), backbone=fixture_backbone("bert-seq-cls"))
    with torch.no_grad():
        model.heads["adapter"].dense.bias.add_(0.01)
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    with pytest.raises(
        CheckpointError, match="reads the base model's pooler, which a PEFT adapter does not hold"
    ):
        export_peft(checkpoint, tmp_path / "adapter")


def test_the_cli_exports_one_task_of_a_multi_task_checkpoint(tmp_path, capsys) -> None:
    model = _model("llama-gqa-causal-lm", HeadKind.CAUSAL_LM)
    model.add_task("other", HeadSpec(HeadKind.CAUSAL_LM))
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint")
    out = tmp_path / "adapter"
    assert main(["export", "--format", "peft", str(checkpoint), str(out)]) == 2
    assert "holds tasks ['other', 'task']" in capsys.readouterr().err
    assert main(["export", "--format", "peft", str(checkpoint), str(out), "--task", "other"]) == 0
    assert "wrote a PEFT prefix-tuning adapter" in capsys.readouterr().out
    table = load_file(str(out / "adapter_model.safetensors"))["prompt_embeddings"]
    assert torch.equal(table, model.prefixes["other"].embedding.weight)


def test_export_never_replaces_a_file_its_checkpoint_or_a_folder_of_other_files(tmp_path, capsys) -> None:
    """The adapter folder is swapped in whole: a run folder given as OUT lost its checkpoint and state."""
    run = tmp_path / "run"
    checkpoint = save_checkpoint(_model("llama-gqa-causal-lm", HeadKind.CAUSAL_LM), run / "checkpoint")
    (run / "summary.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("keep me")
    for out, reason in [
        (tmp_path / "notes.txt", "is a file"),
        (checkpoint, "holds the checkpoint"),
        (run, "holds the checkpoint"),
    ]:
        assert main(["export", "--format", "peft", str(checkpoint), str(out)]) == 2
        assert reason in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("a,b\n")
    assert main(["export", "--format", "peft", str(checkpoint), str(tmp_path / "other")]) == 2
    assert "holds other files and no adapter_config.json" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me" and (run / "summary.json").is_file()
    assert (tmp_path / "other" / "data.csv").is_file() and (checkpoint / "prompt_config.json").is_file()
    adapter = tmp_path / "adapter"
    for _ in range(2):  # a new folder, then the adapter itself again: replaced
        assert main(["export", "--format", "peft", str(checkpoint), str(adapter)]) == 0


def test_an_encoder_decoder_prefix_is_refused_naming_its_base(tmp_path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    base = tmp_path / "tiny-t5"
    config = T5Config(vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)
    T5ForConditionalGeneration(config).save_pretrained(base)
    backbone = T5ForConditionalGeneration.from_pretrained(base)
    backbone.ptuning_source = str(base)
    # keep: T5 numbers its own positions, so 'shift' is refused there (and changes nothing)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("s", HeadSpec(HeadKind.SEQ2SEQ_LM))
    save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="'t5' is an encoder-decoder"):
        export_peft(tmp_path / "ckpt", tmp_path / "out", prefix_only=True, allow_position_change=True)


def test_a_tagger_s_bio_tags_survive_the_export_and_decode_after_the_import(tmp_path) -> None:
    """PEFT keeps labels in the base's config, which an export does not write: without ptuning_labels.json
    the re-imported head's classes were LABEL_0.., which no NER task can read."""
    from ptuning.core.checkpoint import read_checkpoint_config
    from ptuning.tasks.rebuild import rebuild_task

    tags = ["O", "B-PER", "I-PER"]
    model = _model("bert-token-cls-projection", HeadKind.TOKEN_CLASSIFICATION, tags)
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint", task_names={"task": "ner-generic"})
    adapter = export_peft(checkpoint, tmp_path / "adapter")
    assert json.loads((adapter / "ptuning_labels.json").read_text())["label_names"] == tags
    config = read_checkpoint_config(adapter)
    assert config["tasks"]["adapter"]["head"]["label_names"] == tags
    assert rebuild_task(adapter, config, "adapter").task.entity_types == ["PER"]


def test_a_damaged_checkpoint_is_refused_in_one_line_naming_the_file(tmp_path, capsys) -> None:
    """export read the weights without the checks loading makes: a missing, truncated or short file ended
    in a traceback (or in an error that was only a tensor's name)."""
    from safetensors.torch import save_file

    model = _model("llama-gqa-seq-cls", HeadKind.CLASSIFICATION, ["no", "yes"])
    with torch.no_grad():
        model.heads["task"].linear.bias.zero_()  # exportable: transformers' score layer has no bias
    weights = save_checkpoint(model, tmp_path / "checkpoint") / "prompt.safetensors"
    state = load_file(str(weights))
    damages = {
        "missing": (lambda: weights.unlink(), "prompt.safetensors is missing"),
        "truncated": (lambda: weights.write_bytes(state_bytes[:100]), "not a valid safetensors file"),
        "no prefix": (
            lambda: save_file({k: v for k, v in state.items() if k.startswith("heads.")}, str(weights)),
            "the prefix 'task' that prompt_config.json describes is not what the file holds",
        ),
        "no head": (
            lambda: save_file({k: v for k, v in state.items() if k.startswith("prefixes.")}, str(weights)),
            "its weights file lacks the head of task 'task'",
        ),
    }
    state_bytes = weights.read_bytes()
    for name, (damage, said) in damages.items():
        damage()
        out = tmp_path / f"adapter-{name.replace(' ', '-')}"
        assert main(["export", "--format", "peft", str(tmp_path / "checkpoint"), str(out)]) == 2, name
        last = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading bar
        assert last.startswith("ptuning export: error: ") and said in last and not out.exists(), (name, last)
        weights.write_bytes(state_bytes)
