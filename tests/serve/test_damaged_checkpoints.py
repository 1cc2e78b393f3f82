"""A damaged checkpoint folder never takes the server down: at startup it is listed under ``failed`` with
the reason and the others are served; hot-adding or rescanning it answers 422 with the reason and the
other folders are still loaded."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import torch

from ptuning.core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from ptuning.serve.app import create_app

from .conftest import build_checkpoint


def truncate(folder) -> None:
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


DAMAGES = {  # folder -> (damage, what the reason must say)
    "a-truncated": (truncate, "not a valid safetensors file"),
    "b-pickled": (lambda d: torch.save({"x": torch.zeros(2)}, d / WEIGHTS_FILE), "a pickle/torch.save file"),
    "c-list": (lambda d: (d / CONFIG_FILE).write_text("[]"), "should be a JSON object"),
    "d-method": (
        lambda d: (d / CONFIG_FILE).write_text(
            json.dumps({**json.loads((d / CONFIG_FILE).read_text()), "method": "lora"})
        ),
        "field 'method' should be one of",
    ),
}


def damaged(base_dir, folder, name: str):
    build_checkpoint(base_dir, folder / name, {"sst2": "sst2"})
    DAMAGES[name][0](folder / name)


@pytest.fixture
def root(base_dir, tmp_path):
    folder = tmp_path / "checkpoints"
    for name in DAMAGES:
        damaged(base_dir, folder, name)
    build_checkpoint(base_dir, folder / "z-good", {"sst2": "sst2"})  # scanned after every damaged one
    return folder


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test")


@pytest.mark.anyio
async def test_startup_lists_damaged_folders_under_failed_and_serves_the_rest(root, base) -> None:
    backbone, tokenizer = base
    app = create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    async with client(app) as http:
        listing = (await http.get("/checkpoints")).json()
        answer = await http.post("/tasks/z-good/predict", json={"inputs": ["fine"]})
    assert list(listing["loaded"]) == ["z-good"] and answer.status_code == 200
    assert sorted(listing["failed"]) == sorted(DAMAGES)
    for name, (_, reason) in DAMAGES.items():
        assert reason in listing["failed"][name] and name in listing["failed"][name]


@pytest.mark.anyio
async def test_hot_add_reload_and_rescan_of_a_damaged_folder_answer_422_and_keep_going(
    root, base, base_dir, tmp_path
) -> None:
    backbone, tokenizer = base
    empty = tmp_path / "empty"
    empty.mkdir()
    app = create_app(empty, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    async with client(app) as http:
        for name, (_, reason) in DAMAGES.items():
            damaged(base_dir, empty, name)
            added = await http.post(f"/checkpoints/{name}")
            assert added.status_code == 422 and reason in added.json()["detail"], added.text
        build_checkpoint(base_dir, empty / "good", {"sst2": "sst2"})
        assert (await http.post("/checkpoints/good")).status_code == 201
        truncate(empty / "good")  # reloading a folder that went bad keeps the loaded version serving
        reload = await http.post("/checkpoints/good")
        assert reload.status_code == 422 and "not a valid safetensors file" in reload.json()["detail"]
        assert (await http.post("/tasks/good/predict", json={"inputs": ["fine"]})).status_code == 200
        build_checkpoint(base_dir, empty / "zz-new", {"sst2": "sst2"})
        rescan = await http.post("/rescan")
        assert rescan.status_code == 200
        assert rescan.json()["loaded"] == ["zz-new"]
        assert sorted(rescan.json()["failed"]) == sorted([*DAMAGES, "good"])
        listing = (await http.get("/checkpoints")).json()
    assert sorted(listing["loaded"]) == ["good", "zz-new"]
    assert sorted(listing["failed"]) == sorted([*DAMAGES, "good"])


@pytest.mark.anyio
async def test_a_misnamed_folder_is_listed_as_failed_and_a_vanished_failure_is_forgotten(
    root, base, base_dir
) -> None:
    backbone, tokenizer = base
    build_checkpoint(base_dir, root / "sst2.v2", {"sst2": "sst2"})  # a dot: not a task name in a URL
    app = create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    async with client(app) as http:
        listing = (await http.get("/checkpoints")).json()
        assert (
            "is not a checkpoint name" in listing["failed"]["sst2.v2"] and "sst2.v2" not in listing["loaded"]
        )
        for name in ("sst2.v2", "a-truncated"):
            shutil.rmtree(root / name)
        rescan = (await http.post("/rescan")).json()
        listing = (await http.get("/checkpoints")).json()
    assert sorted(rescan["failed"]) == sorted(set(DAMAGES) - {"a-truncated"}) == sorted(listing["failed"])


@pytest.mark.anyio
async def test_a_nan_dev_score_saved_with_a_checkpoint_is_listed_as_null(base_dir, base, tmp_path) -> None:
    folder = build_checkpoint(base_dir, tmp_path / "root" / "flat", {"stsb": "stsb"})
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["extra"] = {"dev": {"pearson": float("nan")}}  # a constant prediction's correlation
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    backbone, tokenizer = base
    app = create_app(tmp_path / "root", backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    async with client(app) as http:
        listing = await http.get("/checkpoints")
    assert listing.status_code == 200
    assert listing.json()["loaded"]["flat"]["extra"] == {"dev": {"pearson": None}}
