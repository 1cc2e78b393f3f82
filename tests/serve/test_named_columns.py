"""What docs/SERVING.md says of checkpoints that disagree (load order, DELETE then rescan), and of tasks that
read their text from columns of other names (a csv task's ``text_field``, pair-classification's
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


def test_the_first_checkpoint_by_name_fixes_the_position_mode_and_a_deleted_one_returns_on_rescan(
    base_dir, base, tmp_path
) -> None:
    """What docs/SERVING.md says of a folder whose checkpoints disagree, and of DELETE (files left alone)."""
    build_checkpoint(base_dir, tmp_path / "aa-shift", {"sst2": "sst2"}, position_mode="shift")
    build_checkpoint(base_dir, tmp_path / "bb-keep", {"sst2": "sst2"})
    backbone, tokenizer = base
    client = TestClient(create_app(tmp_path, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0))
    listing = client.get("/checkpoints").json()
    assert list(listing["loaded"]) == ["aa-shift"] and "position_mode 'shift'" in listing["failed"]["bb-keep"]
    assert client.delete("/checkpoints/aa-shift").status_code == 200
    assert "aa-shift" in client.post("/rescan").json()["loaded"]
