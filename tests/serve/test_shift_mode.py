"""Shift-mode checkpoints with different prefix lengths share the server and its mixed passes: the library
shifts each row by its own prefix length, so a mixed pass answers what each request gets alone."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ptuning.serve.app import create_app

from .conftest import build_checkpoint
from .test_predict import assert_same

INPUTS = {"short": ["a gripping, funny film", "dull"], "long": ["the cast is wonderful but the plot drags"]}


@pytest.mark.anyio
async def test_shift_mode_prefixes_of_different_lengths_mix_in_one_pass(base_dir, base, tmp_path) -> None:
    root = tmp_path / "root"
    build_checkpoint(
        base_dir, root / "short", {"sst2": "sst2"}, prefix_length=2, position_mode="shift", seed=1
    )
    build_checkpoint(
        base_dir, root / "long", {"sst2": "sst2"}, prefix_length=9, position_mode="shift", seed=2
    )
    backbone, tokenizer = base
    app = create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=300)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://serve.test"
    ) as http:
        assert app.state.registry.failed == {}
        alone = {}
        for name, inputs in INPUTS.items():
            alone[name] = (await http.post(f"/tasks/{name}/predict", json={"inputs": inputs})).json()
        before = app.state.metrics.batch_count
        mixed = await asyncio.gather(
            *(http.post(f"/tasks/{name}/predict", json={"inputs": inputs}) for name, inputs in INPUTS.items())
        )
    assert app.state.metrics.batch_count - before == 1
    for name, response in zip(INPUTS, mixed, strict=True):
        assert_same(response.json()["predictions"], alone[name]["predictions"], name)
