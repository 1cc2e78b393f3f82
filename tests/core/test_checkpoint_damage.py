"""A damaged checkpoint is one CheckpointError naming the file and what is wrong, never a traceback from deep
inside, never an unpickled object; ``ptuning eval`` / ``predict`` print it in one line and exit 2."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from core_tiny import build, tiny_backbone
from safetensors.torch import load_file, save_file
from tiny_models import save_tiny_bert

from ptuning import cli
from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel


class _Trap:
    """Unpickling this creates the marker file: proof that a loader unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def truncate_weights(folder: Path) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def pickle_weights(folder: Path) -> None:  # a legacy pickle (protocol 2) with a payload
    (folder / WEIGHTS_FILE).write_bytes(pickle.dumps({"w": _Trap(folder.parent / "unpickled")}, protocol=2))


def torch_save_weights(folder: Path) -> None:  # torch.save's zip format
    torch.save({"w": torch.zeros(2), "trap": _Trap(folder.parent / "unpickled")}, folder / WEIGHTS_FILE)


def edit_weights(change):
    def damage(folder: Path) -> None:
        path = folder / WEIGHTS_FILE
        save_file(change(load_file(str(path))), str(path))

    return damage


def without_head_bias(state: dict) -> dict:
    del state["heads.t.linear.bias"]
    return state


def poison(part: str, value: float):
    """One weight of the first tensor of ``part`` (prefixes, heads) set to NaN or Inf: a file safetensors
    reads without complaint."""

    def change(state: dict) -> dict:
        state[min(k for k in state if k.startswith(f"{part}."))].view(-1)[0] = value
        return state

    return change


def edit_config(change):
    def damage(folder: Path) -> None:
        path = folder / CONFIG_FILE
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return damage


def without_name(config: dict) -> dict:
    del config["base_model"]["name_or_path"]
    return config


