"""Bad options end before any model is loaded: one line on stderr, exit code 2.

``load_backbone`` is replaced by a function that fails the test, so each case proves the order, not only the
message.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from training_tiny import run_cli, train_args

from ptuning.core.config import ConfigError
from ptuning.core.kinds import HeadKind
from ptuning.training import engine, preflight
from ptuning.training.config import TrainConfig


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(engine, "load_backbone", refuse)


def one_line_error(argv: list[str], capsys) -> str:
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_config_file_that_is_not_utf8_names_the_line(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes(b"epochs: 1\nnote: caf\xe9\n")
    err = one_line_error(
        [*train_args(tiny_bert, sst2_dir, tmp_path / "run"), "--config", str(config)], capsys
    )
    assert f"{config}" in err and "line 2" in err


def test_an_empty_seed_list_is_refused_not_run_once(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    code, _, err = run_cli([*train_args(tiny_bert, sst2_dir, tmp_path / "run"), "--seeds", ","], capsys)
    assert code == 2 and "--seeds: expected comma-separated integers, got ','" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_non_finite_learning_rate_is_refused(value, tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    err = one_line_error(
        train_args(tiny_bert, sst2_dir, tmp_path / "run", f"--learning-rate={value}"), capsys
    )
    assert f"--learning-rate must be a finite number; got '{value}'" in err
    assert not (tmp_path / "run").exists()


def test_an_output_dir_that_is_a_file(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    err = one_line_error(train_args(tiny_bert, sst2_dir, target), capsys)
    assert f"--output-dir {target} is a file; expected a folder" in err


def test_an_output_dir_that_holds_a_model_is_refused_and_left_alone(tiny_bert, sst2_dir, capsys) -> None:
    """The run's config.json would overwrite the model's: --output-dir the --model folder destroyed it."""
    before = (Path(tiny_bert) / "config.json").read_text()
    err = one_line_error(train_args(tiny_bert, sst2_dir, Path(tiny_bert)), capsys)
    assert f"--output-dir {tiny_bert} holds a model" in err
    assert (Path(tiny_bert) / "config.json").read_text() == before


def test_an_output_dir_inside_a_file(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    err = one_line_error(train_args(tiny_bert, sst2_dir, blocker / "run" / "deeper"), capsys)
    assert f"is inside {blocker}, which is a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = one_line_error(train_args(tiny_bert, sst2_dir, locked / "run"), capsys)
    finally:
        locked.chmod(0o755)
    assert "is not writable" in err


@pytest.mark.skipif(
    not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs, where nobody may create folders"
)
def test_an_output_dir_nobody_may_create(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    err = one_line_error(train_args(tiny_bert, sst2_dir, "/sys/kernel/ptuning-run"), capsys)
    assert "--output-dir /sys/kernel/ptuning-run is not writable" in err


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash_attn is installed")
def test_an_attention_kernel_that_is_not_installed(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--attn-implementation", "flash_attention_2")
    err = one_line_error(argv, capsys)
    assert "needs the 'flash_attn' package, which is not installed; use sdpa or eager" in err
    assert not (tmp_path / "run").exists()  # a refused run leaves no empty folder behind


def test_max_length_beyond_the_position_table(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    # the tiny BERT has 512 positions; in keep mode the prefix takes none, so shortening is the only advice
    argv = [*train_args(tiny_bert, sst2_dir, tmp_path / "run"), "--max-length", "600"]
    err = one_line_error(argv, capsys)
    assert "--max-length 600 needs 600 positions" in err and "has 512; use --max-length 512 or less" in err
    assert "--position-mode" not in err  # (the message names the model folder: test for the flag, not a word)
    assert not (tmp_path / "run").exists()


def test_shift_mode_counts_the_prefix_and_suggests_keep(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = train_args(
        tiny_bert, sst2_dir, tmp_path / "run", "--max-length", "510", "--position-mode", "shift"
    )
    err = one_line_error(argv, capsys)
    assert "--max-length 510 + --prefix-length 4 (position mode shift) needs 514 positions" in err
    assert "or use --position-mode keep" in err


def test_pooling_on_a_task_without_a_pooled_head(tiny_bert, conll_dir, tmp_path, capsys) -> None:
    argv = train_args(tiny_bert, conll_dir, tmp_path / "run", "--pooling", "mean", task="conll2003")
    err = one_line_error(argv, capsys)
    assert "conll2003 is token-classification" in err


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_a_half_backbone_is_refused_when_finetune_trains_it(
    dtype, tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    """A trained weight stored in bf16 has no fp32 master: most AdamW updates rounded away (33 % of the
    encoder's weights changed after 5 steps at 2e-5)."""
    argv = train_args(
        tiny_bert, sst2_dir, tmp_path / "run", "--method", "finetune", "--backbone-dtype", dtype
    )
    err = one_line_error(argv, capsys)
    assert (
        f"--backbone-dtype {dtype} stores the frozen backbone; method finetune trains it, and trained weights "
        f"stay fp32 (in {dtype} most updates round away); use --backbone-dtype fp32 with --mixed-precision "
        f"{dtype}"
    ) in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> str:
    """An encoder-decoder model folder (config and random weights; nothing loads it here)."""
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return str(folder)


def test_sharding_an_encoder_decoder_is_refused_before_loading(
    tiny_t5, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """It used to load on every process and fail there ('no list of 6 layers found')."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = one_line_error(train_args(tiny_t5, sst2_dir, tmp_path / "run", "--shard-backbone"), capsys)
    assert (
        f"--shard-backbone shards encoder-only and decoder-only backbones; {tiny_t5} is an encoder-decoder "
        "(T5, BART...): train it without sharding"
    ) in err
    assert not (tmp_path / "run").exists()


@pytest.fixture
def gpt2_32(tmp_path) -> str:
    """A causal LM's config.json (what preflight reads) whose position table ends at 32."""
    from transformers import GPT2Config

    folder = tmp_path / "gpt2-32"
    GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=32, vocab_size=64).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def lm_dir(tmp_path) -> str:
    folder = tmp_path / "lm"
    folder.mkdir()
    for split in ("train", "dev"):
        (folder / f"{split}.jsonl").write_text('{"prompt": "say one", "response": "one"}\n')
    return str(folder)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ((), "32 positions; set the task option max_new_tokens to 32 or less"),
        (
            ("--max-length", "28", "--position-mode", "shift"),
            "32 positions (4 taken by the prefix); set the task option max_new_tokens to 28 or less",
        ),
    ],
)
def test_a_max_new_tokens_that_leaves_no_prompt_room_is_refused_before_loading(
    extra, said, gpt2_32, lm_dir, tmp_path, capsys
) -> None:
    """Predict and the server cut prompts to what the positions leave beside max_new_tokens; a table that
    max_new_tokens alone fill could never decode, and the run found out only at its first evaluation."""
    argv = train_args(
        gpt2_32,
        lm_dir,
        tmp_path / "run",
        "--task-options",
        '{"max_new_tokens": 40}',
        *extra,
        task="causal-lm",
    )
    err = one_line_error(argv, capsys)
    assert (
        f"task 'causal-lm': max_new_tokens 40 leaves no room for a prompt in {gpt2_32} (gpt2)'s {said}" in err
    )
    assert not (tmp_path / "run").exists()


