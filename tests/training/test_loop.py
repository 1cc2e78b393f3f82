"""The one training loop: a diverging run stops with a clear error and keeps nothing non-finite; progress is
recorded as the fraction of an epoch actually trained; options reach the model; the resumable state holds
every process's torch random states, CUDA's included."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook
from training_tiny import run_cli, train_args
from transformers import AutoModel, get_linear_schedule_with_warmup

from ptuning.core import precision
from ptuning.core.checkpoint import read_checkpoint_config
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.training import engine, state, trainer
from ptuning.training.config import TrainConfig
from ptuning.training.schedule import loss_units, window_weight


@pytest.mark.parametrize("rate", ["1e30", "1e38"])
def test_a_diverging_run_stops_with_one_line_and_saves_nothing_as_best(
    rate, tiny_bert, sst2_dir, tmp_path, capsys
) -> None:
    # finite options: the loss becomes nan after the first update (1e30), or the step overflows (1e38)
    code, _, err = run_cli(train_args(tiny_bert, sst2_dir, tmp_path / "run", "--learning-rate", rate), capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the progress bar's own line
    assert (
        last.startswith("ptuning train: error: training diverged at update") and "nothing was saved" in last
    )
    assert err.count("error") == 1
    assert not (tmp_path / "run" / "checkpoint").exists()
    assert not (tmp_path / "run" / "summary.json").exists()


def test_max_steps_records_the_fraction_of_the_epoch(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    # 32 training examples in batches of 8: one update is a quarter of an epoch
    code, _, err = run_cli(train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "1"), capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [entry["epoch"] for entry in summary["history"]] == [0.25] and summary["best_epoch"] == 0.25


def test_max_steps_past_the_epochs_says_where_the_run_stops(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    """--max-steps bounds --epochs (4 updates an epoch here, 1 epoch): 100 trained 4 without a word."""
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "100", "--epochs", "1")
    code, out, err = run_cli([*argv, "--test-split", "none"], capsys)
    assert code == 0, err
    assert "note: --max-steps 100 is past the 4 updates of --epochs 1; the run stops at 4" in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["updates"] == 4


def test_a_warmup_as_long_as_the_run_is_named(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    """The warm-up starts at lr 0 (HF's schedule): --max-steps 1 --warmup-ratio 0.1 trained nothing, silently."""
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "1", "--warmup-ratio", "0.1")
    code, out, err = run_cli([*argv, "--test-split", "none"], capsys)
    assert code == 0, err
    assert "warning: --warmup-ratio 0.1 warms up all 1 update(s) of this run (the first runs at lr 0)" in out
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "longer", "--max-steps", "2", "--warmup-ratio", "0.1")
    code, out, err = run_cli([*argv, "--test-split", "none"], capsys)
    assert code == 0, err
    assert "warms up all" not in out  # the second of two updates runs at the full rate


class RecordingWriter:
    """Stands for tensorboard's SummaryWriter: keeps every scalar."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, float(value), step))

    def close(self) -> None:
        pass

    def losses(self) -> list[float]:
        return [value for tag, value, _ in self.scalars if tag == "train/loss"]


def test_the_history_records_the_mean_loss_since_the_previous_evaluation(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    # 4 updates an epoch, evaluated after each epoch: each entry is the mean of its epoch's 4 losses, not the last
    writer = RecordingWriter()
    monkeypatch.setattr(trainer, "tensorboard_writer", lambda output_dir, config: writer)
    args = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--epochs", "2")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "summary.json").read_text())["history"]
    logged = writer.losses()
    assert len(logged) == 8 and len(history) == 2
    for entry, epoch_losses in zip(history, (logged[:4], logged[4:]), strict=True):
        assert entry["train_loss"] == pytest.approx(sum(epoch_losses) / 4, rel=1e-6)
        assert entry["train_loss"] != pytest.approx(epoch_losses[-1], rel=1e-6)  # the losses do differ


def test_with_accumulation_the_logged_loss_is_the_whole_update_s(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """4 micro-batches of 8 per update: the plotted train/loss is their mean (equal units here), not the last one's."""
    writer = RecordingWriter()
    monkeypatch.setattr(trainer, "tensorboard_writer", lambda output_dir, config: writer)
    micro_losses = []
    original = trainer.Trainer._step
    monkeypatch.setattr(
        trainer.Trainer,
        "_step",
        lambda self, *a, **k: micro_losses.append(original(self, *a, **k)) or micro_losses[-1],
    )
    args = train_args(
        tiny_bert, sst2_dir, tmp_path / "run", "--epochs", "2", "--gradient-accumulation-steps", "4"
    )
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert len(micro_losses) == 8 and len(writer.losses()) == 2
    for logged, window in zip(writer.losses(), (micro_losses[:4], micro_losses[4:]), strict=True):
        assert logged == pytest.approx(sum(window) / 4, rel=1e-5)
        assert logged != pytest.approx(window[-1], rel=1e-3)


