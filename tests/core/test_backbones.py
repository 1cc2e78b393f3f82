"""Loading backbones: a family without sdpa loads with the attention it supports, and says so."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from core_tiny import tiny_backbone
from safetensors.torch import load_file
from tiny_models import save_tiny_bert
from transformers import AutoTokenizer

from ptuning import cli
from ptuning.core.backbones import (
    PACKAGED_MODELS,
    BackboneNotFoundError,
    load_backbone,
    packaged_minilm_path,
    recorded_name,
)


def test_a_family_without_sdpa_loads_with_eager_under_the_default_sdpa(tmp_path, caplog) -> None:
    folder = tmp_path / "deberta"
    tiny_backbone("deberta-v2").save_pretrained(folder)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="ptuning.core.backbones"):
        model, _ = load_backbone(str(folder))  # attn_implementation="sdpa" by default
    assert model.config._attn_implementation == "eager"
    notes = [r.getMessage() for r in caplog.records if r.name == "ptuning.core.backbones"]
    assert (
        len(notes) == 1 and "has no sdpa attention; loading it with attn_implementation='eager'" in notes[0]
    )


def test_a_family_with_sdpa_keeps_it(tmp_path) -> None:
    folder = tmp_path / "bert"
    tiny_backbone("bert").save_pretrained(folder)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(folder)
    model, _ = load_backbone(str(folder))
    assert model.config._attn_implementation == "sdpa"


def test_a_folder_saved_without_its_tokenizer_is_refused(tmp_path) -> None:
    """transformers 5 builds an empty tokenizer there: every word would become [UNK] and every score wrong."""
    folder = save_tiny_bert(tmp_path / "bert")
    load_backbone(folder)  # whole, it loads
    for name in Path(folder).iterdir():
        if name.name not in ("config.json", "model.safetensors"):
            name.unlink()
    with pytest.raises(
        BackboneNotFoundError,
        match=rf"^{re.escape(folder)}: its tokenizer has \d+ tokens for the model's 30522",
    ):
        load_backbone(folder)


def test_a_local_folder_is_recorded_absolute_and_tilde_is_expanded(tmp_path, monkeypatch) -> None:
    """A checkpoint naming 'models/bert' would load only from the folder its run was started in."""
    save_tiny_bert(tmp_path / "models" / "bert")
    monkeypatch.chdir(tmp_path)
    model, _ = load_backbone("models/bert")
    assert model.ptuning_source == str(tmp_path / "models" / "bert")
    monkeypatch.setenv("HOME", str(tmp_path))
    model, _ = load_backbone("~/models/bert")
    assert model.ptuning_source == str(tmp_path / "models" / "bert")
    assert recorded_name("minilm") == "minilm" and recorded_name("org/some-model") == "org/some-model"


def test_every_packaged_name_passes_the_offline_model_check(monkeypatch) -> None:
    """`--model mpnet` (README, the *-mpnet presets) was taken for a hub id and refused offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in PACKAGED_MODELS:
        cli._check_model(name)
    with pytest.raises(BackboneNotFoundError):
        cli._check_model("no-such-org/no-such-model")


def test_pickled_weights_are_refused_without_being_unpickled(tmp_path, monkeypatch) -> None:
    folder = Path(save_tiny_bert(tmp_path / "bert"))
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", _never)
    with pytest.raises(BackboneNotFoundError, match=r"holds only pickled weights \(\*\.bin\); loading never"):
        load_backbone(str(folder))


def _never(*args, **kwargs):
    raise AssertionError("torch.load was called")


def _without_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _cut_weights(folder: Path) -> None:
    with (folder / "model.safetensors").open("r+b") as stream:
        stream.truncate(1000)


def _one_shard_missing(folder: Path) -> None:
    model, _ = load_backbone(str(folder))
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, max_shard_size="1MB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()


@pytest.mark.parametrize("damage", [_without_weights, _cut_weights, _one_shard_missing])
def test_a_folder_with_missing_or_cut_weights_is_a_one_line_error(damage, tmp_path) -> None:
    """OSError, SafetensorError or FileNotFoundError left train/predict/serve with a 30-line traceback, exit 1."""
    folder = Path(save_tiny_bert(tmp_path / "bert"))
    damage(folder)
    expected = (
        r" cannot be loaded \(\w+: .+\); expected a folder with config\.json, tokenizer files and whole"
    )
    with pytest.raises(BackboneNotFoundError, match=f"^model folder {re.escape(str(folder))}{expected}"):
        load_backbone(str(folder))


def test_a_file_or_a_missing_path_as_model_says_so(tmp_path) -> None:
    file = tmp_path / "model.txt"
    file.write_text("not a model")
    with pytest.raises(
        BackboneNotFoundError,
        match=rf"^model {re.escape(str(file))} is a file; expected a folder with config",
    ):
        load_backbone(str(file))
    with pytest.raises(cli.ConfigError, match=r"model '.*model\.txt' is a file; expected a model folder"):
        cli._check_model(str(file))
    with pytest.raises(
        BackboneNotFoundError, match=rf"^model folder {re.escape(str(tmp_path / 'moved'))} does not exist"
    ):
        load_backbone(str(tmp_path / "moved"))  # not taken for a hub id


def test_a_broken_tokenizer_json_is_named(tmp_path) -> None:
    folder = Path(save_tiny_bert(tmp_path / "bert"))
    text = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(
        BackboneNotFoundError, match=rf"^{re.escape(str(folder / 'tokenizer.json'))} is not valid JSON \("
    ):
        load_backbone(str(folder))


def test_predict_on_a_checkpoint_whose_base_moved_says_where_the_path_came_from(tmp_path, capsys) -> None:
    from ptuning.core.checkpoint import save_checkpoint
    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel

    folder = Path(save_tiny_bert(tmp_path / "bert"))
    backbone, _ = load_backbone(str(folder))
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("sst2", HeadSpec(HeadKind.CLASSIFICATION, ["negative", "positive"]))
    save_checkpoint(model, tmp_path / "ckpt", task_names={"sst2": "sst2"})
    folder.rename(tmp_path / "bert-moved")
    (tmp_path / "input.txt").write_text("great fun\n")
    argv = ["predict", "--checkpoint", str(tmp_path / "ckpt"), "--input", str(tmp_path / "input.txt")]
    assert cli.main([*argv, "--batch-size", "2", "--device", "cpu"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bars of the save above
    assert last == (
        f"ptuning predict: error: model folder {folder} does not exist; expected a folder with config.json, "
        "tokenizer files and whole *.safetensors weights (save_pretrained) (named by the checkpoint's "
        "base_model.name_or_path; pass --model FOLDER if it moved)"
    )
