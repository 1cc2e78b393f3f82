"""What one client (or many) can make the server do: the 2026-12 load audit's defects, each as a test.

* tokenization runs off the event loop, so ``/health`` answers while a long request is tokenized;
* a client that hangs up frees what it held at once: its /generate slot (16 connect-and-close requests locked
  everyone out with 429 until --max-seconds) and its /predict rows (computed and counted 200 before), 499;
* /predict's queue is bounded by ``max_queued_rows`` (429, Retry-After: 1), RSS grew with every client;
* /generate refuses an over-long prompt text before tokenizing it, and its 413 names the prompt's own length.

Disconnects are simulated with a raw ASGI call whose ``receive`` answers ``http.disconnect`` when told; the
model thread is held at a gate (a ``threading.Event``) so that work provably waits while the client leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.serve import command
from ptuning.serve import generate as generate_module
from ptuning.serve.app import Limits, create_app
from ptuning.serve.generate import GenerationLimits

from .conftest import build_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from generative_tiny import tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.anyio
GATE_SECONDS = 10  # the longest a held model thread waits, should a test fail before opening the gate


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test")


async def call_then_hang_up(app, path: str, body: dict[str, Any], hang_up: asyncio.Event) -> int:
    """POST ``body`` as a raw ASGI call whose client disconnects once ``hang_up`` is set; the status the
    app answered (never seen by a real client, which is gone)."""
    raw = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"serve.test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("serve.test", 80),
    }
    await app(scope, receive, send)
    return sent[0]["status"]


async def until(condition, seconds: float = 5.0) -> None:
    """Wait (without blocking the loop) until ``condition()`` holds."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


class Gate:
    """Wraps a model-thread function: every call waits until the gate opens, and is recorded."""

    def __init__(self, function) -> None:
        self.function = function
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls: list[Any] = []

    def __call__(self, *args):
        self.calls.append(args)
        self.entered.set()
        self.open.wait(GATE_SECONDS)
        return self.function(*args)


# --- /predict ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(base_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    build_checkpoint(base_dir, folder / "sentiment", {"sst2": "sst2"})
    return folder


def predict_app(root, base, **options):
    backbone, tokenizer = base
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0, **options)


def waiting_rows(batcher) -> int:
    """Rows queued for a pass whose client still waits (the batcher's own count, read from its queue)."""
    return sum(item.rows for item in batcher._queue if not item.future.done())


def rows_run(gate: Gate) -> list[int]:
    """Rows of every group each pass computed."""
    return [sum(group.rows for group in groups) for (groups,) in gate.calls]


async def test_health_answers_while_a_request_is_tokenized(root, base, monkeypatch) -> None:
    """Tokenization ran inside ``async def predict``: one long pair request held /health 2-22 s."""
    app = predict_app(root, base)
    task = app.state.registry.tasks["sentiment"].task
    tokenizing, release, tokenized = threading.Event(), threading.Event(), threading.Event()
    featurize = task.featurize

    def slow_featurize(*args, **kwargs):
        tokenizing.set()
        release.wait(GATE_SECONDS / 2)
        tokenized.set()
        return featurize(*args, **kwargs)

    monkeypatch.setattr(task, "featurize", slow_featurize)
    async with client(app) as http:
        predicting = asyncio.create_task(
            http.post("/tasks/sentiment/predict", json={"inputs": ["fine", "bad"]})
        )
        await until(tokenizing.is_set)
        health = await http.get("/health")
        assert health.status_code == 200 and not tokenized.is_set()  # answered while tokenizing
        release.set()
        answer = await predicting
    assert answer.status_code == 200 and [p["id"] for p in answer.json()["predictions"]] == [0, 1]