def test_pooling_reaches_the_head_and_the_checkpoint(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "1", "--pooling", "mean")
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    saved = read_checkpoint_config(tmp_path / "run" / "checkpoint")
    assert saved["tasks"]["sst2"]["head"]["pooling"] == "mean"


@pytest.mark.parametrize(
    "flag, native, loaded",
    [
        ("bf16", False, "bf16"),
        ("auto", True, "bf16"),
        ("auto", False, None),
        ("fp32", True, None),
    ],
)
def test_backbone_dtype_is_passed_to_the_loader(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch, flag, native, loaded
) -> None:
    """auto stores the backbone in bf16 only where the machine computes bf16 natively (None: the loader's fp32)."""
    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise ConfigError("stop here")  # a user error: the CLI ends with exit code 2

    monkeypatch.setattr(engine, "load_backbone", record)
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: native)
    code, _, _ = run_cli(train_args(tiny_bert, sst2_dir, tmp_path / "run", "--backbone-dtype", flag), capsys)
    assert code == 2 and seen["dtype"] == loaded


def _gradient_norms_at_each_update(argv, capsys) -> list[float]:
    """Train with ``argv`` and return the trainable gradients' norm as each optimizer update saw it."""
    norms: list[float] = []

    def record(optimizer, args, kwargs) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        code, _, err = run_cli(argv, capsys)
    finally:
        handle.remove()
    assert code == 0, err
    return norms


def test_max_grad_norm_clips_every_update_at_1_by_default_and_0_turns_it_off(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    bounds: list[float] = []
    clip = Accelerator.clip_grad_norm_

    def spy(self, parameters, max_norm, *args, **kwargs):
        bounds.append(max_norm)
        return clip(self, parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", spy)
    args = train_args(tiny_bert, sst2_dir, tmp_path / "off", "--max-steps", "3", "--max-grad-norm", "0")
    unclipped = _gradient_norms_at_each_update(args, capsys)
    assert bounds == [] and len(unclipped) == 3
    assert min(unclipped) > 1e-3  # so the 1e-3 bound below bites at every update
    assert (
        json.loads((tmp_path / "off" / "config.json").read_text())["max_grad_norm"] is None
    )  # 0 is stored null
    args = train_args(tiny_bert, sst2_dir, tmp_path / "default", "--max-steps", "3")
    _gradient_norms_at_each_update(args, capsys)
    assert bounds == [1.0] * 3  # the HF Trainer's and the reference code's bound, before every update
    assert json.loads((tmp_path / "default" / "config.json").read_text())["max_grad_norm"] == 1.0
    args = train_args(
        tiny_bert, sst2_dir, tmp_path / "clipped", "--max-steps", "3", "--max-grad-norm", "1e-3"
    )
    clipped = _gradient_norms_at_each_update(args, capsys)
    assert len(clipped) == 3 and max(clipped) == pytest.approx(1e-3, rel=1e-3)
    assert json.loads((tmp_path / "clipped" / "config.json").read_text())["max_grad_norm"] == 1e-3


def small_optimizer():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    return optimizer, get_linear_schedule_with_warmup(optimizer, 0, 4)


def test_the_state_holds_and_restores_the_cuda_random_state(tmp_path, monkeypatch) -> None:
    cuda_state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": cuda_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value, device="cuda": restored.append(value))
    optimizer, scheduler = small_optimizer()
    state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 0})
    assert torch.equal(
        load_file(tmp_path / "training_state" / "state.safetensors")["rng.cuda.ranks"][0], cuda_state
    )
    _, _, meta = state.load_training_state(tmp_path)
    state.restore_rng(meta)
    assert len(restored) == 1 and torch.equal(restored[0], cuda_state)


