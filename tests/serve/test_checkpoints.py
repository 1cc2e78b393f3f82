"""Loading and unloading checkpoints while serving; refusing the ones that must not be served."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ptuning.core.config import ConfigError
from ptuning.serve import registry as registry_module
from ptuning.serve.app import create_app
from ptuning.serve.batcher import DynamicBatcher
from ptuning.serve.inputs import examples_from_inputs
from ptuning.serve.mixed import Group
from ptuning.serve.registry import InvalidName, OutsideRoot, PromptRegistry, TaskUnavailable

from .conftest import build_checkpoint


@pytest.fixture
def root(base_dir, tmp_path):
    folder = tmp_path / "checkpoints"
    build_checkpoint(base_dir, folder / "sentiment", {"sst2": "sst2"}, prefix_length=4)
    return folder


@pytest.fixture
def app(root, base):
    backbone, tokenizer = base
    return create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test")


async def task_names(http: httpx.AsyncClient) -> list[str]:
    return [task["name"] for task in (await http.get("/tasks")).json()["tasks"]]


@pytest.mark.anyio
async def test_a_checkpoint_is_added_and_removed_without_restarting(app, root, base_dir) -> None:
    async with client(app) as http:
        assert (await http.post("/tasks/entail/predict", json={"inputs": [["a", "b"]]})).status_code == 404
        build_checkpoint(base_dir, root / "entail", {"superglue-rte": "superglue-rte"}, prefix_length=9)
        added = await http.post("/checkpoints/entail")
        assert added.status_code == 201 and added.json()["tasks"] == ["entail"]
        assert await task_names(http) == ["entail", "sentiment"]
        assert (await http.post("/tasks/entail/predict", json={"inputs": [["a", "b"]]})).status_code == 200
        removed = await http.delete("/checkpoints/entail")
        assert removed.status_code == 200 and removed.json()["removed_tasks"] == ["entail"]
        assert (await http.post("/tasks/entail/predict", json={"inputs": [["a", "b"]]})).status_code == 404
        assert (await http.delete("/checkpoints/entail")).status_code == 404
        assert (
            await http.post("/tasks/sentiment/predict", json={"inputs": ["still here"]})
        ).status_code == 200
    assert (root / "entail").is_dir()  # unloading never deletes files
    assert len(app.state.registry.model.prefixes) == 1 and len(app.state.registry.model.heads) == 1


@pytest.mark.anyio
async def test_posting_a_loaded_checkpoint_again_reloads_its_new_weights(app, root, base_dir) -> None:
    async with client(app) as http:
        first = (await http.post("/tasks/sentiment/predict", json={"inputs": ["hello"]})).json()
        build_checkpoint(base_dir, root / "sentiment", {"sst2": "sst2"}, prefix_length=4, seed=99)
        assert (await http.post("/checkpoints/sentiment")).status_code == 201
        second = (await http.post("/tasks/sentiment/predict", json={"inputs": ["hello"]})).json()
    assert first["predictions"] != second["predictions"]
    assert len(app.state.registry.model.prefixes) == 1  # the old prefix is gone


@pytest.mark.anyio
async def test_rescan_loads_new_folders_and_unloads_vanished_ones(app, root, base_dir) -> None:
    build_checkpoint(base_dir, root / "choice", {"copa": "copa"})
    build_checkpoint(base_dir, root / "mpt", {"sst2": "sst2", "copa": "copa"}, shared=True)
    shutil.rmtree(root / "sentiment")
    (root / ".staging-tmp").mkdir()  # save_checkpoint's hidden staging folders are never loaded
    async with client(app) as http:
        report = (await http.post("/rescan")).json()
        assert report == {"loaded": ["choice", "mpt"], "removed": ["sentiment"], "failed": {}}
        assert await task_names(http) == ["choice", "mpt.copa", "mpt.sst2"]
        assert (await http.post("/rescan")).json() == {"loaded": [], "removed": [], "failed": {}}


@pytest.mark.anyio
async def test_a_loaded_checkpoint_whose_folder_went_bad_keeps_serving(app, root) -> None:
    """Its prompt_config.json removed (a copy in progress), rescan unloaded it as if its folder were gone."""
    (root / "sentiment" / "prompt_config.json").unlink()
    async with client(app) as http:
        report = (await http.post("/rescan")).json()
        assert report["loaded"] == [] and report["removed"] == [] and "sentiment" in report["failed"]
        assert (await http.post("/tasks/sentiment/predict", json={"inputs": ["still"]})).status_code == 200


@pytest.mark.anyio
async def test_a_folder_name_ending_in_a_newline_is_not_a_checkpoint_name(app, root, base_dir) -> None:
    """'$' matched before a final newline, so a folder "x\\n" was served as a task named "x\\n"."""
    build_checkpoint(base_dir, root / "x\n", {"sst2": "sst2"}, prefix_length=4)
    async with client(app) as http:
        report = (await http.post("/rescan")).json()
        assert report["loaded"] == [] and "is not a checkpoint name" in report["failed"]["x\n"]
    with pytest.raises(InvalidName):
        app.state.registry.resolve("x\n")


@pytest.mark.anyio
async def test_rescan_of_a_root_that_is_gone_changes_nothing(app, root) -> None:
    """iterdir() of a removed root was a bare 500; the served tasks were right to stay, and still do."""
    served = root.with_name("moved")
    root.rename(served)
    async with client(app) as http:
        response = await http.post("/rescan")
        assert response.status_code == 503 and "cannot be read" in response.json()["detail"]
        assert await task_names(http) == ["sentiment"]


@pytest.mark.anyio
async def test_a_checkpoint_of_another_base_model_is_refused_with_409(app, root, other_base_dir) -> None:
    build_checkpoint(other_base_dir, root / "foreign", {"sst2": "sst2"})
    async with client(app) as http:
        response = await http.post("/checkpoints/foreign")
        assert response.status_code == 409
        paths = os.path.dirname(other_base_dir)  # both base models' folders, which the detail names
        detail = response.json()["detail"].replace(paths, "")
        assert "fingerprint" in detail and "another" not in detail
        assert "foreign" in (await http.get("/checkpoints")).json()["failed"]
        assert await task_names(http) == ["sentiment"]


def test_startup_serves_the_good_checkpoints_and_reports_the_refused_ones(root, base, other_base_dir) -> None:
    build_checkpoint(other_base_dir, root / "foreign", {"sst2": "sst2"})
    (root / "junk").mkdir()
    (root / "junk" / "prompt_config.json").write_text("{not json")
    backbone, tokenizer = base
    registry = create_app(root, backbone=backbone, tokenizer=tokenizer).state.registry
    assert list(registry.tasks) == ["sentiment"]
    assert set(registry.failed) == {"foreign", "junk"}
    assert "invalid JSON" in registry.failed["junk"]


def test_a_checkpoint_whose_inputs_the_position_table_cannot_number_is_refused(
    base, base_dir, tmp_path
) -> None:
    """Trained with max_length 500 and a shifted 16-token prefix: 516 positions on a 512-position base. The
    server refuses it at load, as ``ptuning predict`` does, instead of failing on its first long request."""
    root = tmp_path / "shifted"
    build_checkpoint(base_dir, root / "long", {"sst2": "sst2"}, 16, position_mode="shift", max_length=500)
    build_checkpoint(base_dir, root / "short", {"sst2": "sst2"}, 16, position_mode="shift", max_length=496)
    backbone, tokenizer = base
    registry = create_app(root, backbone=backbone, tokenizer=tokenizer).state.registry
    assert list(registry.tasks) == ["short"]
    assert (
        "the checkpoint's max_length 500 + 16 prefix positions needs 516 positions but bert has 512; "
        in (registry.failed["long"])
    )


def test_a_max_length_override_beyond_the_position_table_is_refused_at_start(root, base) -> None:
    backbone, tokenizer = base
    with pytest.raises(ConfigError, match="--max-length 600 needs 600 positions but bert has 512"):
        create_app(root, backbone=backbone, tokenizer=tokenizer, max_length=600)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["a.b", "-x", "_x", "x" * 101, "sp ace", "%2E%2E"])
async def test_checkpoint_names_that_are_not_plain_names_are_refused_with_422(app, name) -> None:
    async with client(app) as http:
        response = await http.post(f"/checkpoints/{name}")
    assert response.status_code == 422, response.text
    assert "starting with a letter or digit" in response.json()["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/checkpoints/..%2Fsentiment", "/checkpoints/%2E%2E%2F%2E%2E%2Fetc"])
async def test_a_slash_in_a_checkpoint_name_never_reaches_the_folder(app, path) -> None:
    async with client(app) as http:
        response = await http.post(path)
    assert response.status_code in (404, 422)  # no route matches a name holding '/'
    assert list(app.state.registry.checkpoints) == ["sentiment"]


def test_registry_refuses_names_and_links_that_leave_the_folder(root, base, tmp_path) -> None:
    backbone, tokenizer = base
    registry = PromptRegistry(root, backbone, tokenizer)
    for name in ("..", "../x", "/etc", "a/b", ""):
        with pytest.raises(InvalidName):
            registry.resolve(name)
    outside = tmp_path / "outside"
    shutil.copytree(root / "sentiment", outside)
    os.symlink(outside, root / "escape")
    with pytest.raises(OutsideRoot):
        registry.resolve("escape")
    (root / "inner").mkdir()
    os.symlink(outside / "prompt_config.json", root / "inner" / "prompt_config.json")
    with pytest.raises(OutsideRoot):
        registry.resolve("inner")
    (root / "whole").mkdir()  # a fine-tuning checkpoint names its weights model.safetensors
    os.symlink(outside / "prompt.safetensors", root / "whole" / "model.safetensors")
    with pytest.raises(OutsideRoot, match="model.safetensors links outside"):
        registry.resolve("whole")


@pytest.mark.anyio
async def test_a_link_out_of_the_folder_is_refused_with_403(app, root, tmp_path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "sentiment", outside)
    os.symlink(outside, root / "escape")
    async with client(app) as http:
        response = await http.post("/checkpoints/escape")
    assert response.status_code == 403 and "outside" in response.json()["detail"]


@pytest.mark.anyio
async def test_a_symlink_loop_is_a_404_naming_it_not_a_500(app, root) -> None:
    os.symlink(root / "loop", root / "loop")  # resolve() raised RuntimeError, which no handler caught
    async with client(app) as http:
        response = await http.post("/checkpoints/loop")
        assert response.status_code == 404 and "'loop' cannot be resolved" in response.json()["detail"]
        assert (await http.post("/rescan")).status_code == 200


@pytest.mark.anyio
async def test_missing_folders_and_unservable_methods_are_refused(app, root, base_dir) -> None:
    build_checkpoint(base_dir, root / "shallow", {"sst2": "sst2"}, method="prompt-tuning")
    build_checkpoint(base_dir, root / "shifted", {"sst2": "sst2"}, position_mode="shift")
    build_checkpoint(base_dir, root / "mlp", {"sst2": "sst2"}, method="prefix-mlp")
    async with client(app) as http:
        assert (await http.post("/checkpoints/nothing-here")).status_code == 404
        shallow = await http.post("/checkpoints/shallow")
        assert shallow.status_code == 422 and "deep prefixes" in shallow.json()["detail"]
        shifted = await http.post("/checkpoints/shifted")
        assert shifted.status_code == 422 and "position_mode" in shifted.json()["detail"]
        mlp = await http.post("/checkpoints/mlp")  # prefix-mlp is served as the table its MLP produces
        assert mlp.status_code == 201
        assert (await http.post("/tasks/mlp/predict", json={"inputs": ["fine"]})).status_code == 200


def test_a_reload_never_shows_readers_a_moment_without_the_task(root, base) -> None:
    """Routes read ``registry.tasks``/``checkpoints`` from other threads while a reload commits on the model
    thread: it removed the task and then added it back, and GET /tasks/{task} answered 404 in between. A
    thread switch can come between any two lines, so the test looks at both mappings at every line of
    registry.py that the commit runs (a trace function), as another thread would see them."""
    backbone, tokenizer = base
    registry = PromptRegistry(root, backbone, tokenizer)
    registry.load("sentiment")
    old_head = registry.tasks["sentiment"].head
    prepared = registry.prepare("sentiment")
    seen: list[tuple[bool, bool]] = []

    def look(frame, event, arg):
        seen.append(("sentiment" in registry.tasks, "sentiment" in registry.checkpoints))
        return look

    def on_call(frame, event, arg):
        return look if frame.f_code.co_filename == registry_module.__file__ else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        registry.commit(prepared)
    finally:
        sys.settrace(previous)
    assert len(seen) > 10  # the trace did run through the commit
    assert set(seen) == {(True, True)}
    assert registry.tasks["sentiment"].head != old_head  # and the new weights serve now


def _group(registry: PromptRegistry, task: str, value) -> Group:
    served = registry.tasks[task]
    examples = examples_from_inputs(served.task, [value], 1000)
    features, _ = served.task.featurize(examples, registry.tokenizer, served.max_length)
    return Group(served.head, served.prefix, served.kind, features)


@pytest.mark.anyio
async def test_a_request_queued_before_a_reload_gets_503_and_its_batch_companions_their_answers(
    root, base, base_dir
) -> None:
    """The stale request made the whole mixed pass raise: every group re-ran alone and /metrics counted a
    failed pass although the model never failed."""
    build_checkpoint(base_dir, root / "entail", {"rte": "rte"})
    backbone, tokenizer = base
    registry = PromptRegistry(root, backbone, tokenizer)
    registry.scan()
    stale, live = _group(registry, "sentiment", "fine"), _group(registry, "entail", ["a", "b"])
    registry.load("sentiment")  # the reload: the queued request's head is gone
    expected = registry.run([live])[0]
    records, passes = [], []

    def run(groups):
        passes.append([group.head for group in groups])
        return registry.run(groups)

    batcher = DynamicBatcher(
        run, ThreadPoolExecutor(1), max_batch_size=2, max_wait_ms=1000, on_batch=records.append
    )
    answers = await asyncio.gather(batcher.submit(stale), batcher.submit(live), return_exceptions=True)
    await batcher.close()
    assert isinstance(answers[0], TaskUnavailable)
    assert [output.tolist() for output in answers[1]] == [output.tolist() for output in expected]
    assert passes == [[stale.head, live.head]]  # one pass, not one per group after a failed one
    assert [(record.requests, record.failed) for record in records] == [(2, False)]
