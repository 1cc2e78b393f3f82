"""The time-to-target diagnoses train ours with one of (a'')'s differences at a time: [CLS] read through the
checkpoint's pretrained pooler, kept frozen as in PEFT's base model, and no prefix dropout."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_smoke import load_benchmark
from transformers import AutoTokenizer

from ptuning.core.model import PromptModel


@pytest.fixture(scope="module")
def tiny_bert_with_pooler(tiny_model) -> tuple[str, dict[str, torch.Tensor]]:
    """The benchmarks' tiny BERT (saved with its pooler) and the pooler's saved weights."""
    with safe_open(str(Path(tiny_model) / "model.safetensors"), "pt") as weights:
        return tiny_model, {name: weights.get_tensor(f"pooler.dense.{name}") for name in ("weight", "bias")}


class RecordingPromptModel(PromptModel):
    built: list[PromptModel] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordingPromptModel.built.append(self)


def test_pooler_diagnosis_reads_the_checkpoint_pooler_frozen_and_no_prefix_dropout(
    tiny_bert_with_pooler, data_root, monkeypatch
):
    folder, pooler = tiny_bert_with_pooler
    ttt = load_benchmark("speed_time_to_target")
    RecordingPromptModel.built.clear()
    monkeypatch.setattr(ttt, "PromptModel", RecordingPromptModel)
    budget = replace(ttt.smoke_budget("sst2"), target=1.01)  # never reached: all 8 steps train
    data, dev = ttt.load_target_data(budget, AutoTokenizer.from_pretrained(folder), data_root)
    for system in ("ours", "ours-pooler-no-dropout"):
        ttt.TRAINERS[system](folder, data, dev, budget, 0.01, 42, ttt.engine_recipe())
    ours, diagnosis = RecordingPromptModel.built
    assert ours.prefix_config.dropout == 0.1 and ours.heads["task"].dense_activation is None
    assert diagnosis.prefix_config.dropout == 0.0
    dense = diagnosis.heads["task"].dense
    assert not dense.weight.requires_grad and not dense.bias.requires_grad
    # after 8 AdamW steps at lr 0.01 (which move any trained weight) the pooler is still the checkpoint's
    torch.testing.assert_close(dense.weight, pooler["weight"], rtol=0, atol=0)
    torch.testing.assert_close(dense.bias, pooler["bias"], rtol=0, atol=0)
    assert diagnosis.heads["task"].linear.weight.requires_grad


def test_diagnoses_run_only_when_named_and_render_with_their_labels(
    tiny_bert_with_pooler, data_root, tmp_path, capsys
):
    folder, _ = tiny_bert_with_pooler
    speed = load_benchmark("speed")
    results = tmp_path / "results"
    common = ["--smoke", folder, "--data-root", str(data_root), "--results-dir", str(results)]
    common += ["--work-dir", str(tmp_path / "work"), "--threads", "1", "--target-learning-rates", "0.01"]
    names = ["ours-no-dropout", "ours-pooler", "ours-pooler-no-dropout"]
    speed.main([*common, "--time-to-target", "sst2", "--target-score", "0", "--systems", *names, "--table"])
    lines = Path(results / "time-to-target-sst2.jsonl").read_text().splitlines()
    assert [json.loads(line)["system"] for line in lines] == names
    tables = capsys.readouterr().out
    ttt = load_benchmark("speed_time_to_target")
    for name in names:
        assert f"| {ttt.DIAGNOSIS_LABELS[name]} | 0.01 | 42 |" in tables
    # one model, one name: the diagnosis without prefix dropout is the throughput rounds' ours-no-dropout
    assert (
        ttt.DIAGNOSIS_LABELS["ours-no-dropout"]
        == load_benchmark("speed_systems").SYSTEM_LABELS["ours-no-dropout"]
    )

    # without --systems, time to target runs the contenders and (a''), never a diagnosis
    speed.main(
        [*common, "--time-to-target", "sst2", "--target-score", "0", "--results-dir", str(tmp_path / "d")]
    )
    lines = Path(tmp_path / "d" / "time-to-target-sst2.jsonl").read_text().splitlines()
    default = {json.loads(line)["system"] for line in lines} - {"peft-trainer-grouped"}  # where PEFT runs
    assert default == set(ttt.TARGET_CONTENDERS)


def test_the_no_backbone_dropout_runs_train_with_every_backbone_dropout_at_zero(
    tiny_model, data_root, monkeypatch
):
    """ours (fp32 and bf16) as --backbone-dropout 0 sets it; ours itself keeps the backbone's own rates."""
    ttt = load_benchmark("speed_time_to_target")
    RecordingPromptModel.built.clear()
    monkeypatch.setattr(ttt, "PromptModel", RecordingPromptModel)
    budget = replace(ttt.smoke_budget("sst2"), target=1.01)
    data, dev = ttt.load_target_data(budget, AutoTokenizer.from_pretrained(tiny_model), data_root)
    for system in ("ours", "ours-no-backbone-dropout", "ours-bf16-no-backbone-dropout"):
        ttt.TRAINERS[system](tiny_model, data, dev, budget, 0.01, 42, ttt.engine_recipe())
    rates = [
        {m.p for m in model.backbone.modules() if isinstance(m, torch.nn.Dropout)}
        for model in RecordingPromptModel.built
    ]
    assert rates[1] == rates[2] == {0.0} and rates[0] != {0.0}
    assert next(RecordingPromptModel.built[2].backbone.parameters()).dtype == torch.bfloat16
    assert ttt.system_recipe("peft-trainer-grouped-no-dropout") == ttt.system_recipe("peft-trainer-grouped")


def test_every_peft_system_is_left_out_with_the_reason_when_peft_cannot_run(
    tiny_model, data_root, tmp_path, monkeypatch, capsys
):
    """Only (a'') itself was left out before: its no-dropout twin failed on the import instead."""
    ttt = load_benchmark("speed_time_to_target")
    monkeypatch.setattr(ttt, "peft_available", lambda: False)
    systems = ["peft-trainer-grouped", "peft-trainer-grouped-no-dropout"]
    budget = ttt.smoke_budget("sst2")
    output = tmp_path / "runs.jsonl"
    assert ttt.measure_time_to_target(budget, tiny_model, data_root, output, systems, (0.01,)) == []
    assert ttt.PEFT_MISSING in capsys.readouterr().out and not output.exists()