async def test_a_predict_client_that_hangs_up_has_its_rows_dropped_and_is_counted_499(root, base) -> None:
    app = predict_app(root, base)
    batcher = app.state.batcher
    gate = batcher.run = Gate(batcher.run)
    hang_up = asyncio.Event()
    try:
        async with client(app) as http:
            first = asyncio.create_task(http.post("/tasks/sentiment/predict", json={"inputs": ["a"]}))
            await until(gate.entered.is_set)  # the first request's pass holds the model thread
            body = {"inputs": ["b", "c", "d"]}
            leaving = asyncio.create_task(call_then_hang_up(app, "/tasks/sentiment/predict", body, hang_up))
            await until(lambda: waiting_rows(batcher) == 3)
            hang_up.set()
            status = await asyncio.wait_for(leaving, 2)  # answered while the model is still held
            assert status == 499 and waiting_rows(batcher) == batcher.queued_rows == 0
            gate.open.set()
            assert (await first).status_code == 200
            assert (
                await http.post("/tasks/sentiment/predict", json={"inputs": ["e", "f"]})
            ).status_code == 200
            metrics = (await http.get("/metrics")).json()
    finally:
        gate.open.set()
    assert rows_run(gate) == [1, 2]  # the 3 rows of the client that left were never computed
    assert metrics["requests"]["sentiment"] == {"200": 2, "499": 1}
    assert metrics["items"]["sentiment"] == 3


async def test_predict_answers_429_when_the_queue_holds_max_queued_rows(root, base) -> None:
    app = predict_app(root, base, max_batch_size=2, max_queued_rows=3)
    batcher = app.state.batcher
    gate = batcher.run = Gate(batcher.run)
    try:
        async with client(app) as http:
            first = asyncio.create_task(http.post("/tasks/sentiment/predict", json={"inputs": ["a"]}))
            await until(gate.entered.is_set)
            waiting = asyncio.create_task(http.post("/tasks/sentiment/predict", json={"inputs": ["b", "c"]}))
            await until(lambda: batcher.queued_rows == 2)
            refused = await http.post("/tasks/sentiment/predict", json={"inputs": ["d", "e"]})  # 2 + 2 > 3
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["detail"] == (
                "2 rows are waiting for the model, the limit is 3 and this request has 2; retry shortly"
            )
            fits = asyncio.create_task(http.post("/tasks/sentiment/predict", json={"inputs": ["f"]}))
            await until(lambda: batcher.queued_rows == 3)
            full = await http.post("/tasks/sentiment/predict", json={"inputs": ["g"]})
            assert full.status_code == 429 and "3 rows are waiting" in full.json()["detail"]
            gate.open.set()
            assert [(await job).status_code for job in (first, waiting, fits)] == [200, 200, 200]
            # a request larger than the bound gets in when nothing waits
            large = await http.post("/tasks/sentiment/predict", json={"inputs": list("hijklmn")})
            assert large.status_code == 200 and len(large.json()["predictions"]) == 7
            metrics = (await http.get("/metrics")).json()
    finally:
        gate.open.set()
    assert metrics["requests"]["sentiment"] == {"200": 4, "429": 2}


def test_the_queue_bound_defaults_to_32_passes_and_the_command_passes_it(root, base, monkeypatch) -> None:
    assert predict_app(root, base, max_batch_size=8).state.batcher.max_queued_rows == 256
    with pytest.raises(ValueError, match="max_queued_rows must be >= 1"):
        predict_app(root, base, max_queued_rows=0)
    seen: dict[str, Any] = {}
    monkeypatch.setattr("ptuning.serve.app.create_app", lambda *a, **k: seen.update(k) or "app")
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    parser = argparse.ArgumentParser()
    command.add_serve_arguments(parser)
    command.run_serve(parser.parse_args(["--checkpoints", str(root), "--max-queued-rows", "100"]))
    assert seen["max_queued_rows"] == 100
    command.run_serve(parser.parse_args(["--checkpoints", str(root)]))
    assert seen["max_queued_rows"] is None


# --- /generate --------------------------------------------------------------------------------------------

LONG_PROMPT = " ".join(["one two three four five"] * 8)  # 40 tokens


@pytest.fixture(scope="module")
def causal_root(tmp_path_factory) -> Path:
    """One causal-LM checkpoint (max_length 16, so a 40-token prompt is cut) over a saved tiny Llama."""
    base = tmp_path_factory.mktemp("llama")
    tiny_causal_lm("llama").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    backbone, _ = load_backbone(str(base), causal_lm=True)
    torch.manual_seed(0)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=3, init_std=1.0))
    model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    folder = tmp_path_factory.mktemp("prompts")
    save_checkpoint(model, folder / "chat", {"lm": "causal-lm"}, max_length=16)
    return folder


def generate_app(causal_root: Path, limits: Limits | None = None, **generation):
    config = json.loads((causal_root / "chat" / "prompt_config.json").read_text())
    base = config["base_model"]["name_or_path"]
    return create_app(causal_root, base, limits=limits, generation_limits=GenerationLimits(**generation))