def _mpnet_config_folder(folder: Path) -> None:
    from transformers import MPNetConfig

    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    MPNetConfig(max_position_embeddings=514, pad_token_id=1, vocab_size=64, **small).save_pretrained(folder)


def test_packaged_names_are_checked_from_their_prepared_cache_without_preparing_it(
    tmp_path, monkeypatch
) -> None:
    """--model mpnet --max-length 600 passed preflight and failed at the first forward (MPNet has 512)."""
    from transformers import LlamaConfig

    from ptuning.core import packaged
    from ptuning.core.config import ConfigError
    from ptuning.training import preflight
    from ptuning.training.config import TrainConfig

    def no_preparing() -> None:
        raise AssertionError("preflight unzipped or converted a packaged model")

    monkeypatch.setattr(packaged, "mpnet_path", no_preparing)
    monkeypatch.setattr(packaged, "smollm2_path", no_preparing)
    monkeypatch.setenv("PTUNING_CACHE", str(tmp_path / "cache"))
    config = TrainConfig(model="mpnet", task="sst2", max_length=600, output_dir=str(tmp_path / "run"))
    preflight.check_positions(config)  # not prepared: skipped, as before
    assert preflight._model_config("smollm2") is None
    _mpnet_config_folder(tmp_path / "cache" / packaged.MPNET_FOLDER)
    with pytest.raises(ConfigError) as error:
        preflight.check_positions(config)
    assert (
        str(error.value)
        == "--max-length 600 needs 600 positions but mpnet (mpnet) has 512; use --max-length 512 or less"
    )
    LlamaConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(tmp_path / "cache" / packaged.SMOLLM2_FOLDER)
    assert preflight._model_config("smollm2").model_type == "llama"


