"""serve --device: the shared backbone is loaded onto the device asked for (auto: CUDA when there is one), and a
device or quantization that cannot work there is refused before the slow load."""

from __future__ import annotations

import pytest
import torch

import ptuning.serve.app as app_module
from ptuning.core.config import ConfigError
from ptuning.serve.app import create_app

from .conftest import build_checkpoint


def test_the_backbone_is_loaded_onto_the_resolved_device(base_dir, tmp_path, monkeypatch) -> None:
    build_checkpoint(base_dir, tmp_path / "root" / "sentiment", {"sst2": "sst2"})
    asked, loaded_onto = [], []
    real_load = app_module.load_backbone

    def resolve(requested=None) -> torch.device:
        asked.append(requested)
        return torch.device("cpu")

    def load(*args, device=None, **kwargs):
        loaded_onto.append(device)
        return real_load(*args, device=device, **kwargs)

    monkeypatch.setattr(app_module, "inference_device", resolve)
    monkeypatch.setattr(app_module, "load_backbone", load)
    app = create_app(tmp_path / "root", base_dir, max_wait_ms=0, device="cuda:1")
    assert asked == ["cuda:1"] and loaded_onto == [torch.device("cpu")]
    assert list(app.state.registry.tasks) == ["sentiment"]


def test_a_given_backbone_stays_where_it_is_unless_a_device_is_named(
    base, base_dir, tmp_path, monkeypatch
) -> None:
    build_checkpoint(base_dir, tmp_path / "root" / "sentiment", {"sst2": "sst2"})
    backbone, tokenizer = base
    moved = []
    monkeypatch.setattr(backbone, "to", lambda device: moved.append(device) or backbone)
    create_app(tmp_path / "root", backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    assert moved == []
    create_app(tmp_path / "root", backbone=backbone, tokenizer=tokenizer, max_wait_ms=0, device="cpu")
    assert moved == [torch.device("cpu")]


@pytest.mark.parametrize(
    ("cuda", "options", "expected"),
    [
        (False, {"device": "cuda"}, "--device cuda: torch sees no CUDA device here"),
        (
            True,
            {"device": "cuda", "backbone_quantization": "int8-dynamic"},
            "int8-dynamic runs on the CPU only",
        ),
        (False, {"device": "cpu", "backbone_quantization": "nf4"}, "nf4 needs CUDA and bitsandbytes"),
        (
            False,
            {"device": "cpu", "backbone_quantization": "int8-dynamic", "backbone_dtype": "bf16"},
            "int8-dynamic needs an fp32 backbone .* --backbone-dtype bf16 gives bf16",
        ),
    ],
)
def test_what_cannot_run_on_the_device_is_refused_before_loading(
    base_dir, tmp_path, monkeypatch, cuda, options, expected
) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    monkeypatch.setattr("torch.cuda.device_count", lambda: int(cuda))
    monkeypatch.setattr(app_module, "load_backbone", lambda *a, **k: pytest.fail("loaded before refusing"))
    with pytest.raises(ConfigError, match=expected):
        create_app(tmp_path, base_dir, **options)
