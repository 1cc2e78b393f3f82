"""Answers: the server's predictions equal ``ptuning predict``'s (training.predict) on the same checkpoint, alone and
when requests for different tasks share one backbone pass; a crash fails only its own request."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from ptuning.serve.app import create_app
from ptuning.serve.inputs import examples_from_inputs
from ptuning.training.predict import jsonable, load_for_inference, predict

from .conftest import build_checkpoint

MAX_LENGTH = 256  # QA windows need doc_stride 128 + question 64 + special tokens
CHECKPOINTS = {  # folder -> (head -> registry task, prefix length, shared prefix)
    "sentiment": ({"sst2": "sst2"}, 4, False),
    "entail": ({"superglue-rte": "superglue-rte"}, 8, False),
    "choice": ({"copa": "copa"}, 6, False),
    "similar": ({"stsb": "stsb"}, 3, False),
    "ner": ({"conll2003": "conll2003"}, 4, False),
    "qa": ({"squad": "squad"}, 5, False),
    "mpt": ({"sst2": "sst2", "copa": "copa"}, 7, True),
}
CONTEXT = "The Eiffel Tower was finished in 1889 in Paris. It is 330 metres tall and made of iron."
INPUTS = {
    "sentiment": ["a gripping, funny film", "dull", "the cast is wonderful but the plot drags badly"],
    "entail": [
        ["A man plays a guitar.", "A person makes music."],
        {"premise": "It rains.", "hypothesis": "Dry."},
    ],
    "choice": [
        {"premise": "The glass fell.", "question": "effect", "choice1": "It broke.", "choice2": "It sang."},
        {"premise": "I was cold.", "question": "cause", "choice1": "The window was open.", "choice2": "Tea."},
    ],
    "similar": [["A cat sleeps.", "A cat is sleeping."], ["Stocks fell.", "The sun is hot today."]],
    "ner": ["John Smith flew to Berlin on Monday", ["Apple", "hired", "Tim", "Cook"]],
    "qa": [{"question": "When was the tower finished?", "context": CONTEXT}],
    "mpt.sst2": ["fine", "awful acting"],
    "mpt.copa": [{"premise": "She smiled.", "question": "cause", "choice1": "Joy.", "choice2": "Pain."}],
}


@pytest.fixture(scope="module")
def root(base_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    for index, (name, (tasks, length, shared)) in enumerate(CHECKPOINTS.items()):
        build_checkpoint(base_dir, folder / name, tasks, prefix_length=length, shared=shared, seed=index)
    return folder


@pytest.fixture(scope="module")
def app(root, base):
    backbone, tokenizer = base
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_length=MAX_LENGTH, max_wait_ms=300)


def offline(root, base_dir, served: str, inputs: list) -> list[dict]:
    """What ``ptuning predict`` (training.predict) answers on the checkpoint, one task at a time."""
    folder, _, head = served.partition(".")
    loaded = load_for_inference(root / folder, head or None, model_path=base_dir, max_length=MAX_LENGTH)
    examples = examples_from_inputs(loaded.task, inputs, 10_000)
    return jsonable(predict(loaded, examples, batch_size=2))


def assert_same(actual, expected, where: str = "") -> None:
    """Equal labels/texts; numbers equal to fp32 rounding (a mixed pass pads rows differently)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float | np.floating):
        assert actual == pytest.approx(float(expected), abs=1e-4), where
    else:
        assert actual == expected, where


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test")


@pytest.mark.anyio
async def test_tasks_are_listed_by_folder_and_multitask_heads_by_folder_dot_task(app) -> None:
    async with client(app) as http:
        response = await http.get("/tasks")
    assert response.status_code == 200
    names = [task["name"] for task in response.json()["tasks"]]
    assert names == sorted(["sentiment", "entail", "choice", "similar", "ner", "qa", "mpt.sst2", "mpt.copa"])
    copa = next(t for t in response.json()["tasks"] if t["name"] == "choice")
    assert copa["kind"] == "multiple-choice" and copa["prefix_length"] == 6 and "premise" in copa["fields"]


