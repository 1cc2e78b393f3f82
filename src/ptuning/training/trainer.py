"""The optimisation loop of a run (training/engine.py builds everything it needs): one schedule of
micro-batches, the optimizer, evaluation, the best-dev checkpoint and the resumable state.

Training walks one schedule of micro-batches (a batch source per task, mixed; training/schedule.py);
single-task training is the one-task case. Resuming, data-parallel sharding, evaluation, the best-dev
checkpoint and the resumable state exist once, here.

Why accelerate rather than HF Trainer (docs/ARCHITECTURE.md): our model is a plain nn.Module whose
checkpoints are prompt-only safetensors, resuming must not unpickle anything, and evaluation is the task's
own decoding + metric. A short explicit loop over ``Accelerator`` keeps all of that visible while
``accelerate launch`` / ``torchrun`` still give DDP and multi-node without code changes (the frozen backbone is
sharded by ``--shard-backbone``; accelerate's DeepSpeed and FSDP plugins are refused, not wired in).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_parameter_names

from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import ConfigError
from ptuning.core.fingerprint import FINGERPRINT_VERSION
from ptuning.core.model import PromptModel
from ptuning.core.packing import pack_features, segment_labels
from ptuning.generation import generate_task_outputs, is_generative
from ptuning.tasks.base import Task
from ptuning.tasks.collate import collate
from ptuning.training.config import TrainConfig
from ptuning.training.data import Split, TaskData, TaskPlan
from ptuning.training.inference import feature_length, predict_outputs
from ptuning.training.learning_check import label_prior_loss, not_learning
from ptuning.training.report import TENSORBOARD_DIR
from ptuning.training.schedule import (
    apportion,
    loss_units,
    mixed_schedule,
    process_share,
    task_probabilities,
    window_weight,
)
from ptuning.training.sharding import average_replicated_gradients, reshard_backbone
from ptuning.training.state import load_training_state, restore_rng, rng_states, save_training_state

BEST_DIR = "checkpoint"  # the best-dev prompt checkpoint inside output_dir


class TrainingDivergedError(RuntimeError):
    """The loss or the trained weights stopped being finite numbers; nothing after that point is kept."""


class Trainer:
    """One schedule of micro-batches, the optimizer and what is kept of the run (history, best, state)."""

    def __init__(
        self,
        config: TrainConfig,
        accelerator: Accelerator,
        model: PromptModel,
        tokenizer: Any,
        data: list[TaskData],
        output_dir: Path,
    ) -> None:
        self.config, self.accelerator = config, accelerator
        self.tokenizer, self.output_dir = tokenizer, output_dir
        self.data = {item.task.name: item for item in data}
        self.single = not config.is_multitask
        self.report = model.trainable_parameters()
        label = self._names[0] if self.single else f"MPT-2 {'+'.join(self._names)}"
        accelerator.print(f"{label} · {config.method} · {config.model}: {self.report}")
        self._plan_schedule()
        self._build_optimizer(model)
        self.progress = _fresh_progress(self._names)
        self.progress["train_data"] = {
            name: train_digest(item.train.features) for name, item in self.data.items()
        }
        self.progress["eval_data"] = {
            name: {"dev": eval_digest(item.dev), "test": eval_digest(item.test)}
            for name, item in self.data.items()
        }
        self.progress["base_model"] = {
            "fingerprint": model.base_fingerprint,
            "fingerprint_version": FINGERPRINT_VERSION,
        }
        self._counted_window: tuple[int, list[tuple[str, int]]] = (0, [])  # _window_units' last window
        self._window_losses: list[tuple[str, float, int]] = []  # (task, loss, labelled units) of this window
        self._update_lr = 0.0  # the learning rate of the last update (the scheduler already holds the next)
        if config.resume:
            self._resume(model)
        self.sharded = config.shard_backbone
        self._prepare(model)
        if accelerator.num_processes > 1 and self.progress["micro"] == 0:
            # set_seed gave every process one random stream, so dropout drew the same masks on each process's
            # share of a batch; the weights are rank 0's already (prepare broadcast them) and the batch
            # schedule is planned, so from here each process draws its own. A resumed run restored its own.
            torch.manual_seed(config.seed + accelerator.process_index)
        self.clip_norm = self._clip_norm()
        self.writer = tensorboard_writer(output_dir, config) if accelerator.is_main_process else None
        # a --resume of a run with nothing left to train or evaluate (the engine then keeps its summary)
        self.finished = self.progress["micro"] == self.total_micro and not self._evaluation_missing()
        # what a model that ignores its input scores: the yardstick of "has it learned anything?"
        self.prior_losses = {
            name: label_prior_loss(item.task, item.train.features) for name, item in self.data.items()
        }

    @property
    def _names(self) -> list[str]:
        return list(self.data)

    def _build_optimizer(self, model: PromptModel) -> None:
        """AdamW over the trainable parameters, with linear warmup then decay over the run's updates.

        Weight decay spares biases and norm weights, as HF Trainer and the reference code decay. The warmup
        rounds up, as HF Trainer does: rounded down, ``--warmup-ratio 0.1`` over 5 updates warmed up none."""
        config = self.config
        self.trainable = [p for p in model.parameters() if p.requires_grad]  # also what --max-grad-norm clips
        self.optimizer = torch.optim.AdamW(
            _decay_groups(model, config.weight_decay),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        warmup = math.ceil(config.warmup_ratio * self.total_updates)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, warmup, self.total_updates)
        if warmup >= self.total_updates > 0:  # the warm-up starts at lr 0: one update would train nothing
            self.accelerator.print(
                f"warning: --warmup-ratio {config.warmup_ratio:g} warms up all {self.total_updates} update(s) of "
                f"this run (the first runs at lr 0): the learning rate never reaches --learning-rate "
                f"{config.learning_rate:g}; lower --warmup-ratio or train longer"
            )

    def _prepare(self, model: PromptModel) -> None:
        """Hand the model and optimizer to accelerate (devices, DDP, mixed precision).

        A sharded backbone is already placed and split (engine.train); its prefixes and heads are replicated
        with their gradients averaged in _update, so the model is not wrapped in DDP: only the optimizer is
        prepared (fp16 loss scaling), and autocast is applied in _step.
        """
        accelerator = self.accelerator
        if self.sharded:
            self.model, self.optimizer = model, accelerator.prepare(self.optimizer)
        else:
            self.model, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.unwrapped: PromptModel = accelerator.unwrap_model(self.model)

    # ----------------------------------------------------------------------------------- schedule
    def _plan_schedule(self) -> None:
        """How many micro-batches and updates, and which batch comes when.

        An accumulation window never spans the end of a nominal epoch (the epoch's last micro-batches make a
        shorter window), so a run updates ceil(epoch_batches / accumulation) times per epoch.
        """
        config = self.config
        lengths = {name: [feature_length(f) for f in item.train.features] for name, item in self.data.items()}
        self.sizes = {name: len(values) for name, values in lengths.items()}
        self.probabilities = task_probabilities(self.sizes, config.sampling, config.temperature)
        self.epoch_steps = sum(math.ceil(size / config.batch_size) for size in self.sizes.values())
        accumulation = config.gradient_accumulation_steps
        updates_per_epoch = math.ceil(self.epoch_steps / accumulation)
        self.total_updates = math.ceil(updates_per_epoch * config.epochs)
        if config.max_steps and config.max_steps > self.total_updates:  # a bound, not a length: say so
            self.accelerator.print(
                f"note: --max-steps {config.max_steps} is past the {self.total_updates} updates of --epochs "
                f"{config.epochs:g}; the run stops at {self.total_updates} (raise --epochs to train longer)"
            )
        elif config.max_steps:
            self.total_updates = config.max_steps
        full_epochs, rest = divmod(self.total_updates, updates_per_epoch)
        self.total_micro = full_epochs * self.epoch_steps + min(rest * accumulation, self.epoch_steps)
        self.schedule = mixed_schedule(
            lengths,
            self.probabilities,
            self.total_micro,
            config.batch_size,
            config.seed,
            config.group_by_length,
            spread_seeds=config.is_multitask,
        )
        self.counts = apportion(self.probabilities, self.total_micro)
        if not self.single:
            self.accelerator.print(
                "mixing: "
                + ", ".join(
                    f"{n} n={self.sizes[n]} p={self.probabilities[n]:.3f} batches={self.counts[n]}"
                    for n in self._names
                )
            )
            for name in [n for n in self._names if not self.counts[n]]:
                self.accelerator.print(
                    f"warning: task {name} gets no training batch in these {self.total_micro} micro-batches: its "
                    "head stays as initialised; train longer or raise --temperature"
                )

    def _closes_window(self, micro: int) -> bool:
        """Whether micro-batch number ``micro`` (1-based) ends an accumulation window (an optimizer update)."""
        in_epoch = (micro - 1) % self.epoch_steps + 1
        accumulation = self.config.gradient_accumulation_steps
        return in_epoch % accumulation == 0 or in_epoch == self.epoch_steps or micro == self.total_micro

    # ----------------------------------------------------------------------------------- the loop
    def run(self) -> None:
        self.model.train()
        start = self.progress["micro"]
        with tqdm(
            total=self.total_micro,
            initial=start,
            desc="MPT-2" if not self.single else "train",
            # on the main process ``disable`` is left to tqdm, so TQDM_DISABLE=1 silences the bar
            **({} if self.accelerator.is_main_process else {"disable": True}),
        ) as bar:  # closed (its line ended) before any error is printed
            for micro in range(start + 1, self.total_micro + 1):
                name, indices = self.schedule[micro - 1]
                loss = self._step(micro, name, indices, sync=self._closes_window(micro))
                self._advance(micro, name, loss)
                bar.update(1)
                bar.set_postfix(**({} if self.single else {"task": name}), loss=f"{loss:.4f}")
        if self._evaluation_missing():
            self._evaluate()  # a resumed run that had finished its batches but not its last evaluation
            self._save_state()
        self.accelerator.wait_for_everyone()

    def _evaluation_missing(self) -> bool:
        return self.progress.get("evaluated_update") != self.progress["update"]

    def _window_units(self, micro: int) -> tuple[int, list[tuple[str, int]]]:
        """The first micro-batch (1-based) of the accumulation window holding ``micro``, and (task, labelled
        units of the whole global batch) for each of its micro-batches: counted once per window, not per step."""
        first = micro
        while first > 1 and not self._closes_window(first - 1):
            first -= 1
        if self._counted_window[0] != first:
            last = micro
            while not self._closes_window(last):
                last += 1
            units = [(name, self._units(name, indices)) for name, indices in self.schedule[first - 1 : last]]
            self._counted_window = (first, units)
        return self._counted_window

    def _units(self, name: str, indices: list[int]) -> int:
        features = self.data[name].train.features
        return loss_units([features[i] for i in indices], self.data[name].task.head)

    def _step(self, micro: int, name: str, indices: list[int], sync: bool) -> float:
        """Forward and backward of this process's share of one global batch; an optimizer update if ``sync``.

        The loss is weighted so that the window's update is the one-process mean over all its labelled units
        (``window_weight``); the number returned is the global batch's own mean, for the history."""
        accelerator = self.accelerator
        rank, world = accelerator.process_index, accelerator.num_processes
        first, window = self._window_units(micro)
        total = window[micro - first][1]
        own = total if world == 1 else self._units(name, indices[rank::world])
        weight = window_weight(own, name, window, world, self.config.gradient_accumulation_steps)
        shown = own * world / total if own else 0.0  # this share's part of the batch's own mean (history)
        features = self.data[name].train.features
        batch = self._batch(name, [features[i] for i in process_share(indices, rank, world)])
        tick = time.perf_counter()
        # DDP averages gradients across processes only when a window closes
        quiet = accelerator.no_sync(self.model) if not sync else contextlib.nullcontext()
        autocast = accelerator.autocast() if self.sharded else contextlib.nullcontext()
        with quiet:
            with autocast:
                loss = self.model(**batch, task=name).loss
            if not own:  # a share without labelled units still joins the all-reduce; its mean is 0/0
                loss = loss.nan_to_num(0.0)
            value = self._global_loss(loss.detach() * shown)
            if not math.isfinite(value):
                self._diverged(f"the {name} training loss is {value}")
            accelerator.backward(loss * weight)  # accelerate divides by the accumulation steps
        if sync:
            self._update()
        self.progress["train_seconds"] += time.perf_counter() - tick
        self.progress["seen_examples"] += len(indices)
        return value

    def _update(self) -> None:
        """One optimizer update from the gradients accumulated over the window that just closed."""
        if self.sharded:  # what DDP's reducer does otherwise: the global batch's mean gradient
            average_replicated_gradients(self.unwrapped)
        if self.clip_norm:
            self._clip_gradients(self.clip_norm)
        self._update_lr = self.optimizer.param_groups[0]["lr"]  # what TensorBoard logs for this update
        try:
            self.optimizer.step()
        except RuntimeError as error:  # e.g. a step size beyond float32 range
            if "overflow" not in str(error):
                raise
            self._diverged(f"the optimizer step overflowed ({error})")
        self.scheduler.step()
        self.optimizer.zero_grad()

    def _clip_norm(self) -> float | None:
        """The norm this loop clips to: --max-grad-norm (0: none), except under DeepSpeed, whose engine clips by
        its own config's gradient_clipping; a difference is printed, not dropped in silence."""
        wanted = self.config.max_grad_norm
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            return wanted
        engine = self.accelerator.state.deepspeed_plugin.deepspeed_config.get("gradient_clipping") or None
        if engine != wanted:
            self.accelerator.print(
                f"note: --max-grad-norm {wanted or 0:g} is not applied under DeepSpeed: its engine clips to its "
                f"config's gradient_clipping ({engine or 'none'}); set that in the DeepSpeed config instead"
            )
        return None

    def _clip_gradients(self, max_norm: float) -> None:
        """Scale the window's gradients down to ``max_norm`` (accelerate unscales fp16 first); the norm before
        clipping goes to tensorboard, where an early blow-up shows."""
        norm = self.accelerator.clip_grad_norm_(self.trainable, max_norm)
        if self.writer is not None:
            self.writer.add_scalar("train/grad_norm", float(norm), self.progress["update"] + 1)

    def _batch(self, name: str, chosen: list[dict[str, Any]]) -> dict[str, Any]:
        """Model inputs of one micro-batch on the device: padded rows, or packed ones (--pack-sequences)."""
        device, pad = self.accelerator.device, self.tokenizer.pad_token_id
        if self.config.pack_sequences:
            kind = self.unwrapped.head_specs[name].kind
            packed = pack_features(chosen, self.config.max_length, pad).to(device)
            return {"packed": packed, "labels": segment_labels(chosen, kind).to(device)}
        return {key: value.to(device) for key, value in collate(chosen, pad).items()}

    def _global_loss(self, weighted: torch.Tensor) -> float:
        """The global batch's mean loss from each process's weighted share (weighted so that the shares' sum
        over processes is ``world`` times the global mean): the same number on every process,
        so the history matches one process and every process sees a divergence alike."""
        if self.accelerator.num_processes == 1:
            return float(weighted)
        total = self.accelerator.reduce(weighted.float().reshape(1), reduction="sum")
        return float(total) / self.accelerator.num_processes

    def _advance(self, micro: int, name: str, loss: float) -> None:
        """Book-keeping after micro-batch ``micro``: progress, logs, evaluation, saved state."""
        config, progress = self.config, self.progress
        progress["micro"] = micro
        progress["epoch"], progress["batch_in_epoch"] = divmod(micro, self.epoch_steps)
        progress["losses"][name].append(loss)
        first, window = self._window_units(micro)
        self._window_losses.append((name, loss, window[micro - first][1]))
        sync = self._closes_window(micro)
        if sync:
            progress["update"] += 1
            self._log_window_loss()
        update = progress["update"]
        epoch_end = micro % self.epoch_steps == 0
        last = micro == self.total_micro
        every_eval, every_save = config.eval_every_steps, config.save_every_steps
        if (sync and every_eval and update % every_eval == 0) or (epoch_end and not every_eval) or last:
            self._evaluate()
        if (sync and every_save and update % every_save == 0) or epoch_end or last:
            self._save_state()

    def _log_window_loss(self) -> None:
        """Each task's loss over the update's window (its micro-batches' means weighted by labelled units, as
        the update weighted them), not the last micro-batch's alone, which with accumulation plots one batch
        in N."""
        window, self._window_losses = self._window_losses, []
        if self.writer is None:
            return
        for name in dict.fromkeys(name for name, _, _ in window):
            parts = [(loss, units) for task, loss, units in window if task == name]
            units = sum(u for _, u in parts)
            mean = sum(loss * u for loss, u in parts) / units if units else parts[-1][0]
            self.writer.add_scalar(
                "train/loss" if self.single else f"train/loss/{name}", mean, self.progress["update"]
            )
        self.writer.add_scalar("train/lr", self._update_lr, self.progress["update"])

    # ----------------------------------------------------------------------------------- evaluation
    def _evaluate(self) -> None:
        """Score every task's dev (and test) split; save the checkpoint if the dev score improved."""
        progress = self.progress
        progress["evaluated_update"] = progress["update"]  # on every process: they decide alike what runs
        scores = None
        if self.sharded:  # every process takes part in every forward (the layers' all-gathers)
            scores = {name: self._score(item) for name, item in self.data.items()}
            reshard_backbone(self.unwrapped)  # before rank 0 alone reads state_dict() (it would reshard)
        if self.accelerator.is_main_process:
            self._check_finite_weights()
            epoch = progress["micro"] / self.epoch_steps
            if scores is None:
                scores = {name: self._score(item) for name, item in self.data.items()}
            entry = self._single_entry(epoch, scores) if self.single else self._multi_entry(epoch, scores)
            warnings = self._learning_warnings()
            if warnings:
                entry["warnings"] = warnings
            progress["history"].append(entry)
            progress["losses"] = {name: [] for name in self._names}
            score = entry["mean_primary"] if not self.single else entry.get("dev", {}).get(self._primary)
            self._keep_if_best(entry, epoch, score)
            self._log_scores(entry, epoch, score)
        self.accelerator.wait_for_everyone()

    def _learning_warnings(self) -> list[str]:
        """A warning per task whose mean training loss since the last evaluation is no lower than the label
        frequencies alone give (``learning_check``)."""
        warnings = []
        for name, losses in self.progress["losses"].items():
            warning = (
                not_learning(name, _mean(losses), self.prior_losses[name], method=self.config.method)
                if losses
                else None
            )
            if warning:
                warnings.append(warning)
        return warnings

    def _score(self, item: TaskData) -> dict[str, dict[str, float]]:
        with _plain_forward(self.unwrapped):
            return {
                role: evaluate(self.unwrapped, item.task, split, self.tokenizer, self.config)
                for role, split in (("dev", item.dev), ("test", item.test))
                if split is not None
            }

    @property
    def _primary(self) -> str:
        return self.data[self._names[0]].task.primary_metric

    def _single_entry(self, epoch: float, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
        entry: dict[str, Any] = {"epoch": epoch, "update": self.progress["update"]}
        entry.update(scores[self._names[0]])
        entry["train_loss"] = _mean(self.progress["losses"][self._names[0]])  # since the last evaluation
        return entry

    def _multi_entry(self, epoch: float, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "update": self.progress["update"],
            "epoch": epoch,
            "dev": {name: s["dev"] for name, s in scores.items() if "dev" in s},
            "train_loss": {name: _mean(values) for name, values in self.progress["losses"].items()},
        }
        tests = {name: s["test"] for name, s in scores.items() if "test" in s}
        if tests:
            entry["test"] = tests
        fractions = [primary_fraction(self.data[name].task, scores) for name, scores in entry["dev"].items()]
        entry["mean_primary"] = _mean([fraction for fraction in fractions if fraction is not None])
        return entry

    def _keep_if_best(self, entry: dict[str, Any], epoch: float, score: float | None) -> None:
        """Save the checkpoint if this evaluation beats the best so far (the first one always counts)."""
        progress = self.progress
        score = None if score is None or math.isnan(score) else score  # a NaN would win no later comparison
        if progress["best"] is None or (score is not None and score > progress["best"]):
            progress["best"], progress["best_epoch"], progress["best_update"] = score, epoch, entry["update"]
            self._save_best(entry)

    def _save_best(self, entry: dict[str, Any]) -> None:
        extra: dict[str, Any] = {"dev": entry.get("dev")}
        if not self.single:
            plans = [item.plan for item in self.data.values()]
            extra["mpt2"] = {**mixing_record(self.config, plans), "probabilities": self.probabilities}
        save_checkpoint(
            self.unwrapped,
            self.output_dir / BEST_DIR,
            {n: n for n in self._names},
            extra,
            task_options={n: self.data[n].plan.options for n in self._names},  # eval/predict/serve rebuild
            max_length=self.config.max_length,
        )

    def _log_scores(self, entry: dict[str, Any], epoch: float, score: float | None) -> None:
        if self.writer is not None:
            for split in ("dev", "test"):
                for key, values in entry.get(split, {}).items():
                    if isinstance(values, dict):  # multi-task: task -> metrics
                        for metric, value in values.items():
                            self.writer.add_scalar(f"{split}/{key}/{metric}", value, entry["update"])
                    else:
                        self.writer.add_scalar(f"{split}/{key}", values, entry["update"])
        if self.single:
            self.accelerator.print(f"epoch {epoch:.2f}: dev {entry.get('dev')} test {entry.get('test')}")
        else:
            self.accelerator.print(f"update {entry['update']}: mean dev {score} {entry['dev']}")
        for warning in entry.get("warnings", []):
            self.accelerator.print(f"warning: {warning}")

    # ----------------------------------------------------------------------------------- finite numbers
    def _check_finite_weights(self) -> None:
        for name, parameter in self.unwrapped.named_parameters():
            if parameter.requires_grad and not bool(torch.isfinite(parameter).all()):
                self._diverged(f"the trained weight {name} is no longer finite")

    def _diverged(self, what: str) -> None:
        best = self.progress["best_update"]
        kept = (
            f"the best checkpoint so far (update {best}) is kept" if best is not None else "nothing was saved"
        )
        clip = "" if self.clip_norm else ", clip the gradients (--max-grad-norm 1.0)"
        raise TrainingDivergedError(
            f"training diverged at update {self.progress['update'] + 1}: {what}; {kept}. Lower --learning-rate "
            f"(now {self.config.learning_rate:g}){clip} or check the data"
        )

    # ----------------------------------------------------------------------------------- resumable state
    def _save_state(self) -> None:
        """Replace OUTPUT_DIR/training_state (rank 0 writes; every rank contributes its RNG states)."""
        accelerator = self.accelerator
        rng = rng_states(accelerator)
        if self.sharded:
            reshard_backbone(self.unwrapped)  # see reshard_backbone: rank 0 alone reads state_dict() below
        if accelerator.is_main_process:
            self._check_finite_weights()
            save_training_state(
                self.output_dir,
                self._trainable_state(),
                self.optimizer,
                self.scheduler,
                dict(self.progress),
                rng,
                scaler.state_dict() if (scaler := getattr(accelerator, "scaler", None)) is not None else None,
            )
        accelerator.wait_for_everyone()

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return resumable_state(self.unwrapped)

    def _resume(self, model: PromptModel) -> None:
        restored = restore_training(
            self.output_dir,
            model,
            self.optimizer,
            self.scheduler,
            self.accelerator.process_index,
            self.accelerator.num_processes,
            getattr(self.accelerator, "scaler", None),  # fp16 on CUDA only
        )
        if restored is None:
            return
        self._check_same_train_data(restored)
        self._check_same_eval_data(restored)
        self._check_same_base_model(restored)
        self._complete_progress(restored)
        self.progress = restored
        self.accelerator.print(f"resumed after {restored['micro']} of {self.total_micro} batches")

    def _check_same_train_data(self, restored: dict[str, Any]) -> None:
        """Refuse training data changed since the state was saved: the resumed half would follow another schedule."""
        saved, now = restored.get("train_data"), self.progress["train_data"]
        if saved is not None and saved != now:  # a state saved before the digest was kept: nothing to compare
            changed = ", ".join(
                f"{name}: {saved.get(name, {}).get('examples')} examples there, {now[name]['examples']} now"
                for name in now
                if saved.get(name) != now[name]
            )
            raise ConfigError(
                f"{self.output_dir}: --resume would continue the saved run on other training data ({changed}; "
                "or the same number, changed); give the data it was started with, or train in a new --output-dir"
            )

    def _check_same_eval_data(self, restored: dict[str, Any]) -> None:
        """Refuse dev or test data changed since the state was saved: the history would hold scores on both
        versions side by side, and the best checkpoint be chosen across them."""
        saved, now = restored.get("eval_data"), self.progress["eval_data"]
        if saved is None:  # a state saved before these digests were kept: nothing to compare
            return
        changed = [
            f"{name}: {role} split {_split_name(item, role)} of {item.plan.data_dir}, "
            f"{_examples(saved.get(name, {}).get(role))} examples there, {_examples(now[name][role])} now"
            for name, item in self.data.items()
            for role in ("dev", "test")
            if saved.get(name, {}).get(role) != now[name][role]
        ]
        if changed:
            raise ConfigError(
                f"{self.output_dir}: --resume would continue the saved run on other evaluation data "
                f"({'; '.join(changed)}; or the same number, changed); give the data it was started with, or "
                "train in a new --output-dir"
            )

    def _check_same_base_model(self, restored: dict[str, Any]) -> None:
        """Refuse other backbone weights at the model path the run was started with: options compare the
        path only, and the saved prefix would go on training on a base it was not trained for."""
        saved, now = restored.get("base_model"), self.progress["base_model"]
        # a state saved before the fingerprint was kept, or with another fingerprint version: not comparable
        if saved is None or saved.get("fingerprint_version") != now["fingerprint_version"]:
            return
        if saved["fingerprint"] != now["fingerprint"]:
            raise ConfigError(
                f"{self.output_dir}: --resume would continue the saved run on another base model: "
                f"{self.config.model} holds other weights than it was trained on (fingerprint "
                f"{saved['fingerprint']} there, {now['fingerprint']} now); give the model it was started with, "
                "or train in a new --output-dir"
            )

    def _complete_progress(self, restored: dict[str, Any]) -> None:
        """Fill in the progress keys a state saved by an older version lacks (the data and base model as they
        are now, so that a later --resume compares with them)."""
        for key in ("train_data", "eval_data", "base_model"):
            restored.setdefault(key, self.progress[key])
        restored.setdefault(
            "micro", restored.get("epoch", 0) * self.epoch_steps + restored.get("batch_in_epoch", 0)
        )
        restored.setdefault("losses", {})
        # the throughput's counters, saved so that a resumed run's counts the work before the interruption too;
        # an older state has none, and its throughput counts the resumed part
        restored.setdefault("seen_examples", 0)
        restored.setdefault("train_seconds", 0.0)
        for name in self._names:
            restored["losses"].setdefault(name, [])
        for key in ("best_epoch", "best_update"):
            restored.setdefault(key, None)
        history = restored.get("history") or [{}]
        restored.setdefault("evaluated_update", history[-1].get("update"))

    # ----------------------------------------------------------------------------------- summary
    def summary(self, data_report: dict[str, Any], wall: float) -> dict[str, Any]:
        progress, report, config = self.progress, self.report, self.config
        best = next((h for h in progress["history"] if h["update"] == progress["best_update"]), {})
        common = {
            "method": config.method,
            "model": config.model,
            "seed": config.seed,
            "trainable_params": report.trainable,
            "total_params": report.total,
        }
        timing = {
            "updates": progress["update"],
            "train_examples_per_second": round(progress["seen_examples"] / progress["train_seconds"], 2)
            if progress["train_seconds"]
            else None,
            "wall_seconds": round(wall, 1),
            "checkpoint": str(self.output_dir / BEST_DIR),
            "data": data_report,
            "history": progress["history"],
            # the last evaluation's: a run that ends no better fit than the label frequencies says so
            "warnings": progress["history"][-1].get("warnings", []) if progress["history"] else [],
        }
        if self.single:
            return {
                "task": self._names[0],
                **common,
                "trainable_percent": round(report.percent, 4),
                "primary_metric": self._primary,
                "best_epoch": progress["best_epoch"],
                "dev": best.get("dev"),
                "test": best.get("test"),
                **timing,
            }
        return {
            "tasks": self._names,
            **common,
            "sampling": config.sampling,
            "temperature": sampling_temperature(config),
            "train_sizes": self.sizes,
            "probabilities": self.probabilities,
            "batches": self.counts,
            "best_update": progress["best_update"],
            "dev": best.get("dev"),
            "test": best.get("test"),
            "mean_primary": best.get("mean_primary"),
            **timing,
        }

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ============================================================================================ scoring
def evaluate(
    model: PromptModel, task: Task, split: Split, tokenizer: Any, config: TrainConfig
) -> dict[str, float]:
    """A split's metrics, decoded the task's own way (generated texts for causal-LM tasks)."""
    if is_generative(task):  # causal-LM tasks are scored on generated texts (ptuning.generation)
        outputs = generate_task_outputs(task, model, tokenizer, split.features, config.eval_batch_size)
    else:  # unpacked even under --pack-sequences: ``ptuning eval`` scores the checkpoint this way
        outputs = predict_outputs(
            model, task.name, split.features, tokenizer.pad_token_id, config.eval_batch_size
        )
    return task.score(split.examples, split.features, outputs)


@contextlib.contextmanager
def _plain_forward(model: PromptModel):
    """Evaluate through the class's forward. accelerate's --mixed-precision puts an autocast-wrapped forward
    on the model instance; the dev score that picks the checkpoint must be the one ``ptuning eval``,
    ``predict`` and ``serve`` reproduce, and they run the checkpoint without autocast."""
    wrapped = model.__dict__.pop("forward", None)
    try:
        yield
    finally:
        if wrapped is not None:
            model.forward = wrapped


# ============================================================================================ helpers


def train_digest(features: list[dict[str, Any]]) -> dict[str, Any]:
    """What a train split was, as kept with the resumable state: its feature count and a hash of its inputs and
    labels in order, so that --resume refuses data changed since (options alone could not tell)."""
    digest = hashlib.sha256()
    for feature in features:
        digest.update(json.dumps([feature.get("input_ids"), feature.get("labels")]).encode())
    return {"examples": len(features), "sha256": digest.hexdigest()[:16]}


def eval_digest(split: Split | None) -> dict[str, Any] | None:
    """What a dev or test split was, as kept with the resumable state (None: the run has none): train's digest
    of its features, plus its examples, which hold what scoring reads and features need not carry (SQuAD's
    other gold answers). An example's ``source`` (its file as spelled, and line) is left out: the same file
    under another spelling of its path is the same data."""
    if split is None:
        return None
    digest = hashlib.sha256(train_digest(split.features)["sha256"].encode())
    for example in split.examples:
        kept = {key: value for key, value in example.items() if key != "source"}
        digest.update(json.dumps(kept, sort_keys=True, default=str).encode())
    return {"examples": len(split.examples), "sha256": digest.hexdigest()[:16]}


def _split_name(item: TaskData, role: str) -> str:
    split = item.dev if role == "dev" else item.test
    return repr(split.name) if split is not None else "(none now)"


def _examples(digest: dict[str, Any] | None) -> int:
    """The example count a split digest records (0 for a split the run did not have)."""
    return digest["examples"] if digest is not None else 0


def _fresh_progress(names: list[str]) -> dict[str, Any]:
    """The progress of a run that has not trained yet (saved with the resumable state, restored on resume)."""
    return {
        "micro": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "update": 0,
        "best": None,
        "best_epoch": None,
        "best_update": None,
        "history": [],
        "losses": {name: [] for name in names},
        "evaluated_update": None,
        "seen_examples": 0,
        "train_seconds": 0.0,
    }


def resumable_state(model: PromptModel) -> dict[str, torch.Tensor]:
    """What the resumable state keeps of the model: prefixes and heads, or everything if nothing is frozen."""
    return {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(("prefixes.", "heads.")) or not model.method.freezes_backbone
    }


def _check_resumable_keys(model: PromptModel, saved: dict[str, torch.Tensor], output_dir: Path) -> None:
    """The saved state must hold every tensor the run trains: loading is not strict (a frozen backbone is not
    saved), so a tensor missing from the file would otherwise stay at its fresh initialisation, unsaid."""
    expected = set(resumable_state(model))
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or unexpected:
        where = Path(output_dir) / "training_state" / "state.safetensors"
        parts = [
            f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected))
            if names
        ]
        raise ConfigError(
            f"{where} does not match this run's model ({'; '.join(parts)}): "
            "train without --resume to start over"
        )


