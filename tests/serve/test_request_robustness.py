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


LONE_SURROGATES = {  # JSON may spell a lone surrogate, which no UTF-8 encoder (tokenizer, response) takes
    "in an id": (b'{"input": {"sentence": "ok", "id": "\\ud800"}}', "input 0, field 'id'"),
    "in a text": (b'{"inputs": ["ok", "a\\udfff"]}', "input 1"),
    "in another field": (b'{"inputs": [{"sentence": "ok", "label": "\\ud800"}]}', "input 0, field 'label'"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(LONE_SURROGATES))
async def test_a_lone_surrogate_is_422_naming_its_input_and_field(app, case: str) -> None:
    """An id holding one was echoed back and failed the response's encoding (500, after /metrics had
    counted a 200); in a text the tokenizer refused it with a message naming no input."""
    body, place = LONE_SURROGATES[case]
    async with client(app) as http:
        before = (await http.get("/metrics")).json()["requests"].get("sentiment", {})
        response = await http.post("/tasks/sentiment/predict", content=body, headers=JSON)
        after = (await http.get("/metrics")).json()["requests"]["sentiment"]
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"task 'sentiment': {place}: not valid Unicode (a lone surrogate)"
    assert after.get("200", 0) == before.get("200", 0)
    assert after["422"] == before.get("422", 0) + 1


@pytest.mark.anyio
async def test_a_lone_surrogate_in_a_field_name_is_422(app) -> None:
    async with client(app) as http:
        body = b'{"inputs": [{"\\ud800": "ok"}]}'
        response = await http.post("/tasks/sentiment/predict", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "task 'sentiment': input 0: the field name '\\ud800' is not valid Unicode (a lone surrogate)"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("field", "raw", "shown"),
    [
        ("id", "NaN", "nan"),
        ("id", "Infinity", "inf"),
        ("id", "1e400", "inf"),  # parsed as an infinite float
        ("idx", "-Infinity", "-inf"),
        ("id", "true", "True"),
        ("idx", "false", "False"),
    ],
)
async def test_an_id_that_is_not_a_string_or_a_finite_number_is_422(app, field, raw, shown) -> None:
    """NaN and infinities came back as id null, and booleans were accepted as ids."""
    body = f'{{"inputs": [{{"sentence": "ok", "{field}": {raw}}}]}}'.encode()
    async with client(app) as http:
        response = await http.post("/tasks/sentiment/predict", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        f"task 'sentiment': request, input 0: the id should be a string or a finite number, found {shown}"
    )


@pytest.mark.anyio
async def test_string_and_large_integer_ids_are_echoed_unchanged(app) -> None:
    body = b'{"inputs": [{"sentence": "ok", "id": 12345678901234567890123}, {"sentence": "ok", "id": "caf\\u00e9"}]}'
    async with client(app) as http:
        response = await http.post("/tasks/sentiment/predict", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["predictions"]] == [12345678901234567890123, "café"]
