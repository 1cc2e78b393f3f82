"""``--prefix-init activations``: which tokens the run's prefix starts from, and what it refuses.

core/test_prefix_init.py proves that a prefix taken from tokens equals those tokens' keys and values; here
the run must take them from the first training examples, in file order, joined as the task tokenizes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from training_tiny import run_cli, train_args
from transformers import AutoTokenizer

from ptuning.core.prefix_init import init_prefix_from_tokens
from ptuning.tasks.registry import get_task
from ptuning.training import engine
from ptuning.training.config import ConfigError, TrainConfig
from ptuning.training.data import read_split

P = 16


def first_training_tokens(model: str, sst2_dir: str, count: int) -> torch.Tensor:
    """Written independently of the engine: each train.tsv sentence as the tokenizer encodes it, joined."""
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = (Path(sst2_dir) / "train.tsv").read_text().splitlines()[1:]
    ids = [token for row in rows for token in tokenizer(row.split("\t")[1])["input_ids"]]
    return torch.tensor(ids[:count])


def built(config: TrainConfig, sst2_dir: str):
    task = get_task("sst2")
    return engine.build_prompt_model(config, [task], read_split(task, sst2_dir, "train"))[0]


def test_the_prefix_starts_from_the_first_training_tokens(tiny_bert, sst2_dir, tmp_path) -> None:
    options = dict(model=tiny_bert, task="sst2", data_dir=sst2_dir, prefix_length=P, output_dir=str(tmp_path))
    model = built(TrainConfig(**options, prefix_init="activations"), sst2_dir)
    expected = built(TrainConfig(**options), sst2_dir)
    tokens = first_training_tokens(tiny_bert, sst2_dir, P)
    assert len(set(tokens.tolist()) & {101, 102}) == 2  # [CLS] and [SEP]: several examples were joined
    init_prefix_from_tokens(expected, expected.task_prefix["sst2"], tokens)
    table = model.prefixes[model.task_prefix["sst2"]].embedding.weight
    assert torch.equal(table, expected.prefixes[expected.task_prefix["sst2"]].embedding.weight)


def test_a_run_with_it_trains_and_records_it(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(
        [*train_args(tiny_bert, sst2_dir, out, "--prefix-init", "activations", "--max-steps", "2")], capsys
    )
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["prefix_init"] == "activations"


def test_too_few_training_tokens_is_a_one_line_error(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--prefix-init", "activations")
    code, _, err = run_cli([*argv, "--prefix-length", "64", "--max-train-samples", "2"], capsys)
    assert code == 2 and "--prefix-init activations needs 64 training tokens" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "prefix-mlp"], "method 'prefix-mlp' has none"),
        (["--method", "prompt-tuning"], "method 'prompt-tuning' has none"),
        (["--init-prefix-from", "somewhere"], "both set the starting prefix"),
    ],
)
def test_refused_before_any_model_loads(
    extra, message, tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(engine, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--prefix-init", "activations", *extra)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def table(model):
    return model.prefixes[model.task_prefix["sst2"]].embedding.weight


def test_exactly_p_training_tokens_are_enough(tiny_bert, sst2_dir, tmp_path) -> None:
    """The train split's tokens number exactly --prefix-length: that is enough, not a refusal."""
    task = get_task("sst2")
    train = read_split(task, sst2_dir, "train", limit=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    count = len(task.featurize(train.examples, tokenizer, 128)[0][0]["input_ids"])
    config = TrainConfig(
        model=tiny_bert, task="sst2", data_dir=sst2_dir, prefix_length=count, output_dir=str(tmp_path)
    )
    model, _ = engine.build_prompt_model(config, [task])
    engine.start_prefix_from_training_tokens(model, task, train, tokenizer, 128)  # must not raise


def test_the_tokens_are_cut_at_the_runs_max_length(tiny_bert, sst2_dir, tmp_path) -> None:
    """Each example contributes the tokens training feeds the model: cut at --max-length (5: the shortest a classification input may be)."""
    options = dict(
        model=tiny_bert, task="sst2", data_dir=sst2_dir, prefix_length=12, output_dir=str(tmp_path)
    )
    task = get_task("sst2")
    model, tokenizer = engine.build_prompt_model(
        TrainConfig(**options, max_length=5, prefix_init="activations"),
        [task],
        read_split(task, sst2_dir, "train"),
    )
    rows = [line.split("\t")[1] for line in (Path(sst2_dir) / "train.tsv").read_text().splitlines()[1:]]
    ids = [t for row in rows for t in tokenizer(row, truncation=True, max_length=5)["input_ids"]][:12]
    expected, _ = engine.build_prompt_model(TrainConfig(**options), [task])
    init_prefix_from_tokens(expected, expected.task_prefix["sst2"], torch.tensor(ids))
    assert torch.equal(table(model), table(expected))


def test_a_multitask_shared_prefix_starts_from_the_first_tasks_tokens(tiny_bert, sst2_dir, tmp_path) -> None:
    """With --tasks the prefix is the shared one (not named after the task)."""
    options = dict(model=tiny_bert, data_dir=sst2_dir, prefix_length=8, output_dir=str(tmp_path))
    task = get_task("sst2")
    train = read_split(task, sst2_dir, "train")
    shared, _ = engine.build_prompt_model(
        TrainConfig(**options, tasks=["sst2"], prefix_init="activations"), [task], train
    )
    single, _ = engine.build_prompt_model(
        TrainConfig(**options, task="sst2", prefix_init="activations"), [task], train
    )
    assert shared.task_prefix["sst2"] != "sst2"
    assert torch.equal(table(shared), table(single))


def test_building_without_a_training_split_is_a_config_error(tiny_bert, tmp_path) -> None:
    config = TrainConfig(model=tiny_bert, task="sst2", prefix_init="activations", output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="needs the training split's tokens"):
        engine.build_model(config, get_task("sst2"))


@pytest.mark.parametrize("method", ["finetune", "linear-probe"])
def test_methods_without_a_prefix_are_refused_before_any_model_loads(
    method, tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(engine, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    argv = train_args(
        tiny_bert, sst2_dir, tmp_path / "run", "--prefix-init", "activations", "--method", method
    )
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and f"method '{method}' has none" in err, err


def test_a_multiple_choice_task_starts_from_its_choices_tokens(tiny_bert, sst2_dir, tmp_path) -> None:
    """A multiple-choice feature holds one row per choice: the rows were joined as if they were tokens (COPA
    ended in 'expected sequence of length 18 at dim 1 (got 26)'); each choice's tokens now count, in order."""
    config = TrainConfig(
        model=tiny_bert, task="sst2", data_dir=sst2_dir, prefix_length=4, output_dir=str(tmp_path)
    )
    model, _ = engine.build_prompt_model(config, [get_task("sst2")])

    class Choices:
        name = "sst2"

        def featurize(self, examples, tokenizer, max_length):
            return [{"input_ids": [[5, 6, 7], [8, 9]]} for _ in examples], None

    engine.start_prefix_from_training_tokens(model, Choices(), SimpleNamespace(examples=[{}]), None, 16)
    expected, _ = engine.build_prompt_model(config, [get_task("sst2")])
    init_prefix_from_tokens(expected, expected.task_prefix["sst2"], torch.tensor([5, 6, 7, 8]))
    assert torch.equal(table(model), table(expected))
