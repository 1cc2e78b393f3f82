"""The engine, evaluation, checkpoints and ``ptuning predict`` on a backbone stored in bf16.

A model folder saved in bf16 (as most LLM checkpoints are) with ``--backbone-dtype bf16``: the whole command
line over a bf16 backbone (before the heads cast to fp32 it failed at the first batch: "mat1 and mat2 must
have the same dtype"). Without the flag it would load as fp32 (tests/core/test_precision.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from training_tiny import run_cli, save_tiny_bert, train_args
from transformers import AutoModel

from ptuning.core.backbones import load_backbone


@pytest.fixture(scope="module")
def tiny_bert_bf16(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-bert-bf16")
    save_tiny_bert(folder)
    AutoModel.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    backbone, _ = load_backbone(str(folder), dtype="bf16")
    assert next(backbone.parameters()).dtype == torch.bfloat16
    return str(folder)


def test_train_eval_and_predict_on_a_bf16_backbone(tiny_bert_bf16, sst2_dir, tmp_path, capsys):
    output_dir = tmp_path / "run"
    argv = train_args(
        tiny_bert_bf16,
        sst2_dir,
        output_dir,
        "--epochs",
        "2",
        "--test-split",
        "none",
        "--backbone-dtype",
        "bf16",
    )
    code, out, err = run_cli(argv, capsys)  # (autocast on top: tests/core/test_precision.py)
    assert code == 0, err
    summary = json.loads((output_dir / "summary.json").read_text())
    assert 0 <= summary["dev"]["accuracy"] <= 1
    prompt = load_file(output_dir / "checkpoint" / "prompt.safetensors")
    assert {tensor.dtype for tensor in prompt.values()} == {torch.float32}  # fp32 master weights saved

    source = tmp_path / "in.txt"
    source.write_text("a gripping , funny film\nthe dullest hour of my life\n")
    code, out, err = run_cli(
        ["predict", "--checkpoint", str(output_dir / "checkpoint"), "--input", str(source)]
        + ["--backbone-dtype", "bf16"],
        capsys,
    )
    assert code == 0, err
    predictions = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(predictions) == 2 and all(p["label"] in ("negative", "positive") for p in predictions)


def test_predict_and_eval_load_the_backbone_in_the_dtype_the_prompt_was_trained_on(
    tiny_bert, sst2_dir, tmp_path, capsys
):
    """A bf16-trained prompt scored on an fp32 backbone moved its scores (the audit's pearson -0.336 -> -0.289):
    by default eval and predict now load what the checkpoint's base_model.dtype says."""
    output_dir = tmp_path / "run"
    argv = train_args(tiny_bert, sst2_dir, output_dir, "--max-steps", "2", "--backbone-dtype", "bf16")
    code, _, err = run_cli([*argv, "--test-split", "none"], capsys)
    assert code == 0, err
    source = tmp_path / "in.txt"
    source.write_text("a gripping , funny film\nthe dullest hour of my life\n")
    predict = ["predict", "--checkpoint", str(output_dir / "checkpoint"), "--input", str(source)]

    def probabilities(*flags: str) -> tuple[list, str]:
        code, out, err = run_cli([*predict, *flags], capsys)
        assert code == 0, err
        return [json.loads(line)["probabilities"] for line in out.splitlines()], err

    default, note = probabilities()
    assert "stored in bf16, as the prompt was trained" in note
    assert default == probabilities("--backbone-dtype", "bf16")[0]
    assert default != probabilities("--backbone-dtype", "fp32")[0]
    # weight-only int8 quantizes the bf16 copy the prompt was trained on (it quantized fp32, saying nothing)
    int8, note = probabilities("--backbone-quantization", "int8")
    assert "stored in bf16, as the prompt was trained" in note
    assert int8 == probabilities("--backbone-quantization", "int8", "--backbone-dtype", "bf16")[0]
    assert int8 != probabilities("--backbone-quantization", "int8", "--backbone-dtype", "fp32")[0]
    _, note = probabilities("--backbone-quantization", "int8-dynamic")  # fp32 only: said, not silent
    assert (
        "trained on the backbone stored in bf16; --backbone-quantization int8-dynamic quantizes it from fp32"
        in note
    )

    summary = json.loads((output_dir / "summary.json").read_text())
    code, out, err = run_cli(
        ["eval", "--checkpoint", str(output_dir / "checkpoint"), "--data", sst2_dir, "--split", "dev"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["accuracy"] == summary["dev"]["accuracy"]


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_bf16_autocast_on_a_cpu_that_emulates_bf16_is_noted(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch, cpu_bf16: bool
) -> None:
    """--mixed-precision bf16 trained a MiniLM step about 15x slower than fp32 on an AVX2-only CPU, with no
    word, where the docs and a refusal's advice recommend it for speed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    args = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "1", "--mixed-precision", "bf16")
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    noted = "note: --mixed-precision bf16 on a CPU without bf16 instructions" in out
    assert noted is not cpu_bf16
