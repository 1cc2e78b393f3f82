"""``ptuning serve --compile``: the shared backbone compiled (frozen weights folded into the inference graph)
at start-up answers what the eager server answers, for single-task and mixed-task checkpoints, and its
requests compile nothing more."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ptuning.core.compilation import CompileStats, missing_compiler
from ptuning.serve.app import create_app

from .conftest import build_checkpoint

BODIES = [  # a multi-row batch and a single-row one: Dynamo specialises a dimension of size 1
    {"inputs": ["a gripping film", "dull and slow", "the best of the year, truly", "not bad at all"]},
    {"inputs": ["an odd little film"]},
]
TASKS = ("sentiment", "mpt.sst2", "mpt.copa")


def answers(http: TestClient) -> dict[str, list[dict[str, float]]]:
    out = {}
    for task in TASKS:
        for number, body in enumerate(BODIES):
            if task == "mpt.copa":
                body = {
                    "inputs": [
                        {"premise": t, "question": "cause", "choice1": "yes", "choice2": "no"}
                        for t in body["inputs"]
                    ]
                }
            response = http.post(f"/tasks/{task}/predict", json=body)
            assert response.status_code == 200, response.text
            out[f"{task}/{number}"] = [p["probabilities"] for p in response.json()["predictions"]]
    return out


@pytest.mark.skipif(missing_compiler() is not None, reason=str(missing_compiler()))
def test_a_compiled_server_answers_what_the_eager_server_answers(base_dir, tmp_path) -> None:
    build_checkpoint(base_dir, tmp_path / "sentiment", {"sst2": "sst2"}, seed=0)
    build_checkpoint(base_dir, tmp_path / "mpt", {"sst2": "sst2", "copa": "copa"}, shared=True, seed=1)
    with TestClient(create_app(tmp_path, base_dir, max_wait_ms=0)) as http:
        eager = answers(http)
        assert http.get("/health").json()["backbone"]["compiled"] is False
    with TestClient(create_app(tmp_path, base_dir, max_wait_ms=0, compile=True)) as http:
        before = CompileStats.now()
        compiled = answers(http)
        # the start-up warm-up built every graph the requests needed (1 and 4 rows, padded or not, MC)
        assert CompileStats.now().since(before).graphs == 0
        backbone = http.get("/health").json()["backbone"]
        assert backbone["compiled"] is True
        assert backbone["compile_warm_up"]["passes"] == 2 and backbone["compile_warm_up"]["graphs"] >= 1
    assert compiled.keys() == eager.keys()
    for key, rows in eager.items():
        for row, row_compiled in zip(rows, compiled[key], strict=True):
            assert row.keys() == row_compiled.keys()
            assert all(abs(row[k] - row_compiled[k]) < 1e-5 for k in row), (key, row, row_compiled)
