"""The ``--compile`` flag reaches the model in train, eval and predict, and reports its start-up once.

Here the backbone is compiled with Dynamo's ``eager`` backend (traced, no kernels built) so that the wiring
is checked in seconds; that Inductor's compiled backbone equals eager is tests/core/test_compile.py's job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_tiny import run_cli, train_args

from ptuning.core import compilation
from ptuning.core.compilation import is_compiled
from ptuning.core.config import ConfigError
from ptuning.tasks.registry import get_task
from ptuning.training import engine
from ptuning.training.config import TrainConfig


@pytest.fixture
def traced_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``compile_backbone`` with the eager backend, wherever the flag calls it from."""
    original = compilation.compile_backbone

    def trace_only(model, backend="inductor"):
        original(model, backend="eager")

    monkeypatch.setattr(compilation, "compile_backbone", trace_only)
    monkeypatch.setattr(engine, "compile_backbone", trace_only)


def test_train_config_compile_builds_a_compiled_backbone(tiny_bert, sst2_dir, traced_only) -> None:
    config = TrainConfig(task="sst2", model=tiny_bert, data_dir=sst2_dir, compile=True)
    model, _ = engine.build_prompt_model(config, [get_task("sst2")])
    assert is_compiled(model)
    plain, _ = engine.build_prompt_model(config.model_copy(update={"compile": False}), [get_task("sst2")])
    assert not is_compiled(plain)


def test_compile_with_a_sharded_backbone_is_refused_before_loading(sst2_dir) -> None:
    config = TrainConfig(
        task="sst2", model="no-such-model", data_dir=sst2_dir, compile=True, shard_backbone=True
    )
    with pytest.raises(ConfigError, match="--compile and --shard-backbone"):
        engine.build_prompt_model(config, [get_task("sst2")])


def test_train_and_predict_with_compile_print_the_startup_and_match_eager(
    tiny_bert, sst2_dir, sst2_run: Path, tmp_path: Path, traced_only, capsys
) -> None:
    output_dir = tmp_path / "compiled"
    code, out, _ = run_cli(
        train_args(tiny_bert, sst2_dir, output_dir, "--max-steps", "2", "--compile"), capsys
    )
    assert code == 0
    assert out.count("torch.compile:") == 1
    assert json.loads((output_dir / "summary.json").read_text())["compile"]["graphs"] >= 1

    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a gripping film\na dull and lifeless mess of a plot\nfine\n")
    checkpoint = str(sst2_run / "checkpoint")
    predict = ["predict", "--checkpoint", checkpoint, "--input", str(inputs)]
    code, eager_out, _ = run_cli(predict, capsys)
    assert code == 0
    code, compiled_out, err = run_cli([*predict, "--compile"], capsys)
    assert code == 0
    assert err.count("torch.compile:") == 1
    eager_rows = [json.loads(line) for line in eager_out.splitlines()]
    compiled_rows = [json.loads(line) for line in compiled_out.splitlines()]
    assert [r["label"] for r in compiled_rows] == [r["label"] for r in eager_rows]
    for eager_row, compiled_row in zip(eager_rows, compiled_rows, strict=True):
        for label, probability in eager_row["probabilities"].items():
            assert compiled_row["probabilities"][label] == pytest.approx(probability, abs=1e-6)
