"""The same base weights loaded with other runtime flags are the same base: no 409."""

from __future__ import annotations

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