def _prompt_model(tiny_bert: str) -> PromptModel:
    model = PromptModel(AutoModel.from_pretrained(tiny_bert), "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    return model


def test_fp16_loss_scale_is_saved_and_restored_with_the_state(tmp_path, tiny_bert) -> None:
    """fp16 training's loss scale moves with overflows; a resume that restarted it at 65536 would skip other
    updates than the uninterrupted run (CPU GradScaler here: accelerate makes its scaler on CUDA only)."""
    model = _prompt_model(tiny_bert)
    optimizer, scheduler = small_optimizer()
    scaler = torch.amp.GradScaler("cpu")
    scaler.load_state_dict({**scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 37})
    state.save_training_state(
        tmp_path,
        trainer.resumable_state(model),
        optimizer,
        scheduler,
        {"micro": 3},
        grad_scaler=scaler.state_dict(),
    )
    fresh = torch.amp.GradScaler("cpu")
    progress = trainer.restore_training(tmp_path, model, optimizer, scheduler, grad_scaler=fresh)
    assert progress == {"micro": 3} and fresh.state_dict() == scaler.state_dict()
    assert fresh.get_scale() == 1024.0


@pytest.mark.parametrize("dropped", ["prefixes.t.embedding.weight", "heads.t.linear.weight"])
def test_resume_refuses_a_state_without_a_trained_tensor(tmp_path, tiny_bert, dropped) -> None:
    """Loading the state is not strict (the frozen backbone is not in it): a prefix or head tensor missing
    from the file once stayed at its fresh initialisation and the resumed run went on as if restored."""
    model = _prompt_model(tiny_bert)
    optimizer, scheduler = small_optimizer()
    saved = trainer.resumable_state(model)
    assert dropped in saved
    del saved[dropped]
    state.save_training_state(tmp_path, saved, optimizer, scheduler, {"micro": 3})
    with pytest.raises(ConfigError, match=rf"state.safetensors does not match .*missing \['{dropped}'\]"):
        trainer.restore_training(tmp_path, _prompt_model(tiny_bert), optimizer, scheduler)


def test_resume_refuses_a_state_with_a_tensor_this_model_lacks(tmp_path, tiny_bert) -> None:
    model = _prompt_model(tiny_bert)
    optimizer, scheduler = small_optimizer()
    saved = {**trainer.resumable_state(model), "heads.u.linear.weight": torch.zeros(2, 8)}
    state.save_training_state(tmp_path, saved, optimizer, scheduler, {"micro": 3})
    with pytest.raises(ConfigError, match=r"unexpected \['heads.u.linear.weight'\]"):
        trainer.restore_training(tmp_path, _prompt_model(tiny_bert), optimizer, scheduler)


def test_a_state_save_killed_mid_write_leaves_nothing_once_the_next_run_loads(tmp_path, monkeypatch) -> None:
    """A kill while the state is written leaves its staging folder (the cleanup never runs); it is named for
    its writer, so the next run's load deletes it: a fine-tuning state is a whole model's size."""
    optimizer, scheduler = small_optimizer()
    state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 0})

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(state, "save_file", killed)
    monkeypatch.setattr(
        state.shutil, "rmtree", lambda *args, **kwargs: None
    )  # a killed process cleans nothing
    with pytest.raises(RuntimeError):
        state.save_training_state(tmp_path, {}, optimizer, scheduler, {"micro": 1})
    monkeypatch.undo()
    (leftover,) = [entry for entry in tmp_path.iterdir() if entry.name != "training_state"]
    assert leftover.name.startswith(f".training_state.new-{os.getpid()}-")
    finished = subprocess.Popen(["true"])  # a process that has ended: the writer that was killed
    finished.wait()
    leftover.rename(leftover.with_name(leftover.name.replace(f"-{os.getpid()}-", f"-{finished.pid}-")))
    _, _, meta = state.load_training_state(tmp_path)
    assert meta["progress"] == {"micro": 0} and sorted(p.name for p in tmp_path.iterdir()) == [
        "training_state"
    ]


