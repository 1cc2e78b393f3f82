"""--pack-sequences: training and evaluation on packed rows follow the padded run step for step (no dropout,
fp32), predict_outputs gives the same outputs packed, and what cannot be packed is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_tiny import run_cli, train_args

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.registry import get_task
from ptuning.training.data import featurize_split, read_split
from ptuning.training.inference import predict_outputs

QUIET = ("--prefix-dropout", "0", "--head-dropout", "0", "--epochs", "2")


def run(argv: list[str], capsys) -> dict:
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    return json.loads((Path(argv[argv.index("--output-dir") + 1]) / "summary.json").read_text())


@pytest.mark.parametrize(("task", "data"), [("sst2", "sst2_dir"), ("conll2003", "conll_dir")])
def test_packed_training_follows_the_padded_run(task, data, tiny_bert_no_dropout, tmp_path, capsys, request):
    folder = request.getfixturevalue(data)
    padded = run(train_args(tiny_bert_no_dropout, folder, tmp_path / "padded", *QUIET, task=task), capsys)
    packed = run(
        train_args(tiny_bert_no_dropout, folder, tmp_path / "packed", *QUIET, "--pack-sequences", task=task),
        capsys,
    )
    assert json.loads((tmp_path / "packed" / "config.json").read_text())["pack_sequences"] is True
    for a, b in zip(packed["history"], padded["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["dev"] == pytest.approx(b["dev"], abs=1e-6)


def test_a_task_that_cannot_be_packed_is_refused_before_training(
    tiny_bert, squad_dir, tmp_path, capsys
) -> None:
    argv = train_args(tiny_bert, squad_dir, tmp_path / "run", "--pack-sequences", task="squad")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "question-answering" in err and "--pack-sequences" in err
    assert not (tmp_path / "run" / "training_state").exists()


def test_packed_predict_outputs_equal_padded_ones(tiny_bert_no_dropout, conll_dir) -> None:
    backbone, tokenizer = load_backbone(tiny_bert_no_dropout)
    task = get_task("conll2003")
    split = read_split(task, conll_dir, "train")
    featurize_split(task, split, tokenizer, 32)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0), head_dropout=0.0)
    model.add_task("conll2003", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, task.label_names))
    expected = predict_outputs(model, "conll2003", split.features, tokenizer.pad_token_id, batch_size=3)
    got = predict_outputs(model, "conll2003", split.features, tokenizer.pad_token_id, 3, pack_length=32)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5, rtol=0)
