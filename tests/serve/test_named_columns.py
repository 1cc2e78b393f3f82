"""Tasks that read their text from columns of other names (a csv task's ``text_field``, pair-classification's
``sentence1``/``sentence2``): ``GET /tasks`` lists the names an input takes, and the shorthands (a string, a
list of fields in order) reach those columns, answering what an object of them answers."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ptuning.serve.app import create_app

from .conftest import build_checkpoint

OPTIONS = {"topic": {"text_field": "review"}}


def test_shorthand_inputs_reach_the_columns_the_task_reads(base_dir, base, tmp_path) -> None:
    build_checkpoint(
        base_dir, tmp_path / "topic", {"topic": "csv-classification"}, task_options=OPTIONS, labels=["a", "b"]
    )
    build_checkpoint(base_dir, tmp_path / "pairs", {"pairs": "pair-classification"}, labels=["no", "yes"])
    backbone, tokenizer = base
    client = TestClient(create_app(tmp_path, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0))
    tasks = {task["name"]: task for task in client.get("/tasks").json()["tasks"]}
    assert tasks["topic"]["fields"] == ["review"] and tasks["pairs"]["fields"] == ["sentence1", "sentence2"]

    def answer(task: str, value) -> dict:
        response = client.post(f"/tasks/{task}/predict", json={"input": value})
        assert response.status_code == 200, response.text
        return response.json()["prediction"]

    assert answer("topic", "apples and rain") == answer("topic", {"review": "apples and rain"})
    pair = answer("pairs", ["it rains", "the sun shines"])
    assert pair == answer("pairs", {"sentence1": "it rains", "sentence2": "the sun shines"})
