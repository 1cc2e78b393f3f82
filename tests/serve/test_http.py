"""The HTTP boundary: limits, malformed requests, the API key, the docs, and a real socket on loopback."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from ptuning.core import precision
from ptuning.core.config import ConfigError
from ptuning.core.injection import attention_interface
from ptuning.serve.app import Limits, create_app
from ptuning.serve.command import add_serve_arguments, run_serve

from .conftest import build_checkpoint

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def root(base_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    build_checkpoint(base_dir, folder / "sentiment", {"sst2": "sst2"})
    build_checkpoint(base_dir, folder / "choice", {"copa": "copa"})
    return folder


@pytest.fixture(scope="module")
def app(root, base):
    backbone, tokenizer = base
    limits = Limits(max_items=3, max_text_length=50, max_body_bytes=2000)
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0, limits=limits)


@pytest.fixture(scope="module")
def keyed_app(root, base):
    backbone, tokenizer = base
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0, api_key=KEY)


def client(app, **headers) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://serve.test", headers=headers)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": ["a", "b", "c", "d"]}, 422, "at most 3"),
        ({"inputs": ["x" * 51]}, 422, "longer than the limit 50"),
        ({"inputs": []}, 422, "empty"),
        ({"inputs": ["a"], "input": "b"}, 422, "either"),
        ({}, 422, "either"),
        ({"inputs": ["a"], "extra": 1}, 422, "extra"),
        ({"inputs": [["a", "b"]]}, 422, "fields ['sentence']"),
        ({"inputs": [{"review": "a"}]}, 422, "sentence"),  # aliases (text, content) are accepted
        ({"inputs": [3]}, 422, ""),
    ],
)
async def test_bad_requests_get_422_with_a_message(app, body, status, message) -> None:
    async with client(app) as http:
        response = await http.post("/tasks/sentiment/predict", json=body)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])


@pytest.mark.anyio
async def test_task_field_checks_reach_the_client(app) -> None:
    item = {"premise": "p", "question": "why", "choice1": "a", "choice2": "b"}
    async with client(app) as http:
        response = await http.post("/tasks/choice/predict", json={"inputs": [item]})
    assert response.status_code == 422 and "'cause' or 'effect'" in response.json()["detail"]


@pytest.mark.anyio
async def test_unknown_task_is_404(app) -> None:
    async with client(app) as http:
        assert (await http.post("/tasks/nope/predict", json={"inputs": ["a"]})).status_code == 404
        assert (await http.get("/tasks/nope")).status_code == 404
        assert (await http.get("/tasks/sentiment")).json()["labels"] == ["negative", "positive"]


@pytest.mark.anyio
async def test_bodies_over_the_limit_get_413_declared_or_streamed(app) -> None:
    big = '{"inputs": ["' + "a" * 3000 + '"]}'
    async with client(app) as http:
        declared = await http.post(
            "/tasks/sentiment/predict", content=big, headers={"content-type": "application/json"}
        )

        async def chunks():
            for start in range(0, len(big), 500):
                yield big[start : start + 500].encode()

        streamed = await http.post(
            "/tasks/sentiment/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        bad_length = await http.post(
            "/tasks/nope/predict",
            content=b"{}",
            headers={"content-length": "x2", "content-type": "application/json"},
        )
        counted = (await http.get("/metrics")).json()["requests"]
    assert declared.status_code == 413 and "2000 bytes" in declared.json()["detail"]
    assert streamed.status_code == 413 and "2000 bytes" in streamed.json()["detail"]
    assert bad_length.status_code == 400
    # refused before any route ran, and still counted (they were missing from /metrics)
    assert counted["sentiment"]["413"] == 2 and counted["(unknown task)"]["400"] == 1


@pytest.mark.anyio
async def test_malformed_json_is_422(app) -> None:
    async with client(app) as http:
        response = await http.post(
            "/tasks/sentiment/predict", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422


@pytest.mark.anyio
async def test_api_key_is_required_everywhere_but_health_and_docs(keyed_app) -> None:
    async with client(keyed_app) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
        assert (await http.get("/tasks")).status_code == 401
        assert (await http.post("/tasks/sentiment/predict", json={"inputs": ["a"]})).status_code == 401
        assert (await http.delete("/checkpoints/sentiment")).status_code == 401
        assert (await http.get("/metrics", headers={"X-API-Key": "wrong"})).status_code == 401
    async with client(keyed_app, **{"X-API-Key": KEY}) as http:
        assert (await http.post("/tasks/sentiment/predict", json={"inputs": ["a"]})).status_code == 200


@pytest.mark.anyio
async def test_openapi_docs_describe_every_endpoint(app) -> None:
    async with client(app) as http:
        assert (await http.get("/docs")).status_code == 200
        schema = (await http.get("/openapi.json")).json()
    assert {
        "/health",
        "/tasks",
        "/tasks/{task}",
        "/tasks/{task}/predict",
        "/metrics",
        "/checkpoints",
        "/checkpoints/{name}",
        "/rescan",
    } <= set(schema["paths"])
    assert "413" in schema["paths"]["/tasks/{task}/predict"]["post"]["responses"]


def test_uvicorn_on_loopback_serves_a_real_client(app) -> None:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            assert http.get("/health").json()["tasks"] == 2
            response = http.post("/tasks/sentiment/predict", json={"inputs": ["good", "bad"]})
            assert response.status_code == 200 and len(response.json()["predictions"]) == 2
            assert http.post("/tasks/sentiment/predict", json={"inputs": ["x" * 51]}).status_code == 422
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_serve_command_refuses_a_missing_checkpoint_folder(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--checkpoints", str(tmp_path / "missing"), "--port", "0"])
    assert (args.host, args.max_batch_size, args.api_key_env) == ("127.0.0.1", 32, "PTUNING_API_KEY")
    with pytest.raises(ConfigError, match="no such folder"):
        run_serve(args)


def test_serve_without_the_serve_extra_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    """A plain `pip install -e .` has no uvicorn: `ptuning serve` ended in a ModuleNotFoundError traceback."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # an import of it raises ImportError
    with pytest.raises(
        ConfigError, match=r"needs the serve extra \(uvicorn is missing\): pip install -e '\.\[serve\]'"
    ):
        run_serve(parser.parse_args(["--checkpoints", str(tmp_path)]))


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
def test_every_numeric_serve_option_refuses_non_finite_values(value: str, capsys) -> None:
    """``float`` parses these: a NaN --max-wait-ms left a lone request unanswered forever, a NaN
    --max-seconds silently lifted the generation time limit."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    numeric = [action for action in parser._actions if action.type is not None]
    assert {"--max-wait-ms", "--max-seconds"} <= {action.option_strings[0] for action in numeric}
    for action in numeric:
        with pytest.raises(SystemExit):
            parser.parse_args(["--checkpoints", "x", action.option_strings[0], value])
        assert f"argument {action.option_strings[0]}: expected " in capsys.readouterr().err


def test_generation_limits_refuse_a_time_limit_that_is_never_reached() -> None:
    from ptuning.serve.generate import GenerationLimits

    for seconds in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValueError, match="every generation limit must be positive"):
            GenerationLimits(max_seconds=seconds)
    assert GenerationLimits(max_seconds=0.5).max_seconds == 0.5


def test_python_m_serve_command_refuses_in_one_line_as_ptuning_serve_does(tmp_path, capsys) -> None:
    """``python -m ptuning.serve.command`` (the benchmarks' entry) printed a traceback for a refusal."""
    from ptuning.serve.command import main as serve_main

    assert serve_main(["--checkpoints", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"ptuning serve: error: --checkpoints {tmp_path / 'missing'}: no such folder\n"


def test_serve_command_refuses_a_checkpoint_given_for_the_folder_of_checkpoints(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "prompt_config.json").write_text("{}")
    args = parser.parse_args(["--checkpoints", str(tmp_path / "sst2"), "--port", "0"])
    with pytest.raises(ConfigError, match="is itself a checkpoint; pass the folder that holds it"):
        run_serve(args)


def test_a_server_with_no_tasks_says_so_in_its_log(base_dir, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ptuning.serve.app"):
        create_app(tmp_path, base_dir, max_wait_ms=0)
    assert "serving no tasks" in caplog.text


def test_a_bf16_backbone_answers_within_a_small_tolerance_of_fp32(root, base_dir, monkeypatch) -> None:
    """--backbone-dtype bf16: the shared backbone is stored in bf16, prefixes and heads stay fp32. On CPU its
    attention takes the plain math (core/injection/attention_interface.py), which must answer what sdpa
    answers on the same backbone. Each app is built and served here (not the module's app), so no batcher
    crosses event loops."""
    body = {"inputs": ["a gripping film", "dull and slow", "the best of the year"]}  # padded rows

    def positives(dtype: str | None) -> list[float]:
        with TestClient(create_app(root, base_dir, max_wait_ms=0, backbone_dtype=dtype)) as http:
            response = http.post("/tasks/sentiment/predict", json=body)
        assert response.status_code == 200, response.text
        return [p["probabilities"]["positive"] for p in response.json()["predictions"]]

    def largest_difference(actual: list[float], expected: list[float]) -> float:
        return max(abs(a - b) for a, b in zip(actual, expected, strict=True))

    math_calls = []
    math_attention = attention_interface._math_attention

    def counted(*args, **kwargs):
        math_calls.append(1)
        return math_attention(*args, **kwargs)

    monkeypatch.setattr(attention_interface, "_math_attention", counted)
    fp32, bf16 = positives(None), positives("bf16")
    assert math_calls  # bf16 on CPU took the math
    monkeypatch.setattr(attention_interface, "_takes_math_attention", lambda *args: False)
    sdpa = positives("bf16")
    # bf16 storage moves the answer a little (measured 2.3e-3), so it really ran in bf16 ...
    assert 0 < largest_difference(bf16, fp32) < 0.01
    # ... while the two attention paths differ by rounding only: measured 6.4e-5 (bound ~5x); a math path that
    # dropped the prefix or the padding mask answered 1.8e-3 and 2.0e-3 away
    assert largest_difference(bf16, sdpa) < 3e-4


@pytest.mark.parametrize("native, stored", [(True, "bf16"), (False, "fp32")])
def test_an_auto_backbone_dtype_is_bf16_only_where_the_machine_computes_it(
    root, base_dir, monkeypatch, native: bool, stored: str
) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: native)
    with TestClient(create_app(root, base_dir, max_wait_ms=0, backbone_dtype="auto")) as http:
        assert http.get("/health").json()["backbone"]["dtype"] == stored