def test_each_process_restores_its_own_torch_random_state() -> None:
    torch.manual_seed(1)
    first = torch.get_rng_state()
    torch.manual_seed(2)
    second = torch.get_rng_state()
    meta = {"rng_torch": first, "rng_torch_ranks": torch.stack([first, second]), "rng_python": None}
    meta.update(_python_and_numpy_states())
    state.restore_rng(meta, rank=1, world=2)
    assert torch.equal(torch.get_rng_state(), second)
    state.restore_rng(meta, rank=0, world=2)
    assert torch.equal(torch.get_rng_state(), first)


def _python_and_numpy_states() -> dict:
    import random

    import numpy as np

    return {
        "rng_python": state._jsonable(random.getstate()),
        "rng_numpy": state._jsonable(np.random.get_state()),
    }


def test_dev_and_test_scoring_can_both_be_switched_off(tiny_bert, sst2_dir, tmp_path, capsys) -> None:
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "2", "--dev-split", "none")
    code, _, err = run_cli([*argv, "--test-split", "none"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dev"] is None and summary["test"] is None and summary["data"].keys() == {"train"}
    assert (tmp_path / "run" / "checkpoint" / "prompt_config.json").is_file()  # the last one is kept


@pytest.mark.parametrize("disabled", [False, True])
def test_tqdm_disable_silences_the_progress_bar(disabled, tiny_bert, sst2_dir, tmp_path) -> None:
    """The bar leaves ``disable`` to tqdm on the main process, so its TQDM_DISABLE variable works (campaign
    logs were filling with bars). tqdm reads the variable when it is imported: hence a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    if disabled:
        env["TQDM_DISABLE"] = "1"
    argv = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--max-steps", "1")
    code = "import sys; from ptuning.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (re.search(r"train: +100%", run.stderr) is not None) is not disabled  # our bar, not a loader's


@pytest.mark.parametrize(("engine_clipping", "note"), [(1.0, False), (0.0, True), ("auto", True)])
def test_under_deepspeed_its_engine_clips_and_a_different_bound_is_printed(engine_clipping, note) -> None:
    """DeepSpeed's engine clips by its own config's gradient_clipping (accelerate's clip_grad_norm_ does not clip
    there), so the loop does not clip, and a --max-grad-norm the engine does not apply is printed."""
    from ptuning.training.trainer import Trainer

    printed: list[str] = []
    plugin = SimpleNamespace(deepspeed_config={"gradient_clipping": engine_clipping})
    accelerator = SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED,
        state=SimpleNamespace(deepspeed_plugin=plugin),
        print=printed.append,
    )
    loop = SimpleNamespace(config=TrainConfig(), accelerator=accelerator)
    assert Trainer._clip_norm(loop) is None
    assert bool(printed) is note and all(
        "--max-grad-norm 1 is not applied under DeepSpeed" in p for p in printed
    )
    loop.accelerator = SimpleNamespace(distributed_type=DistributedType.NO, print=printed.append)
    assert Trainer._clip_norm(loop) == 1.0
    loop.config = TrainConfig(max_grad_norm=0)
    assert Trainer._clip_norm(loop) is None


def test_an_accumulated_tagging_update_is_the_token_mean_of_the_whole_window(
    tiny_bert_no_dropout, uneven_conll_dir, tmp_path, capsys
) -> None:
    """Two micro-batches of 4 sentences make the update one batch of 8 makes: every labelled token counts
    the same, not each micro-batch's mean (sentences of 1 to 9 words make the two differ)."""
    common = ("--epochs", "2", "--test-split", "none", "--no-group-by-length", "--max-grad-norm", "0")
    common += ("--prefix-dropout", "0", "--head-dropout", "0", "--seed", "3", "--save-every-steps", "1000")
    states = []
    for name, sizes in (
        ("one", ("--batch-size", "8")),
        ("two", ("--batch-size", "4", "--gradient-accumulation-steps", "2")),
    ):
        output_dir = tmp_path / name
        args = train_args(tiny_bert_no_dropout, uneven_conll_dir, output_dir, *common, task="conll2003")
        code, _, err = run_cli([*args, *sizes], capsys)  # sizes last: they replace train_args' batch size
        assert code == 0, err
        assert json.loads((output_dir / "summary.json").read_text())["updates"] == 4  # 12 sentences, 2 epochs
        states.append(load_file(output_dir / "training_state" / "state.safetensors"))
    trained = [name for name in states[0] if name.startswith("model.")]
    assert trained
    for name in trained:
        torch.testing.assert_close(states[1][name], states[0][name], rtol=0, atol=1e-5, msg=name)


def test_window_weights_count_every_labelled_unit_alike() -> None:
    # a window of two micro-batches holding 10 and 30 tokens, accumulation 2, one process
    first, second = (window_weight(units, "t", [("t", 10), ("t", 30)], 1, 2) for units in (10, 30))
    assert (first, second) == (0.5, 1.5)  # (0.5 m1 + 1.5 m2) / 2 = (10 m1 + 30 m2) / 40, the token mean
    # a mixed multi-task window: each task keeps its share of micro-batches, whatever its units are
    assert [window_weight(u, t, [("a", 10), ("b", 4)], 1, 2) for t, u in (("a", 10), ("b", 4))] == [
        1,
        1,
    ]
    # two processes splitting 30 tokens 20 + 10
    assert [window_weight(u, "t", [("t", 30)], 2, 1) for u in (20, 10)] == [4 / 3, 2 / 3]
    # a causal LM scores every label but the first (nothing predicts it); a tagger every label
    features = [{"labels": [-100, -100, 5, 6]}, {"labels": [7, 8, -100]}]
    assert loss_units(features, HeadKind.CAUSAL_LM) == 3
    assert loss_units(features, HeadKind.TOKEN_CLASSIFICATION) == 4
    assert loss_units(features, HeadKind.CLASSIFICATION) == 2


def test_the_logged_lr_is_each_updates_own_and_a_small_warmup_ratio_still_warms_up(
    tiny_bert, sst2_dir, tmp_path, capsys, monkeypatch
) -> None:
    """4 updates at lr 0.1 with --warmup-ratio 0.1: rounded down that was no warmup at all (rounded up, as HF
    Trainer does, one update at lr 0, then linear decay); TensorBoard's train/lr was the next update's."""
    writer = RecordingWriter()
    monkeypatch.setattr(trainer, "tensorboard_writer", lambda output_dir, config: writer)
    used = []
    original = torch.optim.AdamW.step
    monkeypatch.setattr(
        torch.optim.AdamW,
        "step",
        lambda self, *a, **k: used.append(self.param_groups[0]["lr"]) or original(self, *a, **k),
    )
    args = train_args(tiny_bert, sst2_dir, tmp_path / "run", "--epochs", "1", "--learning-rate", "0.1")
    code, _, err = run_cli([*args, "--warmup-ratio", "0.1"], capsys)
    assert code == 0, err
    assert used == pytest.approx([0.0, 0.1, 0.1 * 2 / 3, 0.1 / 3])
    assert [value for tag, value, _ in writer.scalars if tag == "train/lr"] == pytest.approx(used)


def test_weight_decay_spares_biases_and_norm_weights_as_hf_trainer_does(tiny_bert) -> None:
    model = PromptModel(AutoModel.from_pretrained(tiny_bert), "finetune", PrefixConfig())
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    decayed, spared = trainer._decay_groups(model, 0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    spared_names = [names[id(p)] for p in spared["params"]]
    assert spared["weight_decay"] == 0.0 and spared_names
    assert all(name.endswith("bias") or "LayerNorm" in name for name in spared_names)
    assert not any(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in decayed["params"])
    assert len(decayed["params"]) + len(spared_names) == sum(1 for p in model.parameters() if p.requires_grad)
    assert len(trainer._decay_groups(model, 0.0)) == 1  # no decay: one group, the layout older states hold
