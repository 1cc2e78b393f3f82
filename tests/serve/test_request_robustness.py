"""Bodies the server must refuse cleanly: NaN/Infinity, invalid UTF-8 and deeply nested JSON are 422 (as
docs/SERVING.md says), never 500 or 400, and every refused body is counted in /metrics."""

from __future__ import annotations

import httpx
import pytest

from ptuning.serve.app import create_app

from .conftest import build_checkpoint

JSON = {"content-type": "application/json"}
BAD_BODIES = {
    "NaN in inputs": b'{"inputs": [NaN]}',
    "Infinity as input": b'{"input": Infinity}',
    "NaN among texts": b'{"inputs": ["fine", -Infinity, NaN]}',
    "NaN in a field": b'{"input": {"sentence": NaN}}',
    "invalid UTF-8": b'{"inputs": ["caf\xe9 \xff"]}',
    "nested past the JSON parser": b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested inside an object": b'{"input": {"sentence": ' + b"[" * 900 + b"]" * 900 + b"}}",
    "nested inside a list": b'{"inputs": [' + b"[" * 300 + b'"x"' + b"]" * 300 + b"]}",
}


@pytest.fixture(scope="module")
def app(base_dir, base, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    build_checkpoint(base_dir, root / "sentiment", {"sst2": "sst2"})
    backbone, tokenizer = base
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test")


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_a_malformed_body_is_422_with_json_detail(app, case: str) -> None:
    async with client(app) as http:
        response = await http.post("/tasks/sentiment/predict", content=BAD_BODIES[case], headers=JSON)
        health = await http.get("/health")
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert health.status_code == 200


@pytest.mark.anyio
async def test_refused_bodies_are_counted_in_metrics(app) -> None:
    async with client(app) as http:
        before = (await http.get("/metrics")).json()["requests"].get("sentiment", {}).get("422", 0)
        for body in BAD_BODIES.values():
            await http.post("/tasks/sentiment/predict", content=body, headers=JSON)
        await http.post("/tasks/sentiment/predict", json={"inputs": []})  # refused by the endpoint itself
        await http.post("/tasks/nope/predict", content=b'{"inputs": [NaN]}', headers=JSON)
        metrics = (await http.get("/metrics")).json()
    assert metrics["requests"]["sentiment"]["422"] - before == len(BAD_BODIES) + 1
    assert metrics["requests"]["(unknown task)"]["422"] >= 1