async def test_a_generate_client_that_hangs_up_frees_its_slot_at_once_and_is_counted_499(causal_root) -> None:
    """Non-streamed: the handler waited for the whole answer; with --max-sequences 1 one client that
    connected and closed locked every other client out (429) until its sequence was decoded."""
    app = generate_app(causal_root, max_sequences=1)
    service = app.state.generation
    gate = service._step = Gate(service._step)
    hang_up = asyncio.Event()
    body = {"prompt": "hello how are you", "max_new_tokens": 8}
    try:
        leaving = asyncio.create_task(call_then_hang_up(app, "/tasks/chat/generate", body, hang_up))
        await until(gate.entered.is_set)  # its first step holds the model thread
        hang_up.set()
        assert await asyncio.wait_for(leaving, 2) == 499  # answered while its step is still held
        assert service.in_flight == 0
        async with client(app) as http:
            other = asyncio.create_task(http.post("/tasks/chat/generate", json=body))
            await until(lambda: service.in_flight == 1)  # admitted, not 429
            gate.open.set()
            answer = await other
            metrics = (await http.get("/metrics")).json()
    finally:
        gate.open.set()
    assert answer.status_code == 200
    assert metrics["requests"]["chat"] == {"200": 1, "499": 1}
    (left,), _ = gate.calls[0]  # (admitted, cancelled) of each step
    assert gate.calls[1][1] == {left.id}  # the next step cancelled it, after one step of its 8


async def test_a_413_names_the_prompts_own_length_not_the_cut_one(causal_root) -> None:
    """A 40-token prompt cut to the checkpoint's max_length 16 was refused as 'the prompt has 15 tokens'."""
    async with client(generate_app(causal_root, max_prompt_tokens=8)) as http:
        refused = await http.post("/tasks/chat/generate", json={"prompt": LONG_PROMPT})
    assert refused.status_code == 413
    assert refused.json()["detail"] == (
        "the prompt has 40 tokens (15 after the cut to the checkpoint's max_length and positions); "
        "this server allows at most 8"
    )


async def test_prompt_texts_over_the_text_limit_are_refused_before_tokenizing(
    causal_root, monkeypatch
) -> None:
    """--max-text-length did not apply to /generate: a ~1 MB prompt was tokenized twice on the loop."""
    tokenized: list[Any] = []
    monkeypatch.setattr(generate_module, "prompt_token_ids", lambda *args: tokenized.append(args))
    app = generate_app(causal_root, limits=Limits(max_items=2, max_text_length=50))
    async with client(app) as http:
        long_prompt = await http.post("/tasks/chat/generate", json={"prompt": "a " * 30})
        long_message = await http.post(
            "/tasks/chat/generate", json={"messages": [{"role": "user", "content": "b " * 26}]}
        )
        many = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}] + [
            {"role": "user", "content": "hi"}
        ]
        too_many = await http.post("/tasks/chat/generate", json={"messages": many})
    assert (long_prompt.status_code, long_message.status_code, too_many.status_code) == (422, 422, 422)
    assert long_prompt.json()["detail"] == (
        "field 'prompt': a text of 60 characters is longer than the limit 50"
    )
    assert long_message.json()["detail"] == (
        "field 'messages[0].content': a text of 52 characters is longer than the limit 50"
    )
    assert too_many.json()["detail"] == "3 messages; at most 2 per request"
    assert tokenized == []


async def test_health_answers_while_a_prompt_is_tokenized(causal_root, monkeypatch) -> None:
    tokenizing, release, tokenized = threading.Event(), threading.Event(), threading.Event()
    prompt_token_ids = generate_module.prompt_token_ids

    def slow(*args):
        tokenizing.set()
        release.wait(GATE_SECONDS / 2)
        tokenized.set()
        return prompt_token_ids(*args)

    monkeypatch.setattr(generate_module, "prompt_token_ids", slow)
    app = generate_app(causal_root)
    async with client(app) as http:
        body = {"prompt": "hello", "max_new_tokens": 2}
        generating = asyncio.create_task(http.post("/tasks/chat/generate", json=body))
        await until(tokenizing.is_set)
        health = await http.get("/health")
        assert health.status_code == 200 and not tokenized.is_set()
        release.set()
        assert (await generating).status_code == 200
