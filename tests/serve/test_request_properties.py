"""Property suite over request bodies (hypothesis, bounded): whatever JSON shape, numbers (NaN and
infinities included), strings (lone surrogates, i.e. invalid UTF-8, included) or raw bytes a client sends,
the server answers only documented status codes, never 500, always with a JSON body; and a 200 answers
every input, none silently lost."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ptuning.serve.app import create_app

from .conftest import build_checkpoint

DOCUMENTED = {200, 404, 413, 422}
TASKS = ["sentiment", "entail", "ner", "qa", "not-a-task"]
SETTINGS = settings(
    max_examples=200,  # about 7 s on 2 shared CPU cores
    deadline=None,
    derandomize=True,  # the same examples on every run and machine: CI stays reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["premise", "hypothesis", "tokens", "question", "context", "sentence", "id"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
field_objects = st.fixed_dictionaries(
    {},
    optional={
        key: values | st.text(max_size=60) | st.lists(st.text(max_size=12), max_size=6)
        for key in ("sentence", "premise", "hypothesis", "tokens", "question", "context", "id", "idx")
    },
)
inputs = st.text(max_size=80) | st.lists(st.text(max_size=20), max_size=6) | field_objects | values
bodies = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(inputs, max_size=5)}),
    st.fixed_dictionaries({"input": inputs}),
    st.fixed_dictionaries({"inputs": values, "input": values}),
    st.dictionaries(st.text(max_size=8), values, max_size=3),
    values,
)


def encode(body) -> bytes:
    """JSON as a careless client writes it: NaN/Infinity literals, lone surrogates as invalid UTF-8."""
    return json.dumps(body, allow_nan=True).encode("utf-8", errors="surrogatepass")


@pytest.fixture(scope="module")
def http(base_dir, base, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    build_checkpoint(base_dir, root / "sentiment", {"sst2": "sst2"})
    build_checkpoint(base_dir, root / "entail", {"superglue-rte": "superglue-rte"})
    build_checkpoint(base_dir, root / "ner", {"conll2003": "conll2003"})
    build_checkpoint(base_dir, root / "qa", {"squad": "squad"}, max_length=256)
    backbone, tokenizer = base
    app = create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def check(response, body) -> None:
    assert response.status_code in DOCUMENTED, (response.status_code, response.text, body)
    answer = response.json()  # always JSON
    if response.status_code == 200:
        if isinstance(body, dict) and "inputs" in body:
            assert len(answer["predictions"]) == len(body["inputs"])
        else:
            assert isinstance(answer["prediction"], dict)
    else:
        assert "detail" in answer


@SETTINGS
@given(task=st.sampled_from(TASKS), body=bodies)
@example(task="sentiment", body={"inputs": [float("nan")]})  # cases found by hand, always run
@example(task="ner", body={"input": {"tokens": [float("inf")]}})
@example(task="not-a-task", body={"inputs": [float("-inf")]})
@example(task="qa", body={"input": {"question": "\ud800?", "context": "x"}})
@example(task="entail", body={"inputs": [[[[[[[[[["deep"]]]]]]]]]]})
def test_any_json_body_gets_a_documented_status(http, task: str, body) -> None:
    response = http.post(
        f"/tasks/{task}/predict", content=encode(body), headers={"content-type": "application/json"}
    )
    check(response, body)


@SETTINGS
@given(task=st.sampled_from(TASKS), raw=st.binary(max_size=200))
def test_any_bytes_get_a_documented_status(http, task: str, raw: bytes) -> None:
    response = http.post(f"/tasks/{task}/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in DOCUMENTED, (response.status_code, response.text, raw)
    assert "detail" in response.json()
