"""The systems a speed benchmark compares: ours (fp32 or with a bf16 backbone), PEFT + Trainer in three layouts
(and the careful one in bf16), PEFT in our loop, the reference recipe. Each loads once and runs a timed
training round and a timed inference round."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_common import (
    LEARNING_RATE,
    PEFT_MISSING,
    PREFIX_LENGTH,
    Data,
    Workload,
    pad_features,
    peft_available,
)

from ptuning.core.backbones import load_backbone
from ptuning.core.compilation import compile_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.dropout import set_dropout
from ptuning.core.kinds import HeadKind
from ptuning.core.model import FIRST_TOKEN_KINDS, HeadSpec, PromptModel
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.training.config import TrainConfig
from ptuning.training.inference import feature_length, inference_batches, predict_outputs

SYSTEMS = (
    "ours",
    "ours-bf16",
    "ours-compiled",
    "ours-bf16-compiled",
    "peft-trainer-grouped",
    "peft-trainer-grouped-bf16",
    "peft-trainer-grouped-autocast",
    "peft-trainer-grouped-bf16-compiled",
    "peft-trainer-grouped-compiled",
    "peft-trainer",
    "peft-trainer-dynamic",
    "peft-our-batching",
    "reference",
    "ours-no-dropout",
    "ours-whole-last-layer",
    "ours-bf16-whole-last-layer",
    "ours-mean-pooling",
    "ours-no-backbone-dropout",
    "ours-bf16-no-backbone-dropout",
    "peft-trainer-grouped-no-dropout",
    "peft-trainer-grouped-bf16-no-dropout",
)
BASELINE = "peft-trainer-grouped"  # (a''): what a careful PEFT + Trainer user runs
BF16_BASELINE = "peft-trainer-grouped-bf16"  # (a'') with its backbone loaded in bf16: the fastest bf16 (a'')
COMPILED_BASELINE = "peft-trainer-grouped-compiled"  # (a'') with TrainingArguments(torch_compile=True)
BF16_COMPILED_BASELINE = (
    "peft-trainer-grouped-bf16-compiled"  # the same with TrainingArguments(torch_compile)
)
# the systems whose per-round ratio to every other system is reported (the tables show the first two)
CONTENDERS = (
    "ours",
    "ours-bf16",
    "ours-compiled",
    "ours-bf16-compiled",
    "ours-no-backbone-dropout",
    "ours-bf16-no-backbone-dropout",
)
BF16_SYSTEMS = frozenset(
    {
        "ours-bf16",
        "ours-bf16-compiled",
        "ours-bf16-whole-last-layer",
        "ours-bf16-no-backbone-dropout",
        "peft-trainer-grouped-bf16",
        "peft-trainer-grouped-bf16-no-dropout",
        "peft-trainer-grouped-autocast",
        "peft-trainer-grouped-bf16-compiled",
    }
)


SYSTEM_LABELS = {
    "ours": "ours (sdpa, dynamic padding, length-grouped)",
    "ours-bf16": "ours, backbone stored in bf16 (prefixes, heads, loss fp32)",
    "ours-compiled": "ours with --compile (torch.compile, frozen weights folded at inference)",
    "ours-bf16-compiled": "ours-bf16 with --compile",
    "peft-trainer-grouped-bf16": "(a'') in bf16: backbone loaded with dtype=torch.bfloat16",
    "peft-trainer-grouped-autocast": "(a'') with TrainingArguments(bf16=True): CPU autocast",
    "peft-trainer-grouped-bf16-compiled": "(a'') in bf16 with TrainingArguments(torch_compile=True)",
    "peft-trainer-grouped-compiled": "(a'') with TrainingArguments(torch_compile=True)",
    "peft-trainer": "(a) PEFT + Trainer, padded to 128",
    "peft-trainer-dynamic": "(a') PEFT + Trainer, DataCollatorWithPadding",
    "peft-trainer-grouped": "(a'') PEFT + Trainer, DataCollatorWithPadding + group_by_length",
    "peft-our-batching": "(b) PEFT, our batching",
    "reference": "(c) reference recipe: pad 128, eager",
    "ours-no-dropout": "ours without prefix dropout (PEFT has none)",
    "ours-whole-last-layer": "ours with the last layer over every position (before the first-token readout)",
    "ours-bf16-whole-last-layer": "ours-bf16 with the last layer over every position",
    "ours-mean-pooling": "ours with --pooling mean (the pooling the checkpoint was trained with)",
    "ours-no-backbone-dropout": "ours with --backbone-dropout 0 (no dropout inside the backbone)",
    "ours-bf16-no-backbone-dropout": "ours-bf16 with --backbone-dropout 0",
    "peft-trainer-grouped-no-dropout": "(a'') with the backbone's dropout at 0 (from_pretrained(hidden_dropout_prob=0, "
    "attention_probs_dropout_prob=0))",
    "peft-trainer-grouped-bf16-no-dropout": "(a'') in bf16 with the backbone's dropout at 0",
}
# Systems that change how a pooled head reads the last layer: on a token-level task they would be ``ours``.
POOLED_HEAD_ONLY = frozenset({"ours-mean-pooling"})


@dataclass
class Round:
    seconds: float
    examples: int
    tokens: int  # tokens the model ran over, padding included (0 when its batches are not recorded)
    shapes: list[tuple[int, int]]  # (batch, length) of every batch, for the FLOP count
    eval_batch_size: int | None = None  # the eval batch a Trainer system predicted with (its fastest)
    first_token_only: bool = False  # the last layer's feed-forward ran for position 0 only (core.readout)


class PromptSystem:
    """Our core, as ``ours`` (sdpa, dynamic padding, grouped) or as the ``reference`` recipe.

    ``backbone_dtype="bf16"`` stores the frozen backbone in bf16 as ``ptuning train --backbone-dtype bf16``
    does (``load_backbone(dtype=...)``); the prefix table, head, optimizer and loss stay fp32.
    ``compile_backend`` compiles the backbone as ``--compile`` does (``core.compilation.compile_backbone``;
    None: eager): it pays its start-up in the warm-up rounds. ``first_token_readout=False`` runs the last
    layer over every position even for a [CLS] head (``core.readout``'s A/B). ``device`` is where the model
    and every batch go (``cuda`` for the GPU table, ``speed_gpu.py``). ``backbone_dropout`` sets every dropout
    of the backbone as ``ptuning train --backbone-dropout`` does (None: the model's own rates)."""

    def __init__(
        self,
        folder: str,
        data: Data,
        workload: Workload,
        reference: bool = False,
        prefix_dropout: float = 0.1,
        backbone_dtype: str = "fp32",
        compile_backend: str | None = None,
        first_token_readout: bool = True,
        pooling: str | None = None,
        device: str = "cpu",
        backbone_dropout: float | None = None,
    ) -> None:
        attention = "eager" if reference else "sdpa"
        backbone, _ = load_backbone(folder, attn_implementation=attention, dtype=backbone_dtype)
        if backbone_dropout is not None:  # as ptuning train --backbone-dropout sets it
            set_dropout(backbone, backbone_dropout)
        config = PrefixConfig(
            prefix_length=PREFIX_LENGTH,
            dropout=prefix_dropout,
            position_mode="shift" if reference else "keep",
        )
        self.model = PromptModel(backbone, "ptuning-v2", config)
        self.model.add_task("task", HeadSpec(data.kind, data.label_names, pooling))
        if not first_token_readout:  # the A/B's "before": the head reads position 0 of a full last layer
            self.model.reads_first_token = lambda task: False
        self.readout = self.model.reads_first_token("task")  # for the FLOP count
        self.device = torch.device(device)
        self.model.to(self.device)
        self.compile_backend = compile_backend
        if compile_backend is not None:
            compile_backbone(self.model, compile_backend)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=LEARNING_RATE, weight_decay=0.0)
        self.max_grad_norm = TrainConfig().max_grad_norm  # what ptuning train clips to (the Trainer does too)
        self.reference = reference
        self.data = data
        self.workload = workload
        self.train_features = pad_features(data.train, data.pad_id) if reference else data.train
        self.dev_features = pad_features(data.dev, data.pad_id) if reference else data.dev

    def train_round(self, seed: int) -> Round:
        self.model.train()
        shapes = []
        start = time.perf_counter()
        for indices in self.train_batches(seed):
            with torch.profiler.record_function("collate"):
                inputs, shape = self.training_inputs(indices)
            shapes.append(shape)
            with torch.profiler.record_function("forward"):
                loss = self.model(**inputs, task="task").loss
            with torch.profiler.record_function("backward"):
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                if self.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        synchronize(self.device)
        seconds = time.perf_counter() - start
        return Round(
            seconds,
            len(self.train_features),
            sum(b * t for b, t in shapes),
            shapes,
            first_token_only=self.readout,
        )

    def train_batches(self, seed: int) -> list[list[int]]:
        """The round's batches (indices): shuffled for the reference recipe, length-grouped for ours."""
        size = self.workload.batch_size
        if self.reference:
            order = np.random.default_rng(seed).permutation(len(self.train_features)).tolist()
            return [order[i : i + size] for i in range(0, len(order), size)]
        lengths = [feature_length(f) for f in self.train_features]
        return length_grouped_batches(lengths, size, seed=seed)

    def training_inputs(self, indices: list[int]) -> tuple[dict[str, Any], tuple[int, int]]:
        """The model's keyword inputs for one batch, and the (rows, length) its GEMMs run over."""
        batch = collate([self.train_features[i] for i in indices], self.data.pad_id)
        return {k: v.to(self.device) for k, v in batch.items()}, tuple(batch["input_ids"].shape[:2])

    def infer_round(self, seed: int) -> Round:
        start = time.perf_counter()
        if self.reference:
            shapes = self._infer_in_order()
        else:
            predict_outputs(
                self.model, "task", self.dev_features, self.data.pad_id, self.workload.eval_batch_size
            )
        seconds = time.perf_counter() - start
        if not self.reference:  # counted after the clock stops: the FLOP count is not ours' inference
            shapes = inference_shapes(self.dev_features, self.workload.eval_batch_size)
        return Round(
            seconds,
            len(self.dev_features),
            sum(b * t for b, t in shapes),
            shapes,
            first_token_only=self.readout,
        )

    @torch.no_grad()
    def _infer_in_order(self) -> list[tuple[int, int]]:
        self.model.eval()
        size, shapes = self.workload.eval_batch_size, []
        for first in range(0, len(self.dev_features), size):
            batch = collate(self.dev_features[first : first + size], self.data.pad_id)
            batch.pop("labels", None)
            self.model(**{k: v.to(self.device) for k, v in batch.items()}, task="task").logits.cpu()
            shapes.append(tuple(batch["input_ids"].shape[:2]))
        return shapes


def synchronize(device: torch.device) -> None:
    """Wait for the accelerator's queued kernels, so that a clock stopped after this counts them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_shapes(features: list[dict[str, Any]], batch_size: int) -> list[tuple[int, int]]:
    """(rows, length) of every batch ``predict_outputs`` runs, for the FLOP count."""
    batches = inference_batches(features, batch_size)
    return [(len(b), max(feature_length(features[i]) for i in b)) for b in batches]


def build_peft_model(
    folder: str, data: Data, dtype: torch.dtype | None = None, no_dropout: bool = False
) -> torch.nn.Module:
    """PEFT prefix tuning on an HF task model; ``dtype=torch.bfloat16`` loads the whole model in bf16 (PEFT
    keeps its prefix embedding fp32, but the classifier it trains is then bf16 too); ``no_dropout`` loads it
    with BERT's dropout rates at 0, as a PEFT user would (its classifier's dropout follows the hidden one)."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if data.kind is HeadKind.TOKEN_CLASSIFICATION:
        loader, task_type = AutoModelForTokenClassification, TaskType.TOKEN_CLS
    else:
        loader, task_type = AutoModelForSequenceClassification, TaskType.SEQ_CLS
    extra: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    if no_dropout:
        extra.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = loader.from_pretrained(folder, num_labels=len(data.label_names), **extra)  # sdpa: the default
    config = PrefixTuningConfig(
        task_type=task_type, num_virtual_tokens=PREFIX_LENGTH, prefix_projection=False
    )
    return get_peft_model(model, config)


