"""scripts/gpu_parts.sh, which carries the 438 MB MPNet folder to a borrowed GPU machine one part per call: the
folder comes back byte for byte, a missing part blocks the join by name, a damaged part is named, and parts of
another split are refused. Run on a small folder with 1 MiB parts."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_parts.sh"


def parts(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def split_folder(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "src" / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(os.urandom(2_500_000))  # spans three 1 MiB parts
    (model / "sub" / "config.json").write_text('{"a": 1}\n')
    (model / "empty").write_bytes(b"")
    assert parts("split", model, tmp_path / "parts", 1).returncode == 0
    return model, tmp_path / "parts"


def carry(parts_dir: Path, names: list[str], call: Path) -> Path:
    """What one device call brings: the checksums and some parts, in a fresh folder."""
    call.mkdir()
    for name in ["SHA256SUMS", *names]:
        shutil.copy(parts_dir / name, call / name)
    return call


def same_tree(left: Path, right: Path) -> bool:
    compared = filecmp.dircmp(left, right)
    files_equal = all(filecmp.cmp(left / f, right / f, shallow=False) for f in compared.common_files)
    return (
        not compared.left_only
        and not compared.right_only
        and files_equal
        and all(same_tree(left / d, right / d) for d in compared.common_dirs)
    )


def test_parts_received_over_calls_join_back_to_the_same_folder(split_folder, tmp_path):
    model, parts_dir = split_folder
    assert sorted(p.name for p in parts_dir.iterdir()) == ["SHA256SUMS", "part-000", "part-001", "part-002"]
    store = tmp_path / "store"
    first = parts("receive", carry(parts_dir, ["part-000"], tmp_path / "call1"), store)
    assert first.returncode == 0 and "1 of 3 parts; missing: part-001 part-002" in first.stdout
    refused = parts("join", store, tmp_path / "cache")
    assert refused.returncode != 0 and "carry part-001 part-002" in refused.stderr
    assert not (tmp_path / "cache" / "model").exists()
    last = parts("receive", carry(parts_dir, ["part-001", "part-002"], tmp_path / "call2"), store)
    assert "3 of 3 parts; missing: none" in last.stdout
    joined = parts("join", store, tmp_path / "cache")
    assert joined.returncode == 0, joined.stderr
    assert same_tree(model, tmp_path / "cache" / "model")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["model"]  # no staging folder left behind


def test_a_damaged_part_is_named(split_folder, tmp_path):
    _, parts_dir = split_folder
    call = carry(parts_dir, ["part-000", "part-001", "part-002"], tmp_path / "call")
    with (call / "part-001").open("r+b") as part:
        part.write(b"\0\0\0\0")
    result = parts("receive", call, tmp_path / "store")
    assert result.returncode != 0 and "part-001: FAILED" in result.stdout
    assert parts("join", tmp_path / "store", tmp_path / "cache").returncode != 0


def test_parts_of_another_split_are_refused(split_folder, tmp_path):
    model, parts_dir = split_folder
    store = tmp_path / "store"
    assert parts("receive", carry(parts_dir, ["part-000"], tmp_path / "call1"), store).returncode == 0
    (model / "weights.bin").write_bytes(os.urandom(100))
    assert parts("split", model, tmp_path / "other", 1).returncode == 0
    result = parts("receive", carry(tmp_path / "other", ["part-000"], tmp_path / "call2"), store)
    assert result.returncode != 0 and "another split" in result.stderr