@pytest.mark.anyio
@pytest.mark.parametrize("served", list(INPUTS))
async def test_single_request_equals_ptuning_predict(app, root, base_dir, served) -> None:
    async with client(app) as http:
        response = await http.post(f"/tasks/{served}/predict", json={"inputs": INPUTS[served]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == served and body["truncated"] == 0
    assert_same(body["predictions"], offline(root, base_dir, served, INPUTS[served]), served)


@pytest.mark.anyio
async def test_a_question_cut_to_max_question_length_is_counted_as_truncated(app) -> None:
    long = {**INPUTS["qa"][0], "question": "When " + "exactly " * 80 + "was the tower finished?"}
    async with client(app) as http:
        response = await http.post("/tasks/qa/predict", json={"inputs": [INPUTS["qa"][0], long]})
    assert response.status_code == 200 and response.json()["truncated"] == 1


@pytest.mark.anyio
async def test_a_qa_input_may_be_a_question_context_list_as_get_tasks_lists_its_fields(app) -> None:
    item = INPUTS["qa"][0]
    async with client(app) as http:
        listed = {t["name"]: t for t in (await http.get("/tasks")).json()["tasks"]}["qa"]
        as_list = await http.post("/tasks/qa/predict", json={"input": [item["question"], item["context"]]})
        as_object = await http.post("/tasks/qa/predict", json={"input": item})
    assert listed["fields"] == ["question", "context"]
    assert as_list.status_code == 200 and as_list.json()["prediction"] == as_object.json()["prediction"]


@pytest.mark.anyio
async def test_one_input_is_answered_by_one_prediction(app, root, base_dir) -> None:
    async with client(app) as http:
        response = await http.post("/tasks/sentiment/predict", json={"input": "dull"})
    assert response.status_code == 200
    assert "predictions" not in response.json()
    assert_same(response.json()["prediction"], offline(root, base_dir, "sentiment", ["dull"])[0])


@pytest.mark.anyio
async def test_concurrent_requests_for_different_tasks_share_one_pass_with_single_request_answers(
    app, root, base_dir
) -> None:
    metrics = app.state.metrics
    before = metrics.batch_count
    async with client(app) as http:
        alone = {}
        for served in INPUTS:  # one at a time: each request is a batch of its own
            alone[served] = (
                await http.post(f"/tasks/{served}/predict", json={"inputs": INPUTS[served]})
            ).json()
        assert metrics.batch_count - before == len(INPUTS)
        before_mixed = metrics.batch_count
        responses = await asyncio.gather(
            *(http.post(f"/tasks/{served}/predict", json={"inputs": INPUTS[served]}) for served in INPUTS)
        )
    assert [r.status_code for r in responses] == [200] * len(INPUTS)
    assert metrics.batch_count - before_mixed == 1  # all eight tasks in ONE backbone pass
    last = metrics.batches[-1]
    assert last.tasks == len(INPUTS) and last.requests == len(INPUTS)
    for served, response in zip(INPUTS, responses, strict=True):
        assert_same(response.json()["predictions"], alone[served]["predictions"], served)
        assert_same(response.json()["predictions"], offline(root, base_dir, served, INPUTS[served]), served)


@pytest.mark.anyio
async def test_a_model_crash_fails_only_its_own_request(app, monkeypatch) -> None:
    registry = app.state.registry
    head = registry.model.heads[registry.tasks["entail"].head]

    def broken(*args, **kwargs):
        raise RuntimeError("boom inside the model")

    monkeypatch.setattr(head, "forward", broken)
    failed_before = app.state.metrics.failed_batches
    async with client(app) as http:
        responses = await asyncio.gather(
            http.post("/tasks/sentiment/predict", json={"inputs": INPUTS["sentiment"]}),
            http.post("/tasks/entail/predict", json={"inputs": INPUTS["entail"]}),
            http.post("/tasks/choice/predict", json={"inputs": INPUTS["choice"]}),
        )
        assert [r.status_code for r in responses] == [200, 500, 200]
        assert "RuntimeError" in responses[1].json()["detail"]
        assert app.state.metrics.failed_batches == failed_before + 1
        monkeypatch.undo()
        again = await http.post("/tasks/entail/predict", json={"inputs": INPUTS["entail"]})
        health = await http.get("/health")
    assert again.status_code == 200 and health.status_code == 200


@pytest.mark.anyio
async def test_metrics_count_requests_batches_and_latency(app) -> None:
    async with client(app) as http:
        await http.post("/tasks/sentiment/predict", json={"inputs": ["ok"]})
        await http.post("/tasks/nope/predict", json={"inputs": ["ok"]})
        metrics = (await http.get("/metrics")).json()
    assert metrics["requests"]["sentiment"]["200"] >= 1
    assert metrics["requests"]["(unknown task)"]["404"] >= 1
    assert metrics["items"]["sentiment"] >= 1
    assert metrics["latency_ms"]["count"] >= 1 and metrics["latency_ms"]["p50"] > 0
    assert metrics["batches"]["count"] >= 1 and metrics["batches"]["rows"]["max"] >= 1
    assert metrics["tasks_served"] == 8


@pytest.mark.anyio
async def test_a_qa_checkpoint_whose_windows_cannot_hold_the_longest_question_is_a_422_whatever_the_question(
    base_dir, base, tmp_path
) -> None:
    """Saved with max_length 160 before training refused it: doc_stride 128 leaves no context room beside a
    question of max_question_length (64) tokens. Whether a request failed once depended on its question's
    length (a short one was answered); now every request gets the same 422, and a server --max-length that
    leaves room answers them all."""
    build_checkpoint(base_dir, tmp_path / "qa", {"squad": "squad"}, max_length=160)
    backbone, tokenizer = base
    long = "When " + "exactly " * 40 + "was the tower finished?"
    bodies = [{"input": INPUTS["qa"][0]}, {"input": {"question": long, "context": CONTEXT}}]
    app = create_app(tmp_path, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    async with client(app) as http:
        refused = [await http.post("/tasks/qa/predict", json=body) for body in bodies]
    assert [r.status_code for r in refused] == [422, 422]
    assert all("doc_stride=128 must be smaller" in r.json()["detail"] for r in refused)
    roomy = create_app(tmp_path, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0, max_length=200)
    async with client(roomy) as http:
        answered = [await http.post("/tasks/qa/predict", json=body) for body in bodies]
    assert [r.status_code for r in answered] == [200, 200]
    assert all("answer" in r.json()["prediction"] for r in answered)