class PeftOurBatchingSystem:
    """(b): PEFT's model in our loop with our batching and collation."""

    def __init__(self, folder: str, data: Data, workload: Workload) -> None:
        self.model = build_peft_model(folder, data)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=LEARNING_RATE, weight_decay=0.0)
        self.max_grad_norm = TrainConfig().max_grad_norm  # clipped as ours and the Trainer clip
        self.data = data
        self.workload = workload

    def train_round(self, seed: int) -> Round:
        lengths = [feature_length(f) for f in self.data.train]
        batches = length_grouped_batches(lengths, self.workload.batch_size, seed=seed)
        self.model.train()
        shapes = []
        start = time.perf_counter()
        for indices in batches:
            with torch.profiler.record_function("collate"):
                batch = collate([self.data.train[i] for i in indices], self.data.pad_id)
            shapes.append(tuple(batch["input_ids"].shape[:2]))
            with torch.profiler.record_function("forward"):
                loss = self.model(**batch).loss
            with torch.profiler.record_function("backward"):
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                if self.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        seconds = time.perf_counter() - start
        return Round(seconds, len(self.data.train), sum(b * t for b, t in shapes), shapes)

    @torch.no_grad()
    def infer_round(self, seed: int) -> Round:
        self.model.eval()
        order = sorted(range(len(self.data.dev)), key=lambda i: -feature_length(self.data.dev[i]))
        size, shapes = self.workload.eval_batch_size, []
        start = time.perf_counter()
        for first in range(0, len(order), size):
            batch = collate([self.data.dev[i] for i in order[first : first + size]], self.data.pad_id)
            batch.pop("labels", None)
            self.model(**batch).logits.numpy()
            shapes.append(tuple(batch["input_ids"].shape[:2]))
        seconds = time.perf_counter() - start
        return Round(seconds, len(self.data.dev), sum(b * t for b, t in shapes), shapes)