def restore_training(
    output_dir: Path,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    rank: int = 0,
    world: int = 1,
    grad_scaler: Any = None,
) -> dict[str, Any] | None:
    """Load the saved model, optimizer, scheduler, RNG and (fp16) loss-scaler states; the saved progress, or
    None if none."""
    resumed = load_training_state(output_dir)
    if resumed is None:
        return None
    model_state, optimizer_state, meta = resumed
    _check_resumable_keys(model, model_state, output_dir)
    model.load_state_dict(model_state, strict=False)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(meta["scheduler"])
    restore_rng(meta, rank, world)
    if grad_scaler is not None and meta.get("grad_scaler"):
        grad_scaler.load_state_dict(meta["grad_scaler"])
    return meta["progress"]


def mixing_record(config: TrainConfig, plans: list[TaskPlan]) -> dict[str, Any]:
    """How a multi-task run mixed its tasks (tasks, their data folders, sampling and temperature): one record
    for the run's config.json and its best checkpoint's ``mpt2`` entry, so the two cannot drift apart."""
    return {
        "tasks": [plan.name for plan in plans],
        "data_dirs": {plan.name: plan.data_dir for plan in plans},
        "sampling": config.sampling,
        "temperature": sampling_temperature(config),
    }


def sampling_temperature(config: TrainConfig) -> float | None:
    """The T a multi-task run drew its tasks with; None for proportional sampling, which reads none (a record
    of the default 2.0 there would claim a temperature the run never used)."""
    return config.temperature if config.sampling == "temperature" else None


