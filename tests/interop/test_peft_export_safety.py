"""Where ``ptuning export --format peft`` writes: a target that cannot take the adapter is refused before the
checkpoint and its base load, and a write that fails (a full disk) is one line that leaves the adapter
written there before as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import ptuning.interop.peft_export as peft_export
import ptuning.interop.peft_format as peft_format
from ptuning.cli import main
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

from .peft_fixtures import fixture_backbone

NO_SPACE = "No space left on device"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    config = PrefixConfig(prefix_length=4, dropout=0.0, position_mode="shift")
    model = PromptModel(fixture_backbone("llama-gqa-causal-lm"), "ptuning-v2", config, head_dropout=0.0)
    model.add_task("task", HeadSpec(HeadKind.CAUSAL_LM))
    return save_checkpoint(model.eval(), tmp_path / "checkpoint")


def export(checkpoint: Path, out: Path) -> int:
    return main(["export", "--format", "peft", str(checkpoint), str(out)])


@pytest.mark.parametrize(
    ("out", "message"),
    [("afile/adapter", "is inside {tmp}/afile, which is a file"), ("/proc/adapter", "cannot write in /proc")],
)
def test_a_target_that_cannot_take_the_adapter_is_one_line_before_anything_loads(
    checkpoint, tmp_path, capsys, monkeypatch, out, message
) -> None:
    """A path inside a file (FileExistsError) or on a folder that takes no file (EROFS) ended in a traceback
    once the checkpoint and its base had loaded."""
    (tmp_path / "afile").write_text("keep me")

    def loaded(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the target was checked")

    monkeypatch.setattr(peft_export, "read_checkpoint_config", loaded)
    assert export(checkpoint, tmp_path / out) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "keep me"


def tensors(value: float) -> dict[str, torch.Tensor]:
    return {peft_format.TABLE_KEY: torch.full((2, 4), value)}


def test_a_full_disk_while_the_adapter_is_written_is_one_line_and_keeps_the_old_one(
    tmp_path, monkeypatch
) -> None:
    adapter = peft_format.write_adapter(tmp_path / "adapter", {"peft_type": "PREFIX_TUNING"}, tensors(1.0))
    before = {p.name: p.read_bytes() for p in adapter.iterdir()}

    def no_space(*args, **kwargs):
        raise SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error 28)")

    monkeypatch.setattr(peft_format, "save_file", no_space)
    with pytest.raises(peft_format.PeftFormatError) as raised:
        peft_format.write_adapter(adapter, {"peft_type": "PREFIX_TUNING"}, tensors(2.0))
    message = str(raised.value)
    assert message.startswith(f"{adapter}: the adapter was not written") and NO_SPACE in message
    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging folder left


def test_the_adapter_is_on_disk_before_it_is_swapped_in(tmp_path, monkeypatch) -> None:
    """docs/ARCHITECTURE.md said so; the adapter was swapped in unsynced (a power loss: empty files)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace_dir = os.fsync, peft_format.replace_dir

    def fsync(descriptor: int) -> None:
        events.append(("sync", Path(os.readlink(f"/proc/self/fd/{descriptor}")).name))
        real_fsync(descriptor)

    def replace_dir(new, target) -> None:
        events.append(("swap", Path(target).name))
        real_replace_dir(new, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(peft_format, "replace_dir", replace_dir)
    peft_format.write_adapter(tmp_path / "adapter", {"peft_type": "PREFIX_TUNING"}, tensors(1.0), ["a", "b"])
    swap = events.index(("swap", "adapter"))
    synced = {name for kind, name in events[:swap] if kind == "sync"}
    assert {peft_format.ADAPTER_WEIGHTS, peft_format.ADAPTER_CONFIG, peft_format.LABELS_FILE} <= synced


def test_replacing_an_adapter_keeps_the_files_an_export_does_not_write(checkpoint, tmp_path) -> None:
    """The swap replaced the folder whole: PEFT's README.md (save_pretrained writes one) and a user's
    tokenizer were deleted without a word. A stale adapter file of the old export is not kept."""
    out = tmp_path / "adapter"
    assert export(checkpoint, out) == 0
    (out / "README.md").write_text("# my adapter\n")
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "tokenizer.json").write_text("{}")
    (out / peft_format.PICKLED_WEIGHTS).write_bytes(b"old pickled weights")
    with pytest.warns(peft_format.KeptFilesNote, match="kept README.md, tokenizer of the adapter folder it"):
        assert export(checkpoint, out) == 0
    assert (out / "README.md").read_text() == "# my adapter\n"
    assert (out / "tokenizer" / "tokenizer.json").read_text() == "{}"
    assert not (out / peft_format.PICKLED_WEIGHTS).exists()