@dataclass(frozen=True)
class TrainerLayout:
    """How a PEFT + Trainer user feeds the batches: the only difference between (a), (a') and (a'')."""

    dynamic_padding: bool  # HF's padding collator, instead of every row padded to max_length
    group_by_length: (
        bool  # train_sampling_strategy="group_by_length" (transformers 5 has no group_by_length flag)
    )


TRAINER_LAYOUTS = {
    "peft-trainer": TrainerLayout(dynamic_padding=False, group_by_length=False),
    "peft-trainer-dynamic": TrainerLayout(dynamic_padding=True, group_by_length=False),
    "peft-trainer-grouped": TrainerLayout(dynamic_padding=True, group_by_length=True),
}

# The two ways a PEFT + Trainer user gets bf16 on CPU, both on the (a'') layout. Both train and predict with
# PEFT 0.21.2 on transformers 5.23: "weights" loads the model with dtype=torch.bfloat16 (PEFT keeps its prefix
# embedding fp32; the classifier it trains is bf16), "autocast" keeps fp32 weights and sets
# TrainingArguments(bf16=True). A probe on MiniLM (1 thread, loaded machine) ran "weights" faster in both
# modes (training ~66 vs ~59 ex/s, prediction ~270-320 vs ~230, fp32 ~30-40 / ~115-120): it is the bf16 (a'').
# HF Trainer.predict groups the dev set by length as well when train_sampling_strategy="group_by_length"
# (transformers 5.23's _get_eval_sampler: LengthGroupedSampler, i.e. about four random megabatches of at most
# 50 batches each, each sorted by length), so a larger eval batch means megabatches of fewer batches and more
# padding: its eval batch trades padding against the size of the matrix products. Measured (interleaved,
# 1 thread, loaded machine, SST-2 dev 512): (a'') 111 ex/s at 32, 91 at 64, 54 at 128 (bf16: 287 / 250 / 177).
# A Trainer system predicts at each of these every round and its fastest counts (``PeftTrainerSystem.infer_round``).
TRAINER_EVAL_BATCH_SIZES = (16, 32, 64)
TRAINER_PRECISIONS = {
    "peft-trainer-grouped-compiled": "fp32",
    "peft-trainer-grouped-no-dropout": "fp32",
    "peft-trainer-grouped-bf16-no-dropout": "weights",
    "peft-trainer-grouped-bf16": "weights",
    "peft-trainer-grouped-autocast": "autocast",
    "peft-trainer-grouped-bf16-compiled": "weights",
}
# What a careful user tries against our --compile: TrainingArguments(torch_compile=True) on (a'') in fp32
# and in bf16. In the idle rounds of 2026-12-02 09:34 the bf16 one predicted x1.03 / x1.04 faster than
# without (SST-2 / CoNLL-2003).
TRAINER_COMPILED = frozenset({"peft-trainer-grouped-compiled", "peft-trainer-grouped-bf16-compiled"})


