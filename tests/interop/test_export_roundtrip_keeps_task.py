"""ptuning checkpoint -> ``ptuning export`` -> import: the adapter keeps what the checkpoint knew and PEFT's
format cannot hold (``ptuning_labels.json``): the base it belongs to, the registry task, its options and
max_length. Adapters without those keys (PEFT's own, older exports) import as before."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from tiny_models import save_tiny_bert

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.interop.peft_export import export_peft
from ptuning.interop.peft_format import LABELS_FILE, PeftFormatError
from ptuning.tasks.rebuild import rebuild_task
from ptuning.tasks.registry import get_task
from ptuning.training.predict import load_for_inference

CONLL = get_task("conll2003").label_names


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Two tiny BERTs of one shape and other weights: the adapter's base and a wrong one."""
    root = tmp_path_factory.mktemp("bases")
    return save_tiny_bert(root / "base", seed=0), save_tiny_bert(root / "other", seed=1)


def _export(tmp_path, base: str, kind: HeadKind, task: str, labels=None, dtype="fp32", **saved):
    backbone, _ = load_backbone(base, dtype=dtype)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(4, dropout=0.0, position_mode="shift"), 0.0)
    model.add_task(task, HeadSpec(kind, labels))
    checkpoint = save_checkpoint(model, tmp_path / "checkpoint", {task: task}, **saved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # QA on BERT: PeftExportNote about token types
        return model, export_peft(checkpoint, tmp_path / "adapter")


def test_an_exported_adapter_is_refused_on_another_base_of_the_same_shape(bases, tmp_path) -> None:
    """The adapter was accepted on any base of its shape (library, predict --model, serve), where the
    checkpoint it came from is refused."""
    base, other = bases
    model, adapter = _export(tmp_path, base, HeadKind.TOKEN_CLASSIFICATION, "conll2003", CONLL)
    refused = rf"was trained on .*fingerprint {model.base_fingerprint}\) but the given base model is .*other'"
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint(adapter, backbone=load_backbone(other)[0])
    with pytest.raises(CheckpointError, match=refused):
        load_for_inference(adapter, model_path=other, device="cpu")
    # what the server compares with its own base's fingerprint
    assert read_checkpoint_config(adapter)["base_model"]["fingerprint"] == model.base_fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PeftPositionNote
        assert (
            load_checkpoint(adapter, backbone=load_backbone(base)[0]).head_specs["adapter"].label_names
            == CONLL
        )


def test_the_registry_task_comes_back_after_the_round_trip(bases, tmp_path) -> None:
    """conll2003 came back as ner-generic."""
    _, adapter = _export(tmp_path, bases[0], HeadKind.TOKEN_CLASSIFICATION, "conll2003", CONLL, max_length=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_for_inference(adapter, device="cpu")
    assert (loaded.task.name, loaded.max_length) == ("conll2003", 24)


def test_task_options_and_max_length_come_back_after_the_round_trip(bases, tmp_path) -> None:
    """SQuAD's doc_stride was lost and max_length 48 came back as 128."""
    options = {"doc_stride": 16, "max_answer_length": 7}
    _, adapter = _export(
        tmp_path,
        bases[0],
        HeadKind.QUESTION_ANSWERING,
        "squad",
        task_options={"squad": options},
        max_length=48,
    )
    sidecar = json.loads((adapter / LABELS_FILE).read_text())
    assert (sidecar["task"], sidecar["task_options"], sidecar["max_length"]) == ("squad", options, 48)
    rebuilt = rebuild_task(adapter, read_checkpoint_config(adapter), "adapter")
    assert (rebuilt.task.name, rebuilt.task.doc_stride, rebuilt.task.max_answer_length) == ("squad", 16, 7)
    assert rebuilt.max_length == 48


def test_a_bf16_checkpoint_s_adapter_loads_its_base_in_bf16(bases, tmp_path) -> None:
    _, adapter = _export(tmp_path, bases[0], HeadKind.TOKEN_CLASSIFICATION, "conll2003", CONLL, dtype="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert {p.dtype for p in load_checkpoint(adapter).backbone.parameters()} == {torch.bfloat16}


def test_a_sidecar_with_label_names_only_imports_as_before(bases, tmp_path) -> None:
    """Exports written before the other keys existed: no base check, the generic task, max_length unknown."""
    base, other = bases
    _, adapter = _export(tmp_path, base, HeadKind.TOKEN_CLASSIFICATION, "conll2003", CONLL, max_length=24)
    (adapter / LABELS_FILE).write_text(json.dumps({"label_names": CONLL}))
    config = read_checkpoint_config(adapter)
    assert config["base_model"]["fingerprint"] is None
    assert config["tasks"]["adapter"]["task"] == "ner-generic"
    assert rebuild_task(adapter, config, "adapter").max_length is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            load_checkpoint(adapter, backbone=load_backbone(other)[0]).head_specs["adapter"].label_names
            == CONLL
        )


def test_a_pickled_adapter_weights_file_is_named_a_pickle(bases, tmp_path) -> None:
    """It was reported as 'not a readable safetensors file (header too large)'."""
    _, adapter = _export(tmp_path, bases[0], HeadKind.TOKEN_CLASSIFICATION, "conll2003", CONLL)
    weights = adapter / "adapter_model.safetensors"
    torch.save({"prompt_embeddings": torch.zeros(4, 8)}, weights)
    with pytest.raises(
        PeftFormatError, match=r"adapter_model.safetensors: a pickle/torch.save file, not safetensors"
    ):
        load_checkpoint(adapter, backbone=load_backbone(bases[0])[0])
