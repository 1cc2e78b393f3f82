"""The packaged models' cache: a damaged or outdated folder is rebuilt and replaced, one process converts at a
time, and staging folders of killed processes are swept. Tiny stand-ins replace the GGUF conversion and the
MPNet zip (the real ones take 20 s and write 0.5-0.85 GB)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import transformers
from tiny_models import minilm_tokenizer_dir
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ptuning.core import packaged
from ptuning.core.packaged import MARKER_FILE, MPNET_FOLDER, MPNET_WEIGHTS, SMOLLM2_FOLDER, cache_root


@pytest.fixture
def conversions(tmp_path, monkeypatch) -> list[str]:
    """A stand-in GGUF whose 'conversion' writes a tiny Llama and the MiniLM tokenizer; returns the list of
    conversions made (one entry per de-quantization)."""
    gguf = tmp_path / "pkg" / "model.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("PTUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(packaged, "smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(packaged, "_find_module", lambda name: object())  # 'gguf is installed'
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    made: list[str] = []

    def dequantized(folder, gguf_file, **kwargs):
        made.append(gguf_file)
        time.sleep(0.2)  # a conversion takes a while: two processes overlap
        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
        return LlamaForCausalLM(config)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", dequantized)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tokenizer)
    return made


@pytest.fixture
def mpnet_unzips(tmp_path, monkeypatch) -> list[Path]:
    """Five parts of a tiny zip holding a model folder, with its weights' sha256 pinned; returns the list of
    unzips made."""
    monkeypatch.setenv("PTUNING_CACHE", str(tmp_path / "cache"))
    weights = os.urandom(100_000)
    joined = io.BytesIO()
    with zipfile.ZipFile(joined, "w") as archive:
        archive.writestr(f"all-mpnet-base-v2/{MPNET_WEIGHTS}", weights)
        archive.writestr("all-mpnet-base-v2/config.json", "{}")
    blob = joined.getvalue()
    size = len(blob) // 5 + 1
    parts = []
    for number in range(1, 6):
        part = tmp_path / f"all-mpnet-base-v2.zip.{number:03d}"
        part.write_bytes(blob[(number - 1) * size : number * size])
        parts.append(part)
    monkeypatch.setattr(packaged, "_mpnet_part", lambda number: parts[number - 1])
    monkeypatch.setattr(packaged, "MPNET_WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    made: list[Path] = []
    extract = zipfile.ZipFile.extractall

    def counted(self, path=None, *args, **kwargs):
        made.append(Path(path))
        return extract(self, path, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", counted)
    return made


def cut(file: Path, size: int = 100) -> None:
    with file.open("r+b") as stream:
        stream.truncate(size)


def test_a_cut_smollm2_weights_file_beside_its_marker_is_converted_again(conversions) -> None:
    """A cut model.safetensors next to an intact marker was reused, and every load failed naming no file."""
    folder = packaged.smollm2_path()
    whole = (folder / "model.safetensors").stat().st_size
    cut(folder / "model.safetensors")
    assert packaged.smollm2_path() == folder
    assert len(conversions) == 2
    assert (folder / "model.safetensors").stat().st_size == whole
    assert json.loads((folder / MARKER_FILE).read_text())["files"]["model.safetensors"] == whole
    packaged.smollm2_path()
    assert len(conversions) == 2  # whole again: reused


def test_another_gguf_with_the_same_name_and_size_is_converted_again(conversions, monkeypatch) -> None:
    """Another release of the package may keep the file's name and size: its sha256 tells them apart."""
    gguf = packaged.smollm2_gguf()
    packaged.smollm2_path()
    hashed: list[Path] = []
    sha256 = packaged._sha256
    monkeypatch.setattr(packaged, "_sha256", lambda path: hashed.append(path) or sha256(path))
    packaged.smollm2_path()
    assert len(conversions) == 1 and hashed == []  # the same file (same mtime): reused without reading it
    gguf.write_bytes(b"GGUF" + bytes(range(60)))
    os.utime(gguf, ns=(1_000_000_000, 1_000_000_000))
    folder = packaged.smollm2_path()
    assert len(conversions) == 2
    assert json.loads((folder / MARKER_FILE).read_text())["sha256"] == sha256(gguf)


def test_a_killed_conversion_leaves_no_staging_folder_once_the_next_one_runs(conversions) -> None:
    """A conversion killed mid-way (SIGKILL, OOM) left a 0.5 GB staging folder in the cache for ever."""
    _killed_in_a_child(packaged.smollm2_path, transformers.AutoModelForCausalLM, "from_pretrained")
    assert len(list(cache_root().iterdir())) == 1  # the child's staging folder
    packaged.smollm2_path()
    assert sorted(p.name for p in cache_root().iterdir()) == [SMOLLM2_FOLDER]


def test_two_processes_replacing_a_stale_conversion_convert_once(conversions) -> None:
    """Both converted, and one crashed with FileNotFoundError replacing the folder the other had swapped in."""
    stale = cache_root() / SMOLLM2_FOLDER
    stale.mkdir(parents=True)
    (stale / MARKER_FILE).write_text(json.dumps({"gguf": "old.gguf", "bytes": 1}))
    results: list[object] = []

    def convert() -> None:
        try:
            results.append(packaged.smollm2_path())
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            results.append(error)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [stale, stale]
    assert len(conversions) == 1  # the second waited for the first and reused its folder
    assert sorted(p.name for p in cache_root().iterdir()) == [SMOLLM2_FOLDER]


def test_a_damaged_mpnet_folder_is_replaced_by_its_checked_rebuild(mpnet_unzips) -> None:
    """The rebuild passed its sha256 check and was thrown away, because the damaged folder kept its marker:
    every load unzipped 0.85 GB again and then failed on the cut file."""
    folder = packaged.mpnet_path()
    cut(folder / MPNET_WEIGHTS)
    assert packaged.mpnet_path() == folder
    assert packaged._sha256(folder / MPNET_WEIGHTS) == packaged.MPNET_WEIGHTS_SHA256
    packaged.mpnet_path()
    assert len(mpnet_unzips) == 2  # the first build and one rebuild, then reused
    assert sorted(p.name for p in cache_root().iterdir()) == [MPNET_FOLDER]


def test_a_killed_mpnet_unzip_leaves_no_staging_folder_once_the_next_one_runs(mpnet_unzips) -> None:
    _killed_in_a_child(packaged.mpnet_path, zipfile.ZipFile, "extractall")
    assert len(list(cache_root().iterdir())) == 1  # the child's staging folder
    packaged.mpnet_path()
    assert sorted(p.name for p in cache_root().iterdir()) == [MPNET_FOLDER]


def _killed_in_a_child(call: Callable[[], object], owner: object, step: str) -> None:
    """Run ``call`` in a forked child that dies at ``owner.step`` without cleaning up, as under SIGKILL."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    child = os.fork()
    if child == 0:  # the child: die at the step, skipping every finally
        try:
            setattr(owner, step, lambda *args, **kwargs: os._exit(0))
            call()
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # it reached the step
