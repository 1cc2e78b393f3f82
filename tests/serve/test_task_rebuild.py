"""The server builds each task as its training run did (the options and max_length stored in the
checkpoint, through ``ptuning.tasks.rebuild``, as ``ptuning predict`` does): same inputs, same answers, per
task kind, with neither side told a max_length."""

from __future__ import annotations

import httpx
import pytest

from ptuning.serve.app import create_app
from ptuning.serve.inputs import examples_from_inputs
from ptuning.training.predict import jsonable, load_for_inference, predict

from .conftest import build_checkpoint
from .test_predict import assert_same

LONG_CONTEXT = " ".join(
    [
        "The Eiffel Tower was finished in 1889 in Paris.",
        "It is 330 metres tall and made of wrought iron.",
        "Gustave Eiffel's company designed and built it for the World's Fair.",
        "Millions of people visit it every year, and it was the tallest structure in the world until 1930.",
    ]
)
CHECKPOINTS = {  # folder -> (head -> task, stored task options, stored max_length, learnt labels)
    "reviews": ({"reviews": "csv-classification"}, {"reviews": {"text_field": "review"}}, 16, ["neg", "pos"]),
    "names": ({"names": "ner-generic"}, {}, 8, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
    "qa": ({"qa": "squad"}, {"qa": {"doc_stride": 16, "max_question_length": 12}}, 40, None),
}
INPUTS = {
    "reviews": [{"review": "a gripping, funny film"}, {"review": "dull and far too long, sadly"}],
    "names": ["John Smith flew from Paris to Berlin on Monday with Anna", ["Tim", "Cook", "met", "Anna"]],
    "qa": [{"question": "When was the tower finished?", "context": LONG_CONTEXT}],
}


@pytest.fixture(scope="module")
def root(base_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    for seed, (name, (tasks, options, max_length, labels)) in enumerate(CHECKPOINTS.items()):
        build_checkpoint(
            base_dir,
            folder / name,
            tasks,
            seed=seed,
            task_options=options,
            max_length=max_length,
            labels=labels,
        )
    return folder


@pytest.fixture(scope="module")
def app(root, base):
    backbone, tokenizer = base
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)  # no max_length given


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test")


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(CHECKPOINTS))
async def test_server_and_predict_rebuild_the_same_task_and_answer_alike(app, root, base_dir, name) -> None:
    async with client(app) as http:
        described = await http.get(f"/tasks/{name}")
        response = await http.post(f"/tasks/{name}/predict", json={"inputs": INPUTS[name]})
    assert described.status_code == 200, app.state.registry.failed
    assert described.json()["max_length"] == CHECKPOINTS[name][2]
    assert response.status_code == 200, response.text
    loaded = load_for_inference(root / name, model_path=base_dir)  # no --max-length either
    assert loaded.max_length == CHECKPOINTS[name][2]
    expected = jsonable(predict(loaded, examples_from_inputs(loaded.task, INPUTS[name], 10_000)))
    assert_same(response.json()["predictions"], expected, name)
    if name != "reviews":  # the stored max_length really cuts these inputs (or windows the QA context)
        features, report = loaded.task.featurize(
            examples_from_inputs(loaded.task, INPUTS[name], 10_000), loaded.tokenizer, loaded.max_length
        )
        assert report.truncated > 0 or len(features) > len(INPUTS[name])


def test_the_options_and_max_length_are_stored_in_the_checkpoint(root) -> None:
    import json

    config = json.loads((root / "qa" / "prompt_config.json").read_text())
    assert config["tasks"]["qa"]["task_options"] == {"doc_stride": 16, "max_question_length": 12}
    assert config["tasks"]["qa"]["max_length"] == 40
