"""One typed TrainConfig: the same conversion and the same errors for flags, files, presets, sweeps and
multi-task runs; field docs are the flags' help."""

from __future__ import annotations

import pytest
from training_tiny import run_cli, train_args

from ptuning.core import precision
from ptuning.core.config import ConfigError
from ptuning.training import engine, preflight
from ptuning.training.config import TrainConfig, build_config
from ptuning.training.presets import PRESETS


def test_text_from_a_file_or_a_flag_becomes_the_fields_type() -> None:
    config = build_config(
        [("run.yaml", {"learning_rate": "5e-3", "batch_size": 8.0, "prefix_layers": "0,1"}),
         ("flags", {"epochs": "2.5", "task_options": '{"doc_stride": 64}', "tasks": "copa,wsc"})]
    )  # fmt: skip
    assert config.learning_rate == 0.005 and config.batch_size == 8 and config.prefix_layers == [0, 1]
    assert config.epochs == 2.5 and config.task_options == {"doc_stride": 64}
    assert config.tasks == ["copa", "wsc"]


BAD_VALUES = {
    "wrong type in a file": (
        ("run.yaml", {"batch_size": "many"}),
        "run.yaml: batch_size must be an integer (int); got 'many'",
    ),
    "wrong type as a flag": (
        ("flags", {"epochs": "three"}),
        "--epochs must be a number (float); got 'three'",
    ),
    "infinite": (("flags", {"learning_rate": "inf"}), "--learning-rate must be a finite number; got 'inf'"),
    "not a number": (
        ("flags", {"learning_rate": "nan"}),
        "--learning-rate must be a finite number; got 'nan'",
    ),
    "unknown key with a suggestion": (
        ("run.yaml", {"learnig_rate": 1e-3}),
        "run.yaml: unknown option 'learnig_rate'; did you mean 'learning_rate'?",
    ),
    "choice": (
        ("flags", {"backbone_dtype": "fp8"}),
        "--backbone-dtype must be one of fp32, bf16, fp16, auto; got 'fp8'",
    ),
    "fraction": (("run.yaml", {"dev_from_train": 1.5}), "run.yaml: dev_from_train must be < 1; got 1.5"),
    "negative layer": (("flags", {"prefix_layers": "0,-1"}), "--prefix-layers must be >= 0; got '-1'"),
    "not a layer": (
        ("flags", {"prefix_layers": "0,x"}),
        "--prefix-layers must be comma-separated integers (e.g. 0,1,2); got 'x'",
    ),
    "pair": (("flags", {"task_data": ["copa"]}), "--task-data: expected TASK=VALUE, got 'copa'"),
    "negative seed": (("flags", {"seed": "-1"}), "--seed must be >= 0; got '-1'"),
    "a truth value for a number": (
        ("run.yaml", {"prefix_length": True}),
        "run.yaml: prefix_length: expected a number, got true",
    ),
    "seed past numpy's range": (
        ("run.yaml", {"seed": 2**32}),
        "run.yaml: seed must be <= 4294967295; got 4294967296",
    ),
}