DAMAGES = {
    "truncated weights": (truncate_weights, f"{WEIGHTS_FILE}: not a valid safetensors file"),
    "pickled weights": (pickle_weights, f"{WEIGHTS_FILE}: a pickle/torch.save file, not safetensors"),
    "torch.save weights": (torch_save_weights, f"{WEIGHTS_FILE}: a pickle/torch.save file"),
    "config is a list": (
        lambda d: (d / CONFIG_FILE).write_text("[]"),
        "the top level should be a JSON object",
    ),
    "unknown method": (
        edit_config(lambda c: {**c, "method": "lora"}),
        "field 'method' should be one of ptuning-v2, prefix-mlp",
    ),
    "no base name": (edit_config(without_name), "field 'base_model.name_or_path' is missing"),
    "tasks not an object": (edit_config(lambda c: {**c, "tasks": [1]}), "field 'tasks' should be an object"),
    "unknown head kind": (
        edit_config(lambda c: {**c, "tasks": {"t": {**c["tasks"]["t"], "head": {"kind": "ranking"}}}}),
        "field 'tasks.t.head.kind' should be one of",
    ),
    "weights without a head tensor": (
        edit_weights(without_head_bias),
        f"{WEIGHTS_FILE}: missing tensors ['heads.t.linear.bias'], unexpected tensors []",
    ),
    "weights with an extra tensor": (
        edit_weights(lambda state: {**state, "heads.t.extra": torch.zeros(2)}),
        f"{WEIGHTS_FILE}: missing tensors [], unexpected tensors ['heads.t.extra']",
    ),
    "bad prefix length": (
        edit_config(lambda c: {**c, "prefix": {**c["prefix"], "prefix_length": "4"}}),
        "field 'prefix': prefix_length must be a positive integer",
    ),
    "NaN in a prefix tensor": (
        edit_weights(poison("prefixes", float("nan"))),
        f"{WEIGHTS_FILE}: NaN or Inf values in tensor 'prefixes.",
    ),
    "Inf in a head tensor": (
        edit_weights(poison("heads", float("inf"))),
        f"{WEIGHTS_FILE}: NaN or Inf values in tensor 'heads.",
    ),
    **{
        f"prefix layers {json.dumps(layers)}": (  # each was a ValueError traceback, or rounded to (0, 1)
            edit_config(lambda c, layers=layers: {**c, "prefix": {**c["prefix"], "layers": layers}}),
            f"{CONFIG_FILE}: field 'prefix': layers must be None (all layers) or a non-empty list of integer "
            f"layer indices >= 0, got {layers!r}",
        )
        for layers in (["a"], [0.9, 1.4], "01", [True])
    },
    "fingerprint version 2.0": (  # passed as 2.0 == 2, then was refused as "a different base model"
        edit_config(lambda c: {**c, "base_model": {**c["base_model"], "fingerprint_version": 2.0}}),
        "field 'base_model.fingerprint_version' should be one of the integers (1, 2, 3), found 2.0",
    ),
    "unknown dtype": (
        edit_config(lambda c: {**c, "base_model": {**c["base_model"], "dtype": "fp64"}}),
        "field 'base_model.dtype' should be one of fp32, bf16, fp16, ",
    ),
    "prefix form of a prefix that does not exist": (
        edit_config(lambda c: {**c, "prefix_forms": {**c["prefix_forms"], "zzz": "mlp"}}),
        "field 'prefix_forms' should be keyed by the tasks' prefixes (t), found \"zzz\"",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_one_checkpoint_error_naming_the_file(damage: str, tmp_path) -> None:
    spoil, expected = DAMAGES[damage]
    folder = save_checkpoint(build("bert").model, tmp_path / "ckpt")
    spoil(folder)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(folder, backbone=tiny_backbone("bert"))
    assert expected in str(error.value)
    assert str(folder) in str(error.value)
    assert not (tmp_path / "unpickled").exists()


def test_a_sound_checkpoint_with_every_checked_field_still_loads(tmp_path) -> None:
    """The checks refuse damage only: layers, dtype, fingerprint version and prefix forms as saved load."""
    built = build("bert", layers=(1,))
    folder = save_checkpoint(built.model, tmp_path / "ckpt")
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["prefix"]["layers"] == [1] and config["prefix_forms"] == {"t": "table"}
    assert config["base_model"]["dtype"] == "fp32" and config["base_model"]["fingerprint_version"] == 3
    loaded = load_checkpoint(folder, backbone=tiny_backbone("bert"))
    assert loaded.prefix_config.layers == (1,)
    saved = {k: v for k, v in built.model.state_dict().items() if k.startswith(("prefixes.", "heads."))}
    for key, tensor in saved.items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("base"))


def sst2_checkpoint(base_dir: str, folder: Path) -> Path:
    backbone, _ = load_backbone(base_dir)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2, dropout=0.0))
    model.add_task("sst2", HeadSpec(HeadKind.CLASSIFICATION, ["negative", "positive"]))
    return save_checkpoint(model, folder, {"sst2": "sst2"})


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize(
    "damage",
    [
        "truncated weights",
        "torch.save weights",
        "config is a list",
        "unknown method",
        "no base name",
        "NaN in a prefix tensor",
        "Inf in a head tensor",
        'prefix layers ["a"]',
    ],
)
def test_eval_and_predict_print_one_line_and_exit_2(
    command: str, damage: str, base_dir, tmp_path, capsys
) -> None:
    spoil, expected = DAMAGES[damage]
    folder = sst2_checkpoint(base_dir, tmp_path / "ckpt")
    spoil(folder)
    (tmp_path / "in.txt").write_text("a fine film\n")
    (tmp_path / "data").mkdir()
    where = (
        ["--input", str(tmp_path / "in.txt")] if command == "predict" else ["--data", str(tmp_path / "data")]
    )
    capsys.readouterr()  # what building the checkpoint printed
    code = cli.main([command, "--checkpoint", str(folder), "--model", base_dir, *where])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ptuning {command}: error: {folder}")
    assert expected in lines[0]
    assert not (tmp_path / "unpickled").exists()


def test_a_load_that_fails_gives_the_backbone_back_as_found(tmp_path) -> None:
    """A checkpoint refused after the model was built left the caller's backbone frozen and patched, with no
    model to call detach_backbone() on (and a holder count that kept any other model from restoring it)."""
    built = build("bert")
    saved = save_checkpoint(built.model, tmp_path / "ckpt")
    backbone = built.model.detach_backbone()
    config = json.loads((saved / "prompt_config.json").read_text())
    config["tasks"]["t"]["head"]["label_names"] = ["a", "b", "c"]  # a head of 3 rows for 2 saved
    (saved / "prompt_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        load_checkpoint(saved, backbone=backbone)
    assert "_ptuning_attachment" not in vars(backbone)
    assert all(parameter.requires_grad for parameter in backbone.parameters())
    assert backbone.config._attn_implementation != "ptuning_sdpa"
