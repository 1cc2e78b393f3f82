"""``ptuning serve --backbone-quantization int8``: every checkpoint served on one int8 backbone.

The checkpoints are trained (here: built) on the fp32 base; the server quantizes the shared backbone once and
loads them onto it at startup and when they are added later (the fingerprint is that of the unquantized
weights, core/fingerprint.py). The random tiny models barely depend on their 4-slot prefix, so a loose bound
(0.01 was) could not tell a served prompt from no prompt: the bounds below follow the measured int8 error,
and the tests show that zeroing the prefix moves the answers by several times the bound.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from torch import nn

from ptuning.cli import main
from ptuning.core.checkpoint import WEIGHTS_FILE
from ptuning.serve.app import create_app

from .conftest import build_checkpoint

BODY = {"inputs": ["a gripping film", "dull and slow", "the best of the year", "not bad at all"]}
# max |int8 - fp32| of the positive probability, tiny BERT: 3.0e-5 weight-only, 5.3e-5 int8-dynamic
# (its activations are rounded too); bound: ~5x the larger. Zeroing the prefix moves them by 1.4e-3-2.0e-3.
TOLERANCE = 2.5e-4
# MiniLM, seed 5 (an unsaturated answer, p ~ 0.28): weight-only 8.1e-4 off; bound ~4x. The prefix: 1.1e-2.
MINILM_TOLERANCE = 3e-3


def positives(http: TestClient, task: str) -> list[float]:
    response = http.post(f"/tasks/{task}/predict", json=BODY)
    assert response.status_code == 200, response.text
    return [p["probabilities"]["positive"] for p in response.json()["predictions"]]


def largest_difference(actual: list[float], expected: list[float]) -> float:
    return max(abs(a - b) for a, b in zip(actual, expected, strict=True))


def assert_close_but_not_equal(
    actual: list[float], expected: list[float], tolerance: float = TOLERANCE
) -> None:
    difference = largest_difference(actual, expected)
    assert difference < tolerance, (actual, expected)
    assert difference > 0, "the int8 backbone gave fp32's exact answers: was it quantized?"


def without_prefixes(root: Path, folder: Path) -> Path:
    """A copy of the checkpoints in ``root`` with every prefix tensor zeroed (heads kept): what a server that
    lost the prompt on loading would answer."""
    shutil.copytree(root, folder)
    for weights in folder.glob(f"*/{WEIGHTS_FILE}"):
        state = load_file(weights)
        save_file({k: v * 0 if k.startswith("prefixes.") else v for k, v in state.items()}, weights)
    return folder


@pytest.fixture(scope="module")
def root(base_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8-checkpoints")
    build_checkpoint(base_dir, folder / "sentiment", {"sst2": "sst2"}, seed=0)
    build_checkpoint(base_dir, folder / "mpt", {"sst2": "sst2", "copa": "copa"}, shared=True, seed=1)
    return folder


@pytest.fixture(scope="module")
def fp32_answers(root, base_dir) -> dict[str, list[float]]:
    with TestClient(create_app(root, base_dir, max_wait_ms=0)) as http:
        return {task: positives(http, task) for task in ("sentiment", "mpt.sst2")}


@pytest.fixture(scope="module")
def unprompted_answers(root, base_dir, tmp_path_factory) -> dict[str, list[float]]:
    zeroed = without_prefixes(root, tmp_path_factory.mktemp("zeroed") / "root")
    with TestClient(create_app(zeroed, base_dir, max_wait_ms=0)) as http:
        return {task: positives(http, task) for task in ("sentiment", "mpt.sst2")}


@pytest.mark.parametrize("kind", ["int8", "int8-dynamic"])
def test_every_checkpoint_is_served_on_one_int8_backbone_within_tolerance(
    root, base_dir, fp32_answers, unprompted_answers, kind
):
    for task, expected in fp32_answers.items():  # the bound is tight enough to see a lost prefix
        assert largest_difference(unprompted_answers[task], expected) > 4 * TOLERANCE, task
    with TestClient(create_app(root, base_dir, max_wait_ms=0, backbone_quantization=kind)) as http:
        health = http.get("/health").json()
        assert health["tasks"] == 3 and http.get("/checkpoints").json()["failed"] == {}
        for task, expected in fp32_answers.items():
            assert_close_but_not_equal(positives(http, task), expected)
    assert health["backbone"]["quantization"] == kind and health["backbone"]["dtype"] == "fp32"


def test_health_reports_the_backbone_stored_smaller(root, base_dir, base) -> None:
    sizes = {}
    for kind in (None, "int8"):
        with TestClient(create_app(root, base_dir, max_wait_ms=0, backbone_quantization=kind)) as http:
            sizes[kind] = http.get("/health").json()["backbone"]["bytes"]
    linears = [m for m in base[0].modules() if type(m) is nn.Linear]
    # each weight goes from 4 bytes a value to 1, plus one fp32 scale per output row; the rest stays fp32
    saved = sum(3 * m.weight.numel() - 4 * m.out_features for m in linears)
    assert sizes[None] - sizes["int8"] == saved > 0, sizes


def test_a_checkpoint_added_to_a_running_int8_server_loads_and_reloads(base_dir, tmp_path) -> None:
    """Was refused: load_checkpoint builds a PromptModel on the served backbone, which refused a quantized one
    (and the dynamic-quantized state dict, whose packed weights are tuples, could not be fingerprinted)."""
    root = tmp_path / "root"
    build_checkpoint(base_dir, root / "first", {"sst2": "sst2"}, seed=0)
    with TestClient(create_app(root, base_dir, max_wait_ms=0)) as http:
        build_checkpoint(base_dir, root / "later", {"sst2": "sst2"}, seed=5)
        assert http.post("/checkpoints/later").status_code == 201
        expected = positives(http, "later")
    (root / "later").rename(tmp_path / "later")
    with TestClient(create_app(root, base_dir, max_wait_ms=0, backbone_quantization="int8")) as http:
        (tmp_path / "later").rename(root / "later")
        added = http.post("/checkpoints/later")
        assert added.status_code == 201, added.text
        assert_close_but_not_equal(positives(http, "later"), expected)
        assert http.post("/checkpoints/later").status_code == 201  # reload onto the same int8 backbone
        assert_close_but_not_equal(positives(http, "later"), expected)
        assert http.post("/rescan").json()["failed"] == {}


def test_minilm_served_on_int8_stays_within_tolerance_of_fp32(tmp_path) -> None:
    root = tmp_path / "root"
    build_checkpoint("minilm", root / "sentiment", {"sst2": "sst2"}, seed=5)
    zeroed = without_prefixes(root, tmp_path / "zeroed")
    answers = {}
    for name, folder, kind in (("fp32", root, None), ("int8", root, "int8"), ("no prefix", zeroed, None)):
        with TestClient(create_app(folder, "minilm", max_wait_ms=0, backbone_quantization=kind)) as http:
            answers[name] = positives(http, "sentiment")
    assert largest_difference(answers["no prefix"], answers["fp32"]) > 3 * MINILM_TOLERANCE
    assert_close_but_not_equal(answers["int8"], answers["fp32"], MINILM_TOLERANCE)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--backbone-quantization", "nf4"], "nf4 needs CUDA and bitsandbytes"),
        (
            ["--backbone-quantization", "int8-dynamic", "--backbone-dtype", "bf16"],
            "int8-dynamic needs an fp32 backbone",
        ),
    ],
)
def test_serve_refuses_combinations_that_cannot_work_in_one_line(root, base_dir, capsys, flags, message):
    code = main(["serve", "--checkpoints", str(root), "--model", base_dir, *flags])
    error = capsys.readouterr().err
    assert code == 2 and message in error and error.count("\n") == 1, error


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-batch-size", "0"], "--max-batch-size: expected a positive integer, got '0'"),
        (["--max-wait-ms", "-1"], "--max-wait-ms: expected a finite number >= 0, got '-1'"),
        (["--port", "99999"], "--port: expected a port number 0-65535, got '99999'"),
        (["--max-length", "-5"], "--max-length: expected a positive integer, got '-5'"),
    ],
)
def test_serve_flags_out_of_range_are_one_line_before_the_model_loads(root, capsys, flags, message) -> None:
    with pytest.raises(SystemExit) as exit_code:
        main(["serve", "--checkpoints", str(root), "--model", "/nowhere", *flags])
    error = capsys.readouterr().err
    assert exit_code.value.code == 2 and message in error, error


@pytest.mark.parametrize("kind", ["int8", "int8-dynamic"])
def test_only_int8_dynamic_answers_depend_on_the_batch_and_the_server_says_so(root, base_dir, kind, caplog):
    """int8-dynamic rounds a pass's activations with one scale (padding included), so an input's answer moves
    with what shares its pass: documented (docs/SERVING.md) and warned at start-up. Weight-only int8 does not."""
    companion = "a long and winding story of three brothers who never once agree on anything at all"
    with TestClient(create_app(root, base_dir, max_wait_ms=0, backbone_quantization=kind)) as http:
        alone = http.post("/tasks/sentiment/predict", json={"inputs": BODY["inputs"][:1]}).json()
        batched = http.post(
            "/tasks/sentiment/predict", json={"inputs": [BODY["inputs"][0], companion]}
        ).json()
    moved = abs(
        alone["predictions"][0]["probabilities"]["positive"]
        - batched["predictions"][0]["probabilities"]["positive"]
    )
    warned = [r.message for r in caplog.records if "int8-dynamic quantizes each pass" in r.getMessage()]
    if kind == "int8":
        assert moved < 1e-6 and not warned
    else:
        assert moved > 1e-6 and len(warned) == 1
