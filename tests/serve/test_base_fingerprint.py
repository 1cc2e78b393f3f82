"""The same base weights loaded with other runtime flags are the same base: no 409."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from ptuning.core.backbones import load_backbone
from ptuning.serve.app import create_app

from .conftest import build_checkpoint


@pytest.mark.anyio
async def test_a_base_loaded_with_other_runtime_flags_serves_the_checkpoint(base_dir, tmp_path) -> None:
    build_checkpoint(base_dir, tmp_path / "root" / "sentiment", {"sst2": "sst2"})
    backbone, tokenizer = load_backbone(base_dir)
    backbone.config.use_cache = False
    backbone.config.output_hidden_states = True
    backbone.config.pad_token_id = 7
    app = create_app(tmp_path / "root", backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://serve.test"
    ) as http:
        listing = (await http.get("/checkpoints")).json()
        reload = await http.post("/checkpoints/sentiment")
    assert listing["failed"] == {} and list(listing["loaded"]) == ["sentiment"]
    assert reload.status_code == 201


def test_a_checkpoint_trained_on_another_backbone_dtype_is_logged_when_served(
    base_dir, tmp_path, caplog
) -> None:
    """The server has one backbone: a bf16-trained prompt served in fp32 answers a little differently from
    ptuning eval (which loads the dtype it was trained on), and the log says so."""
    folder = build_checkpoint(base_dir, tmp_path / "root" / "sentiment", {"sst2": "sst2"})
    config = json.loads((folder / "prompt_config.json").read_text())
    config["base_model"]["dtype"] = "bf16"  # what a --backbone-dtype bf16 run records
    (folder / "prompt_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="ptuning.serve.registry"):
        create_app(tmp_path / "root", base_dir, max_wait_ms=0)
    assert "sentiment was trained on a bf16 backbone and is served on this fp32 one" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptuning.serve.registry"):
        create_app(tmp_path / "root", base_dir, max_wait_ms=0, backbone_dtype="bf16")
    assert "was trained on" not in caplog.text