@pytest.mark.parametrize("layer, message", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_value_names_its_source_field_and_the_expected_type(layer, message) -> None:
    with pytest.raises(ConfigError) as error:
        build_config([layer])
    assert str(error.value) == message


def test_a_flag_changes_one_tasks_folder_of_a_files_map_and_keeps_the_others() -> None:
    config = build_config(
        [("run.yaml", {"tasks": "sst2,conll2003", "task_data": {"sst2": "a", "conll2003": "c"},
                       "task_splits": ["sst2=train:dev"]}),
         ("flags", {"task_data": ["sst2=b"], "task_splits": ["conll2003=train:valid"]})]
    )  # fmt: skip
    assert config.task_data == {"sst2": "b", "conll2003": "c"}
    assert config.task_splits == {"sst2": "train:dev", "conll2003": "train:valid"}
    assert TrainConfig(task_data={"sst2": "a"}).replace(task_data={"copa": "d"}).task_data == {"copa": "d"}


def test_task_options_merge_key_by_key_across_layers() -> None:
    """A flag's task_options replaced a file's whole: squad's doc_stride was dropped by a flag about conll2003."""
    keyed = build_config(
        [("run.yaml", {"tasks": "squad,conll2003", "task_options": {"squad": {"doc_stride": 64}, "conll2003": {}}}),
         ("flags", {"task_options": '{"conll2003": {"label_all_tokens": true}}'})]
    )  # fmt: skip
    assert keyed.task_options == {"squad": {"doc_stride": 64}, "conll2003": {"label_all_tokens": True}}
    flat = build_config(
        [("run.yaml", {"task": "squad", "task_options": {"doc_stride": 64}}),
         ("flags", {"task_options": '{"doc_stride": 32, "max_answer_length": 20}'})]
    )  # fmt: skip
    assert flat.task_options == {"doc_stride": 32, "max_answer_length": 20}


def test_a_home_folder_in_a_file_is_expanded(monkeypatch, tmp_path) -> None:
    """output_dir: ~/runs in a YAML file (no shell to expand it) wrote into a folder named '~'."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = build_config([("run.yaml", {"task": "sst2", "output_dir": "~/runs/a", "data_dir": "~/data"})])
    assert (config.output_dir, config.data_dir) == (str(tmp_path / "runs/a"), str(tmp_path / "data"))


def test_the_new_fields_default_to_todays_behaviour() -> None:
    config = TrainConfig()
    assert (config.backbone_dtype, config.backbone_quantization, config.pooling) == ("fp32", None, None)
    assert config.dev_from_train is None and config.tasks is None
    assert TrainConfig(dev_from_train=0.1).dev_from_train == 0.1


def test_replace_validates_like_every_other_source() -> None:
    config = TrainConfig(task="sst2")
    assert config.replace(prefix_length=8).prefix_length == 8 and config.prefix_length == 16
    with pytest.raises(ConfigError, match="prefix_length must be a positive integer"):
        config.replace(prefix_length=0)


@pytest.mark.parametrize("name", ["sst2-minilm", "boolq-minilm", "wic-bert-large"])
def test_presets_go_through_the_same_model(name) -> None:
    config = build_config([(f"preset {name}", PRESETS[name].options)])
    assert config.task == PRESETS[name].task


def test_help_of_every_flag_is_the_fields_docstring(capsys) -> None:
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    help_text = " ".join(out.split())
    for name in ("dev_from_train", "backbone_dtype", "backbone_quantization", "pooling", "learning_rate"):
        doc = " ".join(TrainConfig.model_fields[name].description.split())
        assert "--" + name.replace("_", "-") in out and doc in help_text, name


def test_a_quantized_backbone_without_cuda_is_refused_before_loading(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(engine, "load_backbone", _no_loading)
    for quantization in ("nf4", "int8"):
        argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--backbone-quantization", quantization)
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"--backbone-quantization {quantization}: " in err and "needs CUDA and bitsandbytes" in err


def test_half_backbone_under_the_other_half_autocast_is_refused(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(engine, "load_backbone", _no_loading)
    # where fp16 autocast is on (a GPU); on the CPU --mixed-precision fp16 is refused itself (test_preflight.py)
    monkeypatch.setattr(preflight, "trains_on_cpu", lambda: False)
    argv = train_args(
        tiny_bert, sst2_dir, tmp_path / "run", "--backbone-dtype", "bf16", "--mixed-precision", "fp16"
    )
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--backbone-dtype bf16 with --mixed-precision fp16 cannot run" in err
    # auto is refused where it would pick bf16 ...
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: True)
    argv[argv.index("bf16")] = "auto"
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--backbone-dtype auto (bf16 on this machine) with --mixed-precision fp16" in err
    monkeypatch.setattr(
        precision, "native_bf16", lambda device=None: False
    )  # ... and passes where it picks fp32
    preflight.check_backbone_options(TrainConfig(backbone_dtype="auto", mixed_precision="fp16"))
    # the mirror pair fails the same way in LayerNorm (fp16 weights, bf16 inputs), so it is refused alike
    argv[argv.index("--backbone-dtype") + 1] = "fp16"
    argv[argv.index("--mixed-precision") + 1] = "bf16"
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--backbone-dtype fp16 with --mixed-precision bf16 cannot run" in err, err
    preflight.check_backbone_options(TrainConfig(backbone_dtype="fp16", mixed_precision="fp16"))


def _no_loading(*args, **kwargs):
    raise AssertionError("a model was loaded before the options were checked")


def test_a_task_folder_may_hold_a_comma() -> None:
    config = build_config(
        [("flags", {"tasks": "sst2,copa", "task_data": ["sst2=/data/runs,v2,copa=/data/c"]})]
    )
    assert config.task_data == {"sst2": "/data/runs,v2", "copa": "/data/c"}


@pytest.mark.parametrize(
    "name, text",
    [
        ("run.yaml", "task: sst2\nepochs: 1\nepochs: 5\n"),
        ("run.json", '{"task": "sst2", "epochs": 1, "epochs": 5}'),
    ],
)
def test_an_option_given_twice_in_one_file_is_refused(tmp_path, name, text) -> None:
    """YAML and JSON keep the last of two equal keys without a word; which one did the user mean?"""
    from ptuning.training.config import load_config_file

    (tmp_path / name).write_text(text)
    with pytest.raises(
        ConfigError, match=f"config file .*{name}: 'epochs' is given more than once; give it once"
    ):
        load_config_file(tmp_path / name)


def test_a_yaml_syntax_error_is_one_line_naming_line_and_column(tmp_path) -> None:
    from ptuning.training.config import load_config_file

    path = tmp_path / "run.yaml"
    path.write_text("task: sst2\n  bad: : indent\n")
    with pytest.raises(ConfigError) as error:
        load_config_file(path)
    assert (
        str(error.value)
        == f"config file {path}, line 2, column 6 is not valid YAML: mapping values are not allowed here"
    )


@pytest.mark.parametrize("rate", [None, 0.0])
def test_backbone_dropout_sets_the_frozen_backbones_rates_and_none_keeps_the_models(tiny_bert, rate) -> None:
    """The tiny BERT was saved with hidden and attention dropout 0.1: None keeps them, 0 turns both off."""
    from torch import nn

    from ptuning.tasks.registry import get_task
    from ptuning.training.engine import build_prompt_model

    config = TrainConfig(model=tiny_bert, task="sst2", backbone_dropout=rate)
    model, _ = build_prompt_model(config, [get_task("sst2")])
    rates = {module.p for module in model.backbone.modules() if isinstance(module, nn.Dropout)}
    assert rates == ({0.1} if rate is None else {0.0})
    assert TrainConfig.model_validate({"backbone_dropout": "0"}).backbone_dropout == 0.0


def test_auto_keeps_a_finetuned_backbone_fp32(tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch) -> None:
    """auto picks storage for a frozen backbone; finetune trains it, so it loads fp32 even where bf16 is native."""
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: True)
    seen: dict = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise ConfigError("stop here")

    monkeypatch.setattr(engine, "load_backbone", record)
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--backbone-dtype", "auto")
    code, _, err = run_cli([*argv, "--method", "finetune"], capsys)
    assert code == 2 and "stop here" in err and seen["dtype"] is None  # None: the loader's fp32
    assert (
        build_config([("flags", {"method": "finetune", "backbone_dtype": "auto"})]).backbone_dtype == "fp32"
    )
    code, _, err = run_cli([*argv, "--method", "linear-probe"], capsys)  # a frozen backbone: bf16 as before
    assert code == 2 and seen["dtype"] == "bf16"


@pytest.mark.parametrize(
    "name, text",
    [
        ("run.yaml", "task: sst2\nbatch-size: 32\nbatch_size: 64\n"),
        ("run.json", '{"task": "sst2", "batch-size": 32, "batch_size": 64}'),
    ],
)
def test_one_option_in_both_spellings_is_refused(tmp_path, name, text) -> None:
    """batch-size and batch_size are one option: the last one used to win without a word."""
    from ptuning.training.config import load_config_file

    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config_file(tmp_path / name)
    assert str(error.value) == (
        f"config file {tmp_path / name}: 'batch-size' and 'batch_size' are the same option (batch_size); "
        "give it once"
    )


def test_a_files_keys_may_be_spelled_as_their_flags(tmp_path) -> None:
    """CLI.md: the keys are the option names; --data and --task-split are flags whose fields are data_dir and
    task_splits, and a file's 'data:' was an unknown option."""
    from ptuning.training.config import load_config_file

    path = tmp_path / "run.yaml"
    path.write_text("task: sst2\ndata: some/folder\ntask-split:\n  sst2: train=dev\n")
    assert load_config_file(path) == {
        "task": "sst2",
        "data_dir": "some/folder",
        "task_splits": {"sst2": "train=dev"},
    }
    path.write_text("data: a\ndata_dir: b\n")
    with pytest.raises(ConfigError, match="'data' and 'data_dir' are the same option"):
        load_config_file(path)


def test_task_names_with_dashes_in_a_files_map_stay_distinct(tmp_path) -> None:
    """Only the top-level keys are option names: a task_data map keeps its task names as written."""
    from ptuning.training.config import load_config_file

    path = tmp_path / "run.yaml"
    path.write_text(
        "tasks: superglue-rte,boolq\ntask_data:\n  superglue-rte: /d/rte\n  superglue_rte: /d/x\n"
    )
    assert load_config_file(path)["task_data"] == {"superglue-rte": "/d/rte", "superglue_rte": "/d/x"}


@pytest.mark.parametrize(
    "key, flag",
    [("preset", "--preset NAME"), ("config", "--config FILE"), ("seeds", "--seeds A,B,... (ptuning train)")],
)
def test_a_command_line_option_in_a_config_file_names_its_flag(
    key, flag, tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(engine, "load_backbone", _no_loading)
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: sst2-minilm\n")
    code, _, err = run_cli(
        [*train_args(tiny_bert, sst2_dir, tmp_path / "run"), "--config", str(path)], capsys
    )
    assert code == 2 and err.count("\n") == 1, err
    assert f"{path}: {key!r} is a command-line option, not a config-file key; use {flag}" in err


def test_the_command_line_only_options_are_the_flags_that_are_not_fields() -> None:
    """COMMAND_LINE_ONLY mirrors cli.py: every train/sweep flag that is no TrainConfig field, and only those."""
    from ptuning.cli import build_parser
    from ptuning.training.config import COMMAND_LINE_ONLY

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    flags_only = {
        action.dest
        for command in ("train", "sweep")
        for action in commands[command]._actions
        if action.option_strings and action.dest not in TrainConfig.model_fields and action.dest != "help"
    }
    assert flags_only == set(COMMAND_LINE_ONLY)


@pytest.mark.parametrize(
    "method, options, unread",
    [
        ("prompt-tuning", {"position_mode": "shift"}, "position_mode is"),
        ("ptuning-v2", {"mlp_hidden_size": "8"}, "mlp_hidden_size is"),
        (
            "linear-probe",
            {"prefix_dropout": "0.5", "position_mode": "shift"},
            "position_mode, prefix_dropout are",
        ),
        (
            "finetune",
            {"prefix_dropout": "0.2", "mlp_hidden_size": "3"},
            "mlp_hidden_size, prefix_dropout are",
        ),
        ("ptuning-v2", {"prefix_init": "activations", "prefix_init_std": "0.001"}, "prefix_init_std is"),
    ],
)
def test_a_prefix_option_the_method_never_reads_is_refused(method, options, unread) -> None:
    """They were accepted and recorded in config.json as if used: prompt-tuning under --position-mode shift
    trained the very prompt of keep, linear-probe under --prefix-dropout 0.5 the very head of 0.1."""
    with pytest.raises(ConfigError, match=f"^{unread} not used by method {method} \\(") as refused:
        build_config([("flags", {"method": method, **options})])
    assert str(refused.value).endswith("at the default") and "\n" not in str(refused.value)


def test_the_methods_that_read_a_prefix_option_take_it() -> None:
    assert build_config([("flags", {"method": "prefix-mlp", "mlp_hidden_size": "8"})]).mlp_hidden_size == 8
    assert (
        build_config([("flags", {"method": "prompt-tuning", "prefix_dropout": "0.3"})]).prefix_dropout == 0.3
    )
    assert (
        build_config([("flags", {"position_mode": "shift", "prefix_init": "activations"})]).position_mode
        == "shift"
    )
    # no prefix dropout is what a method without a prefix does: 0 is true of it (scripts turn every dropout off)
    assert build_config([("flags", {"method": "finetune", "prefix_dropout": "0"})]).prefix_dropout == 0
    # a length is not refused (presets set it for every method); the sweep refuses several of them
    assert build_config([("flags", {"method": "linear-probe", "prefix_length": "64"})]).prefix_length == 64


def test_a_presets_prefix_options_give_way_to_a_method_that_does_not_read_them() -> None:
    """A reference preset's prefix dropout (0.2) with --method finetune, or MPNet's top-half layers with
    --method prompt-tuning, belong to the preset's own method: dropped, not refused (a flag cannot unset them)."""
    preset = PRESETS["conll2004-bert-large"]
    config = build_config([(f"preset {preset.name}", preset.options), ("flags", {"method": "finetune"})])
    assert (config.prefix_dropout, config.head_dropout, config.prefix_length) == (0.1, 0.2, 128)
    preset = PRESETS["conll2003-mpnet"]
    config = build_config([(f"preset {preset.name}", preset.options), ("flags", {"method": "prompt-tuning"})])
    assert config.prefix_layers is None and config.prefix_length == 16
    with pytest.raises(ConfigError, match="^prefix_dropout is not used by method finetune"):  # a file's stays
        build_config([(f"preset {preset.name}", preset.options), ("run.yaml", {"prefix_dropout": 0.2}),
                      ("flags", {"method": "finetune"})])  # fmt: skip


def test_a_config_knows_which_options_came_from_flags() -> None:
    config = build_config(
        [("preset sst2-minilm", PRESETS["sst2-minilm"].options), ("run.yaml", {"seed": 3}),
         ("flags", {"learning_rate": "5e-3"})]
    )  # fmt: skip
    assert config.given_as_flag("learning_rate")
    assert not config.given_as_flag("prefix_length") and not config.given_as_flag("seed")
    assert not TrainConfig(seed=3).given_as_flag("seed")