def trainer_collator(layout: TrainerLayout, folder: str, kind: HeadKind) -> Callable[..., Any]:
    """HF's dynamic-padding collator for the task kind, or ``default_data_collator`` for pre-padded rows."""
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        default_data_collator,
    )

    if not layout.dynamic_padding:
        return default_data_collator
    tokenizer = AutoTokenizer.from_pretrained(folder)
    token_level = kind is HeadKind.TOKEN_CLASSIFICATION
    return (DataCollatorForTokenClassification if token_level else DataCollatorWithPadding)(tokenizer)


class SplitSizedGrouping(torch.utils.data.Sampler):
    """HF's ``LengthGroupedSampler`` with the megabatch HF would use on the whole split a benchmark samples.

    HF sorts by length within random megabatches of ``min(n // (4 x batch), 50)`` batches, ``n`` being the
    dataset's size: on a round's 256 examples that is 2 batches, where a real run over SST-2's 67,349 (or
    CoNLL-2003's 14,041) sorts 50 at a time and pads far less. Same lengths, generator and order of work as
    HF's sampler; only the megabatch follows the split."""

    def __init__(self, grouped: Any, split_size: int) -> None:
        self.grouped = grouped
        self.mega_batch_mult = max(1, min(split_size // (4 * grouped.batch_size), 50))

    def __len__(self) -> int:
        return len(self.grouped)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        grouped = self.grouped
        return iter(
            get_length_grouped_indices(
                grouped.lengths, grouped.batch_size, self.mega_batch_mult, generator=grouped.generator
            )
        )


def split_sized_trainer(split_sizes: tuple[int, int]) -> type:
    """HF's Trainer whose length-grouped samplers (training, and evaluation: transformers 5.23 groups there
    too) size their megabatches by ``split_sizes`` (train, dev); 0 leaves HF's own."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    def resized(sampler: Any, split_size: int) -> Any:
        grouped = isinstance(sampler, LengthGroupedSampler) and split_size > 0
        return SplitSizedGrouping(sampler, split_size) if grouped else sampler

    class SplitSizedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return resized(super()._get_train_sampler(train_dataset), split_sizes[0])

        def _get_eval_sampler(self, eval_dataset: Any) -> Any:
            return resized(super()._get_eval_sampler(eval_dataset), split_sizes[1])

    return SplitSizedTrainer


def make_trainer(
    model: torch.nn.Module,
    layout: TrainerLayout,
    collator: Callable[..., Any],
    train_features: list[dict[str, Any]],
    work_dir: Path,
    workload: Workload,
    seed: int,
    learning_rate: float = LEARNING_RATE,
    epochs: float = 1.0,
    max_steps: int | None = None,
    callbacks: tuple[Any, ...] = (),
    autocast_bf16: bool = False,
    torch_compile: bool = False,
    split_sizes: tuple[int, int] = (0, 0),
    use_cpu: bool = True,
):
    """An HF Trainer with its defaults, except batch sizes, lr, no reports or saves, and the layout's sampler;
    ``autocast_bf16`` sets ``TrainingArguments(bf16=True)`` (CPU autocast in training and prediction),
    ``torch_compile`` its ``torch_compile=True``; ``split_sizes`` (train, dev) the sizes of the splits the
    features were sampled from, so that length grouping works as on the whole split (``SplitSizedGrouping``);
    ``use_cpu=False`` lets the Trainer take the accelerator."""
    from transformers import TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=workload.batch_size,
        per_device_eval_batch_size=workload.eval_batch_size,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps or -1,
        seed=seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=use_cpu,
        train_sampling_strategy="group_by_length" if layout.group_by_length else "random",
        bf16=autocast_bf16,
        torch_compile=torch_compile,
    )
    return split_sized_trainer(split_sizes)(
        model=model,
        args=arguments,
        train_dataset=train_features,
        data_collator=collator,
        callbacks=list(callbacks),
    )


def loop_timer(model: torch.nn.Module) -> Any:
    """A ``TrainerCallback`` timing ``Trainer.train()``'s loop, from ``on_train_begin`` to ``on_train_end``
    (its ``seconds`` once ``train()`` returns); transformers is imported late here, like everywhere in this file."""
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        def __init__(self, device: torch.device) -> None:
            self.device, self.started, self.seconds = device, 0.0, 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            synchronize(self.device)
            self.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.started

    return LoopTimer(next(model.parameters()).device)


class PeftTrainerSystem:
    """(a) / (a') / (a''): PEFT + HF Trainer, fed as ``layout`` says (padding, then length grouping)."""

    def __init__(
        self,
        folder: str,
        data: Data,
        workload: Workload,
        layout: TrainerLayout = TRAINER_LAYOUTS["peft-trainer"],
        precision: str = "fp32",  # "fp32" | "weights" (bf16 model) | "autocast" (TrainingArguments(bf16=True))
        torch_compile: bool = False,  # TrainingArguments(torch_compile=True)
        device: str = "cpu",  # "cuda": the Trainer moves the model and its batches there
        no_dropout: bool = False,  # the backbone loaded with its dropout rates at 0
    ) -> None:
        if precision not in ("fp32", "weights", "autocast"):
            raise ValueError(f"precision must be fp32, weights or autocast; got {precision!r}")
        dtype = torch.bfloat16 if precision == "weights" else None
        self.model = build_peft_model(folder, data, dtype, no_dropout)
        self.autocast_bf16 = precision == "autocast"
        self.torch_compile = torch_compile
        self.use_cpu = device == "cpu"
        self.data = data
        self.workload = workload
        self.layout = layout
        self.dynamic = layout.dynamic_padding
        self.collator = trainer_collator(layout, folder, data.kind)
        if self.dynamic:
            self.train_features, self.dev_features = data.train, data.dev
        else:
            self.train_features = pad_features(data.train, data.pad_id)
            self.dev_features = pad_features(data.dev, data.pad_id)
        # what the timed predict gets: unlabelled rows, as a user's data (with labels the Trainer would also
        # compute the loss and gather the labels inside the clock; ours predicts without targets)
        self.predict_features = [{k: v for k, v in f.items() if k != "labels"} for f in self.dev_features]
        self.work_dir = Path(tempfile.mkdtemp(prefix="ptuning-speed-trainer-"))

    def trainer(
        self,
        seed: int,
        epochs: float = 1.0,
        learning_rate: float = LEARNING_RATE,
        max_steps: int | None = None,
        callbacks: tuple[Any, ...] = (),
        eval_batch_size: int | None = None,
    ):
        workload = self.workload
        if eval_batch_size is not None:
            workload = replace(workload, eval_batch_size=eval_batch_size)
        return make_trainer(
            self.model,
            self.layout,
            self.collator,
            self.train_features,
            self.work_dir,
            workload,
            seed,
            learning_rate,
            epochs,
            max_steps,
            callbacks,
            self.autocast_bf16,
            self.torch_compile,
            self.data.split_sizes,
            self.use_cpu,
        )

    def train_round(self, seed: int) -> Round:
        """Timed from the Trainer's ``on_train_begin`` to its ``on_train_end``: the loop over batches, as ours
        is timed. ``train()`` first runs ``accelerator.free_memory()`` (a full ``gc.collect()``, 0.2-0.3 s
        here): once per run for a user, but once per 8-step round here, where timing it cost (a'') 13-16 % of
        its examples/s until 2026-12-06."""
        timer = loop_timer(self.model)
        trainer = self.trainer(seed, callbacks=(timer,))
        with self.batch_shapes() as shapes:
            trainer.train()
        return Round(timer.seconds, len(self.train_features), sum(b * t for b, t in shapes), shapes)

    def infer_round(self, seed: int) -> Round:
        """The fastest of ``TRAINER_EVAL_BATCH_SIZES``, each run once this round: never a weaker batch than
        this system's best."""
        rounds = [self._infer_at(seed, size) for size in TRAINER_EVAL_BATCH_SIZES]
        return min(rounds, key=lambda r: r.seconds)

    def _infer_at(self, seed: int, size: int) -> Round:
        trainer = self.trainer(seed, eval_batch_size=size)
        with self.batch_shapes() as shapes:
            start = time.perf_counter()
            trainer.predict(self.predict_features)
            seconds = time.perf_counter() - start
        return Round(seconds, len(self.predict_features), sum(b * t for b, t in shapes), shapes, size)

    @contextlib.contextmanager
    def batch_shapes(self) -> Iterator[list[tuple[int, int]]]:
        """The (rows, length) of every batch the Trainer feeds the model, read by a forward pre-hook: the
        Trainer builds its batches itself (its sampler and collator), so this is how their FLOPs are counted.
        Under ``torch_compile`` the list stays empty: a hook with a side effect does not belong in a traced
        model, and the compiled system's FLOPs are those of its eager twin."""

        shapes: list[tuple[int, int]] = []

        def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            shapes.append((int(ids.shape[0]), int(ids.shape[1])))

        handle = (
            None if self.torch_compile else self.model.register_forward_pre_hook(record, with_kwargs=True)
        )
        try:
            yield shapes
        finally:
            if handle is not None:
                handle.remove()


def build_system(name: str, folder: str, data: Data, workload: Workload, device: str = "cpu"):
    if device != "cpu":  # the systems the GPU table compares
        return build_device_system(name, folder, data, workload, device)
    if name == "ours":
        return PromptSystem(folder, data, workload)
    if name == "ours-bf16":
        return PromptSystem(folder, data, workload, backbone_dtype="bf16")
    if name in ("ours-compiled", "ours-bf16-compiled"):
        return PromptSystem(
            folder,
            data,
            workload,
            backbone_dtype="bf16" if "bf16" in name else "fp32",
            compile_backend="inductor",
        )
    if name in ("ours-whole-last-layer", "ours-bf16-whole-last-layer"):
        dtype = "bf16" if "bf16" in name else "fp32"
        return PromptSystem(folder, data, workload, backbone_dtype=dtype, first_token_readout=False)
    if name == "ours-no-dropout":  # PEFT has no prefix dropout: this row shows what ours costs without it
        return PromptSystem(folder, data, workload, prefix_dropout=0.0)
    if name in ("ours-no-backbone-dropout", "ours-bf16-no-backbone-dropout"):  # --backbone-dropout 0
        dtype = "bf16" if "bf16" in name else "fp32"
        return PromptSystem(folder, data, workload, backbone_dtype=dtype, backbone_dropout=0.0)
    if name == "ours-mean-pooling":  # no first-token readout: the mean needs every position's last layer
        return PromptSystem(folder, data, workload, pooling="mean")
    if name == "reference":
        return PromptSystem(folder, data, workload, reference=True)
    if name == "peft-our-batching":
        return PeftOurBatchingSystem(folder, data, workload)
    if name in TRAINER_LAYOUTS:
        return PeftTrainerSystem(folder, data, workload, TRAINER_LAYOUTS[name])
    if name in TRAINER_PRECISIONS:
        layout = TRAINER_LAYOUTS[BASELINE]
        return PeftTrainerSystem(
            folder,
            data,
            workload,
            layout,
            TRAINER_PRECISIONS[name],
            torch_compile=name in TRAINER_COMPILED,
            no_dropout=name.endswith("-no-dropout"),
        )
    raise ValueError(f"unknown system {name!r}; expected one of {', '.join(SYSTEMS)}")


DEVICE_SYSTEMS = ("ours", "ours-bf16", BASELINE, BF16_BASELINE, "peft-trainer-grouped-autocast")


def build_device_system(name: str, folder: str, data: Data, workload: Workload, device: str):
    """``DEVICE_SYSTEMS`` on an accelerator: ours in fp32 or with a bf16 backbone, (a'') in fp32, in bf16
    weights, or with fp32 weights under ``TrainingArguments(bf16=True)`` (autocast, the usual GPU recipe)."""
    if name not in DEVICE_SYSTEMS:
        raise ValueError(f"on {device} the systems are {', '.join(DEVICE_SYSTEMS)}; got {name!r}")
    if name.startswith("ours"):
        dtype = "bf16" if name == "ours-bf16" else "fp32"
        return PromptSystem(folder, data, workload, backbone_dtype=dtype, device=device)
    precision = TRAINER_PRECISIONS.get(name, "fp32")
    return PeftTrainerSystem(folder, data, workload, TRAINER_LAYOUTS[BASELINE], precision, device=device)


def applicable_systems(names: list[str], data: Data) -> list[str]:
    """``names`` without the systems that would only repeat ``ours`` on this task (a pooled-head change on a
    token-level task), saying which were left out."""
    pooled = HeadKind(data.kind) in FIRST_TOKEN_KINDS
    left_out = [n for n in names if n in POOLED_HEAD_ONLY and not pooled]
    if left_out:
        print(f"not run on a {data.kind} task (no pooled head): {', '.join(left_out)}", flush=True)
    return [n for n in names if n not in left_out]


def available_systems(names: tuple[str, ...] = SYSTEMS) -> list[str]:
    if peft_available():
        return list(names)
    print(PEFT_MISSING, flush=True)
    return [n for n in names if not n.startswith("peft")]