def test_a_hub_id_is_checked_from_the_local_hugging_face_cache(tmp_path, monkeypatch) -> None:
    """Its config.json read where a download left it; an id not cached is skipped (nothing is downloaded)."""
    from huggingface_hub import constants

    from ptuning.core.config import ConfigError
    from ptuning.training import preflight
    from ptuning.training.config import TrainConfig

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--someone--tiny-mpnet"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    _mpnet_config_folder(repo / "snapshots" / "0123abcd")

    def check(model: str) -> None:
        preflight.check_positions(
            TrainConfig(model=model, task="sst2", max_length=600, output_dir=str(tmp_path / "run"))
        )

    check("someone/not-cached")
    with pytest.raises(ConfigError) as error:
        check("someone/tiny-mpnet")
    assert str(error.value) == (
        "--max-length 600 needs 600 positions but someone/tiny-mpnet (mpnet) has 512; use --max-length 512 or less"
    )


def lm_args(gpt2_32: str, lm_dir: str, output_dir: Path, *extra: str) -> list[str]:
    return train_args(
        gpt2_32, lm_dir, output_dir, "--task-options", '{"max_new_tokens": 4}', *extra, task="causal-lm"
    )


def test_linear_probe_on_a_language_model_task_is_refused_before_loading(
    gpt2_32, lm_dir, tmp_path, capsys
) -> None:
    """It loaded, read the data, moved the previous run aside, printed "trainable params: 0" and died with
    "element 0 of tensors does not require grad": the LM head is the frozen backbone's."""
    err = one_line_error(lm_args(gpt2_32, lm_dir, tmp_path / "run", "--method", "linear-probe"), capsys)
    assert (
        "method linear-probe trains only task heads, and a language-model task has none (task 'causal-lm' is "
        "causal-lm: its LM head is the frozen backbone's), so nothing would train; use ptuning-v2, prefix-mlp, "
        "prompt-tuning or finetune"
    ) in err
    assert not (tmp_path / "run").exists()


def test_head_dropout_without_a_task_head_is_refused(gpt2_32, lm_dir, tmp_path, capsys) -> None:
    """A causal-lm run with --head-dropout 0.9 trained the very prompt of 0.1, its config.json saying 0.9."""
    err = one_line_error(lm_args(gpt2_32, lm_dir, tmp_path / "run", "--head-dropout", "0.9"), capsys)
    assert (
        "--head-dropout 0.9 applies before classification, regression, tagging, QA and multiple-choice "
        in err
    )
    assert "task 'causal-lm' is causal-lm (no head is built); leave it at 0.1" in err
    # a multi-task run whose other task has a head reads it there
    config = TrainConfig(head_dropout=0.9)
    preflight.check_language_model_heads(
        config, {"causal-lm": HeadKind.CAUSAL_LM, "sst2": HeadKind.CLASSIFICATION}
    )
    with pytest.raises(ConfigError, match="task 'summary' is seq2seq-lm"):
        preflight.check_language_model_heads(config, {"summary": HeadKind.SEQ2SEQ_LM})


def test_fp16_autocast_is_refused_where_training_runs_on_the_cpu(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """accelerate turns fp16 autocast on only off the CPU: a CPU run was bit-identical to fp32 while its
    config.json said fp16; and a bf16 backbone was refused there as if autocast would feed LayerNorm fp16."""
    monkeypatch.setattr(preflight, "trains_on_cpu", lambda: True, raising=False)
    for dtype in ("fp32", "bf16"):
        argv = train_args(
            tiny_bert, sst2_dir, tmp_path / "run", "--backbone-dtype", dtype, "--mixed-precision", "fp16"
        )
        err = one_line_error(argv, capsys)
        assert (
            "--mixed-precision fp16: fp16 autocast runs on a GPU only, and this run trains on the CPU, where it "
            "would be the run --mixed-precision no trains; use --mixed-precision bf16 (the CPU's) or no"
        ) in err
    # no autocast, no clash: the backbone check alone passes bf16 storage with fp16 asked for
    preflight.check_backbone_options(TrainConfig(backbone_dtype="bf16", mixed_precision="fp16"))
    preflight.check_mixed_precision(TrainConfig(mixed_precision="bf16"))
    assert not (tmp_path / "run").exists()


def test_the_cpu_is_the_training_device_where_accelerate_is_told_so(monkeypatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # accelerate launch --cpu
    assert preflight.trains_on_cpu()
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setenv("WORLD_SIZE", "2")  # several processes without CUDA: engine passes cpu=True
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert preflight.trains_on_cpu()