def primary_fraction(task: Task, scores: dict[str, Any]) -> float | None:
    """A task's primary dev score as a fraction, so that in a multi-task mean SQuAD's F1 in percent does not
    outweigh an accuracy. NaN (the Pearson of a constant prediction) counts as 0, as MCC scores a constant
    prediction: a NaN mean would win no comparison and freeze the checkpoint."""
    score = scores.get(task.primary_metric)
    if score is None:
        return None
    return 0.0 if math.isnan(score) else score / task.primary_scale


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def tensorboard_writer(output_dir: Path, config: TrainConfig):
    if not config.log_tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: logging is optional
        return None
    return SummaryWriter(log_dir=str(output_dir / TENSORBOARD_DIR))


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters in AdamW groups: with weight decay, biases and norm weights go undecayed
    (HF Trainer's rule, through its own helper); without it, one group (the layout older states resume)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not weight_decay:
        return [{"params": [p for _, p in trainable]}]
    decayed = set(get_parameter_names(model, [nn.LayerNorm], _NO_DECAY_NAMES))
    return [
        {"params": [p for name, p in trainable if name in decayed]},
        {"params": [p for name, p in trainable if name not in decayed], "weight_decay": 0.0},
    ]


# HF Trainer's get_decay_parameter_names patterns: biases and every spelling of a norm layer's weight
_NO_DECAY_NAMES = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
