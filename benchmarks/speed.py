"""Speed and memory benchmark: our P-tuning v2 training and inference against PEFT and the reference recipe.

Systems (all P-tuning v2 with a 16-slot prefix, batch 32 for training and 64 for inference, lr 1e-2):

    ours            PromptModel, sdpa, dynamic padding, length-grouped batches (training) and
                    longest-first batches (inference) -- what ``ptuning train`` / ``predict_outputs`` do
    peft-trainer    (a) PEFT 0.21.2 PrefixTuningConfig(prefix_projection=False) on AutoModelFor{Sequence,
                    Token}Classification, trained with HF Trainer's defaults; inputs padded to max_length=128
                    as with ``tokenizer(..., padding="max_length")`` + ``default_data_collator``
    peft-trainer-dynamic
                    (a') the same, with HF's dynamic-padding collator (DataCollatorWithPadding /
                    DataCollatorForTokenClassification) and Trainer's random batches
    peft-our-batching
                    (b) the same PEFT model in our loop with our batching: isolates the prefix mechanism
    reference       (c) the reference P-tuning v2 recipe on our core: every batch padded to 128, eager
                    attention, shuffled batches, positions shifted by P

Every system is loaded once into one process; rounds are interleaved (each round runs every system, in a
rotated order) after warm-up rounds, and the median over rounds is reported, as are ratios to a baseline
taken round by round. That is what keeps the comparison fair on a machine shared with other jobs. Peak RSS
is measured per system in a fresh subprocess.

    python benchmarks/speed.py --throughput sst2-minilm       # also conll2003-minilm, sst2-bert-base, ...
    python benchmarks/speed.py --memory sst2-minilm
    python benchmarks/speed.py --scaling                      # step time vs prefix length and vs length
    python benchmarks/speed.py --profile sst2-minilm
    python benchmarks/speed.py --accuracy                     # (a) vs ours at equal budget on SST-2
    python benchmarks/speed.py --table --update-doc docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from doc_tables import replace_between_markers

from ptuning.core.backbones import load_backbone, resolve_model_path
from ptuning.core.config import PrefixConfig
from ptuning.core.injection.attention_interface import AttentionInterfaceInjector
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.tasks.registry import get_task
from ptuning.training.inference import feature_length, predict_outputs

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results" / "speed"
DATA_ROOT = REPO.parent / "shared" / "data"
PREFIX_LENGTH = 16
MAX_LENGTH = 128
LEARNING_RATE = 1e-2
TABLE_START = "<!-- speed-tables:start -->"
TABLE_END = "<!-- speed-tables:end -->"
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")
PEFT_MISSING = (
    "PEFT cannot run here (not installed: pip install --no-deps peft==0.21.2; or transformers >= 5.24, whose "
    "`cache` argument PEFT 0.21.2 does not know): its rows are skipped"
)
BERT_BASE = "bert-base-random"


@dataclass(frozen=True)
class Workload:
    """Which data and backbone a throughput measurement runs on, and how much of it per round."""

    name: str
    task: str  # sst2 | conll2003
    backbone: str  # minilm | bert-base-random (BERT-base shape, random weights, MiniLM's tokenizer)
    train_examples: int  # a fixed random sample of the train split, processed once per round
    eval_examples: int  # the first N of the dev split
    repeats: int
    warmup: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64


WORKLOADS = {
    w.name: w
    for w in (
        Workload("sst2-minilm", "sst2", "minilm", train_examples=256, eval_examples=512, repeats=5),
        Workload("conll2003-minilm", "conll2003", "minilm", train_examples=256, eval_examples=512, repeats=5),
        Workload("sst2-bert-base", "sst2", BERT_BASE, train_examples=64, eval_examples=128, repeats=3),
        Workload("conll2003-bert-base", "conll2003", BERT_BASE, train_examples=64, eval_examples=128, repeats=3),
    )
}  # fmt: skip
SYSTEMS = (
    "ours",
    "peft-trainer",
    "peft-trainer-dynamic",
    "peft-our-batching",
    "reference",
    "ours-no-dropout",
)
BASELINE = "peft-trainer"


def peft_available() -> bool:
    """PEFT is installed and can run prefix tuning here: it passes the prefix as ``past_key_values``, which
    transformers 5.24 renamed to ``cache`` (PEFT 0.21.2 then raises "Model does not support past key
    values"), so the PEFT systems run on transformers <= 5.23 only."""
    if importlib.util.find_spec("peft") is None:
        return False
    from transformers import BertModel

    return "past_key_values" in inspect.signature(BertModel.forward).parameters


# ------------------------------------------------------------------------------------------- data
@dataclass
class Data:
    task: Any
    label_names: list[str]
    kind: HeadKind
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    pad_id: int


def load_data(workload: Workload, tokenizer: Any, data_root: Path) -> Data:
    """Features of a fixed random train sample and of the first dev examples, max_length 128."""
    task = get_task(workload.task)
    data_dir = str(data_root / workload.task)
    train_examples, _ = task.read(data_dir, "train")
    sample = np.random.default_rng(0).permutation(len(train_examples))[: workload.train_examples]
    train, _ = task.featurize([train_examples[i] for i in sorted(sample)], tokenizer, MAX_LENGTH)
    dev_examples, _ = task.read(data_dir, "dev")
    dev, _ = task.featurize(dev_examples[: workload.eval_examples], tokenizer, MAX_LENGTH)
    strip = lambda features: [{k: f[k] for k in MODEL_KEYS if k in f} for f in features]  # noqa: E731
    return Data(task, list(task.label_names), task.head, strip(train), strip(dev), tokenizer.pad_token_id)


def pad_features(
    features: list[dict[str, Any]], pad_id: int, length: int = MAX_LENGTH
) -> list[dict[str, Any]]:
    """Every sequence padded to ``length`` (what ``padding="max_length"`` gives), labels with -100."""
    values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "labels": -100}
    padded = []
    for feature in features:
        row = dict(feature)
        size = len(row["input_ids"])
        row.setdefault("attention_mask", [1] * size)
        for key, pad in values.items():
            if key in row and isinstance(row[key], list):
                row[key] = row[key] + [pad] * (length - len(row[key]))
        padded.append(row)
    return padded


def model_folder(backbone: str, work_dir: Path) -> str:
    """A folder from_pretrained can read: the packaged MiniLM, or a random BERT-base saved once."""
    if backbone != BERT_BASE:
        return resolve_model_path(backbone)
    folder = work_dir / BERT_BASE
    if not (folder / "config.json").is_file():
        from transformers import AutoTokenizer, BertConfig, BertModel

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tokenizer)), add_pooling_layer=True).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


# ------------------------------------------------------------------------------------------- systems
@dataclass
class Round:
    seconds: float
    examples: int
    tokens: int  # tokens the model ran over, padding included (0 when the system hides its batches)
    shapes: list[tuple[int, int]]  # (batch, length) of every batch, for the FLOP count


class PromptSystem:
    """Our core, as ``ours`` (sdpa, dynamic padding, grouped) or as the ``reference`` recipe."""

    def __init__(
        self,
        folder: str,
        data: Data,
        workload: Workload,
        reference: bool = False,
        prefix_dropout: float = 0.1,
    ) -> None:
        attention = "eager" if reference else "sdpa"
        backbone, _ = load_backbone(folder, attn_implementation=attention)
        config = PrefixConfig(
            prefix_length=PREFIX_LENGTH,
            dropout=prefix_dropout,
            position_mode="shift" if reference else "keep",
        )
        self.model = PromptModel(backbone, "ptuning-v2", config)
        self.model.add_task("task", HeadSpec(data.kind, data.label_names))
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=LEARNING_RATE
        )
        self.reference = reference
        self.data = data
        self.workload = workload
        self.train_features = pad_features(data.train, data.pad_id) if reference else data.train
        self.dev_features = pad_features(data.dev, data.pad_id) if reference else data.dev

    def train_round(self, seed: int) -> Round:
        size = self.workload.batch_size
        if self.reference:
            order = np.random.default_rng(seed).permutation(len(self.train_features)).tolist()
            batches = [order[i : i + size] for i in range(0, len(order), size)]
        else:
            lengths = [feature_length(f) for f in self.train_features]
            batches = length_grouped_batches(lengths, size, seed=seed)
        self.model.train()
        shapes = []
        start = time.perf_counter()
        for indices in batches:
            with torch.profiler.record_function("collate"):
                batch = collate([self.train_features[i] for i in indices], self.data.pad_id)
            shapes.append(tuple(batch["input_ids"].shape[:2]))
            with torch.profiler.record_function("forward"):
                loss = self.model(**batch, task="task").loss
            with torch.profiler.record_function("backward"):
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                self.optimizer.step()
                self.optimizer.zero_grad()
        seconds = time.perf_counter() - start
        return Round(seconds, len(self.train_features), sum(b * t for b, t in shapes), shapes)

    def infer_round(self, seed: int) -> Round:
        start = time.perf_counter()
        if self.reference:
            shapes = self._infer_in_order()
        else:
            predict_outputs(
                self.model, "task", self.dev_features, self.data.pad_id, self.workload.eval_batch_size
            )
            order = sorted(feature_length(f) for f in self.dev_features)[::-1]
            size = self.workload.eval_batch_size
            shapes = [(len(order[i : i + size]), order[i]) for i in range(0, len(order), size)]
        seconds = time.perf_counter() - start
        return Round(seconds, len(self.dev_features), sum(b * t for b, t in shapes), shapes)

    @torch.no_grad()
    def _infer_in_order(self) -> list[tuple[int, int]]:
        self.model.eval()
        size, shapes = self.workload.eval_batch_size, []
        for first in range(0, len(self.dev_features), size):
            batch = collate(self.dev_features[first : first + size], self.data.pad_id)
            batch.pop("labels", None)
            self.model(**batch, task="task").logits.numpy()
            shapes.append(tuple(batch["input_ids"].shape[:2]))
        return shapes


def build_peft_model(folder: str, data: Data) -> torch.nn.Module:
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if data.kind is HeadKind.TOKEN_CLASSIFICATION:
        loader, task_type = AutoModelForTokenClassification, TaskType.TOKEN_CLS
    else:
        loader, task_type = AutoModelForSequenceClassification, TaskType.SEQ_CLS
    model = loader.from_pretrained(folder, num_labels=len(data.label_names))  # sdpa: the default
    config = PrefixTuningConfig(
        task_type=task_type, num_virtual_tokens=PREFIX_LENGTH, prefix_projection=False
    )
    return get_peft_model(model, config)


class PeftOurBatchingSystem:
    """(b): PEFT's model in our loop with our batching and collation."""

    def __init__(self, folder: str, data: Data, workload: Workload) -> None:
        self.model = build_peft_model(folder, data)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=LEARNING_RATE
        )
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


class PeftTrainerSystem:
    """(a) / (a'): PEFT + HF Trainer; ``dynamic`` picks HF's padding collator instead of max_length."""

    def __init__(self, folder: str, data: Data, workload: Workload, dynamic: bool = False) -> None:
        from transformers import (
            AutoTokenizer,
            DataCollatorForTokenClassification,
            DataCollatorWithPadding,
            default_data_collator,
        )

        self.model = build_peft_model(folder, data)
        self.data = data
        self.workload = workload
        self.dynamic = dynamic
        if dynamic:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            token_level = data.kind is HeadKind.TOKEN_CLASSIFICATION
            self.collator = (DataCollatorForTokenClassification if token_level else DataCollatorWithPadding)(
                tokenizer
            )
            self.train_features, self.dev_features = data.train, data.dev
        else:
            self.collator = default_data_collator
            self.train_features = pad_features(data.train, data.pad_id)
            self.dev_features = pad_features(data.dev, data.pad_id)
        self.work_dir = Path(tempfile.mkdtemp(prefix="ptuning-speed-trainer-"))

    def trainer(self, seed: int, epochs: float = 1.0, train_features=None):
        from transformers import Trainer, TrainingArguments

        arguments = TrainingArguments(
            output_dir=str(self.work_dir),
            per_device_train_batch_size=self.workload.batch_size,
            per_device_eval_batch_size=self.workload.eval_batch_size,
            learning_rate=LEARNING_RATE,
            num_train_epochs=epochs,
            seed=seed,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
        )
        return Trainer(
            model=self.model,
            args=arguments,
            train_dataset=train_features or self.train_features,
            data_collator=self.collator,
        )

    def train_round(self, seed: int) -> Round:
        trainer = self.trainer(seed)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        count = len(self.train_features)
        size = self.workload.batch_size
        shapes = [] if self.dynamic else [(min(size, count - i), MAX_LENGTH) for i in range(0, count, size)]
        return Round(seconds, count, 0 if self.dynamic else count * MAX_LENGTH, shapes)

    def infer_round(self, seed: int) -> Round:
        trainer = self.trainer(seed)
        start = time.perf_counter()
        trainer.predict(self.dev_features)
        seconds = time.perf_counter() - start
        count = len(self.dev_features)
        size = self.workload.eval_batch_size
        shapes = [] if self.dynamic else [(min(size, count - i), MAX_LENGTH) for i in range(0, count, size)]
        return Round(seconds, count, 0 if self.dynamic else count * MAX_LENGTH, shapes)


def build_system(name: str, folder: str, data: Data, workload: Workload):
    if name == "ours":
        return PromptSystem(folder, data, workload)
    if name == "ours-no-dropout":  # PEFT has no prefix dropout: this row shows what ours costs without it
        return PromptSystem(folder, data, workload, prefix_dropout=0.0)
    if name == "reference":
        return PromptSystem(folder, data, workload, reference=True)
    if name == "peft-our-batching":
        return PeftOurBatchingSystem(folder, data, workload)
    if name in ("peft-trainer", "peft-trainer-dynamic"):
        return PeftTrainerSystem(folder, data, workload, dynamic=name.endswith("dynamic"))
    raise ValueError(f"unknown system {name!r}; expected one of {', '.join(SYSTEMS)}")


def available_systems(names: tuple[str, ...] = SYSTEMS) -> list[str]:
    if peft_available():
        return list(names)
    print(PEFT_MISSING, flush=True)
    return [n for n in names if not n.startswith("peft")]


# ------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class Shape:
    """The matmul shape of a BERT-like encoder."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def of(cls, folder: str) -> Shape:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size)


def step_flops(shape: Shape, batches: list[tuple[int, int]], prefix: int, training: bool) -> float:
    """Analytic FLOPs of the encoder's matmuls over these (batch, length) shapes.

    Forward, per layer: the Q, K, V, O and FFN projections cost 2 x (4 H^2 + 2 H I) per token, and attention
    2 x 2 x T x (P + T) x H per sequence (Q K^T and probabilities x V). Training through a *frozen* backbone
    computes input gradients only (one more GEMM per projection, no weight gradients): projections x2 in
    total, i.e. ~4 x params x tokens instead of fine-tuning's ~6 x; attention backward has four matmuls
    (gradients of Q, K, V and of the probabilities), so attention x3. Embeddings, norms, activations and the
    head are not counted (they are not GEMMs).
    """
    linear_per_token = 2 * (4 * shape.hidden**2 + 2 * shape.hidden * shape.intermediate)
    linear = attention = 0.0
    for batch, length in batches:
        linear += shape.layers * linear_per_token * batch * length
        attention += shape.layers * 4 * batch * length * (prefix + length) * shape.hidden
    return 2 * linear + 3 * attention if training else linear + attention


def gemm_rate(size: int = 2048, repeats: int = 3) -> float:
    """fp32 GFLOP/s of a square GEMM (the machine's matmul rate at the current thread count)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(best) / 1e9


# ------------------------------------------------------------------------------------------- throughput
def load_average() -> float:
    return os.getloadavg()[0]


def measure_throughput(
    workload: Workload, data_root: Path, work_dir: Path, names: list[str]
) -> dict[str, Any]:
    """Interleaved rounds: every round trains (then infers) once with every system, in rotated order."""
    folder = model_folder(workload.backbone, work_dir)
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    systems = {name: build_system(name, folder, data, workload) for name in names}
    shape = Shape.of(folder)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: defaultdict(list) for mode in ("train", "infer")
    }
    rates, loads = [], [load_average()]
    for index in range(workload.warmup + workload.repeats):
        rotated = names[index % len(names) :] + names[: index % len(names)]
        for mode in ("train", "infer"):
            for name in rotated:
                system = systems[name]
                result = system.train_round(index) if mode == "train" else system.infer_round(index)
                if index < workload.warmup:
                    continue
                flops = (
                    step_flops(shape, result.shapes, PREFIX_LENGTH, mode == "train")
                    if result.shapes
                    else None
                )
                rounds[mode][name].append(
                    {
                        "seconds": result.seconds,
                        "examples_per_second": result.examples / result.seconds,
                        "tokens": result.tokens,
                        "gflops_per_second": flops / result.seconds / 1e9 if flops else None,
                    }
                )
        rates.append(gemm_rate())
        loads.append(load_average())
        print(
            f"round {index + 1}/{workload.warmup + workload.repeats} done (load {loads[-1]:.1f})", flush=True
        )
    summary = {mode: summarize(rounds[mode], names) for mode in rounds}
    return {
        "workload": asdict(workload),
        "systems": names,
        "baseline": BASELINE if BASELINE in names else names[0],
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "mean_train_tokens": statistics.mean(feature_length(f) for f in data.train),
        "gemm_gflops": statistics.median(rates),
        "gemm_rounds": rates,
        "threads": torch.get_num_threads(),
        "load_average": loads,
        "summary": summary,
        "rounds": {mode: dict(r) for mode, r in rounds.items()},
        **environment(),
    }


def summarize(rounds: dict[str, list[dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    """Median throughput per system and median per-round ratio of ours to each other system."""
    out: dict[str, Any] = {}
    for name in names:
        rates = [r["examples_per_second"] for r in rounds[name]]
        flops = [r["gflops_per_second"] for r in rounds[name] if r["gflops_per_second"]]
        out[name] = {
            "examples_per_second": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "gflops_per_second": statistics.median(flops) if flops else None,
        }
        if name != "ours" and "ours" in rounds:
            ratios = [
                o["examples_per_second"] / t["examples_per_second"]
                for o, t in zip(rounds["ours"], rounds[name], strict=True)
            ]
            out[name]["ours_speedup"] = statistics.median(ratios)
    return out


def environment() -> dict[str, Any]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if peft_available():
        import peft

        versions["peft"] = peft.__version__
    return {"versions": versions, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count()}


# ------------------------------------------------------------------------------------------- memory
def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def probe_memory(
    workload: Workload, system: str, mode: str, data_root: Path, work_dir: Path
) -> dict[str, Any]:
    """Run in a fresh process: load one system, run one round of ``mode``; RSS after load and peak."""
    folder = model_folder(workload.backbone, work_dir)
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    built = build_system(system, folder, data, workload)
    loaded, _ = rss_mb()
    built.train_round(0) if mode == "train" else built.infer_round(0)
    _, peak = rss_mb()
    return {"system": system, "mode": mode, "rss_after_load_mb": loaded, "peak_rss_mb": peak}


def measure_memory(
    workload: Workload,
    data_root: Path,
    work_dir: Path,
    names: list[str],
    modes: list[str],
    extra: list[str],
) -> dict[str, Any]:
    """One fresh process per (system, mode); ``extra`` arguments are passed on to it (e.g. --smoke)."""
    model_folder(workload.backbone, work_dir)  # build the random model once, outside the probes
    results = []
    for mode in modes:
        for name in names:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--probe",
                f"{workload.name}:{name}:{mode}",
                *("--data-root", str(data_root), "--work-dir", str(work_dir)),
                "--threads",
                str(torch.get_num_threads()),
                *extra,
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            print(f"{name} {mode}: {results[-1]}", flush=True)
    return {"workload": asdict(workload), "probes": results, **environment()}


# ------------------------------------------------------------------------------------------- scaling
class NoPrefixModel(torch.nn.Module):
    """P = 0 with the same work as P-tuning v2 minus the prefix: frozen backbone, the same attention
    function (the prefix-aware wrapper, which without a prefix runs sdpa, or on CPU in training the cheaper
    dropout mask), and a backward pass through every layer (the embeddings' output is made to require a
    gradient, as a prefix at layer 0 would)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        backbone, _ = load_backbone(folder)
        AttentionInterfaceInjector(backbone)
        self.model = PromptModel(backbone, "linear-probe")
        self.model.add_task("task", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
        backbone.embeddings.register_forward_hook(
            lambda module, args, output: output.detach().requires_grad_()
        )

    def forward(self, **batch):
        return self.model(**batch, task="task")


def scaling_model(folder: str, prefix_length: int, dropout: float = 0.1) -> torch.nn.Module:
    if prefix_length == 0:
        return NoPrefixModel(folder)
    backbone, _ = load_backbone(folder)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=prefix_length, dropout=dropout))
    model.add_task("task", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    return model


def time_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], training: bool) -> float:
    start = time.perf_counter()
    if training:
        model.train()
        model(**batch).loss.backward() if isinstance(model, NoPrefixModel) else model(
            **batch, task="task"
        ).loss.backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad():
            model(**batch) if isinstance(model, NoPrefixModel) else model(**batch, task="task")
    return time.perf_counter() - start


def measure_scaling(
    folder: str,
    prefix_lengths: tuple[int, ...],
    lengths: tuple[int, ...],
    batch_size: int,
    base_length: int,
    base_prefix: int,
    repeats: int,
) -> dict[str, Any]:
    """Step time (train: forward + backward; infer: forward) of random full-length batches, interleaved.

    ``train-no-dropout`` repeats the prefix-length points with the prefix dropout off, which separates the
    cost of the prefix in attention from the cost of drawing its dropout mask.
    """
    points = [(p, base_length) for p in prefix_lengths] + [
        (p, t) for t in lengths for p in (0, base_prefix) if t != base_length
    ]
    models = {p: scaling_model(folder, p) for p in sorted({p for p, _ in points})}
    undropped = {p: scaling_model(folder, p, dropout=0.0) if p else models[0] for p in prefix_lengths}
    generator = torch.Generator().manual_seed(0)
    batches = {
        t: {
            "input_ids": torch.randint(1000, 2000, (batch_size, t), generator=generator),
            "attention_mask": torch.ones(batch_size, t, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=generator),
        }
        for t in sorted({t for _, t in points})
    }
    modes = ("train", "infer", "train-no-dropout")
    times: dict[str, dict[str, list[float]]] = {mode: defaultdict(list) for mode in modes}
    for index in range(repeats + 1):
        rotated = points[index % len(points) :] + points[: index % len(points)]
        for mode in modes:
            for p, t in rotated:
                if mode == "train-no-dropout" and t != base_length:
                    continue
                model = undropped[p] if mode == "train-no-dropout" else models[p]
                seconds = time_step(model, batches[t], mode != "infer")
                if index:  # the first round warms up
                    times[mode][f"{p}:{t}"].append(seconds)
        print(f"scaling round {index + 1}/{repeats + 1} (load {load_average():.1f})", flush=True)
    medians = {mode: {k: statistics.median(v) for k, v in d.items()} for mode, d in times.items()}
    return {
        "batch_size": batch_size,
        "base_length": base_length,
        "base_prefix": base_prefix,
        "prefix_lengths": list(prefix_lengths),
        "lengths": list(lengths),
        "median_seconds": medians,
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
        **environment(),
    }


def plot_scaling(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    medians, base_t, base_p = result["median_seconds"], result["base_length"], result["base_prefix"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = result["prefix_lengths"]
    if "train-no-dropout" in medians:
        left.plot(
            xs,
            [1000 * medians["train-no-dropout"][f"{p}:{base_t}"] for p in xs],
            "--",
            marker="o",
            label="train, no prefix dropout",
        )
    for mode, marker in (("train", "o"), ("infer", "s")):
        left.plot(xs, [1000 * medians[mode][f"{p}:{base_t}"] for p in xs], marker=marker, label=mode)
        ts = result["lengths"]
        for p, style in ((0, "--"), (base_p, "-")):
            right.plot(
                ts,
                [1000 * medians[mode][f"{p}:{t}"] for t in ts],
                style,
                marker=marker,
                label=f"{mode}, P={p}",
            )
    left.set(
        xlabel="prefix length P",
        ylabel="ms per step",
        title=f"batch {result['batch_size']} x {base_t} tokens",
    )
    right.set(
        xlabel="sequence length T",
        ylabel="ms per step",
        title=f"batch {result['batch_size']}",
        xscale="log",
        yscale="log",
    )
    right.set_xticks(result["lengths"], [str(t) for t in result["lengths"]])
    right.minorticks_off()
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("all-MiniLM-L6-v2, P-tuning v2 (train = forward + backward, infer = forward)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------- profile
SCOPES = ("collate", "forward", "backward", "optimizer", "prefix build", "mask extension")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
# torch's dropout draws with bernoulli_; FastDropout's masks come from randint, i.e. random_
RANDOM_OPS = ("aten::bernoulli_", "aten::random_")


def op_category(name: str) -> str:
    if name in GEMM_OPS:
        return "GEMM"
    if name in RANDOM_OPS:
        return "dropout mask"
    if "scaled_dot_product" in name or "softmax" in name:
        return "attention"
    return "other"


@contextlib.contextmanager
def labelled_prefix_scopes() -> Iterator[None]:
    """Wrap the core's prefix build and mask extension in profiler scopes (the core itself is untouched)."""
    import ptuning.core.injection.attention_interface as interface
    import ptuning.core.model as model_module

    originals = (
        model_module.PromptModel._row_tables,
        model_module.split_table,
        interface.extend_attention_mask,
    )

    def scoped(function: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(label):
                return function(*args, **kwargs)

        return wrapper

    model_module.PromptModel._row_tables = scoped(originals[0], "prefix build")
    model_module.split_table = scoped(originals[1], "prefix build")
    interface.extend_attention_mask = scoped(originals[2], "mask extension")
    try:
        yield
    finally:
        model_module.PromptModel._row_tables, model_module.split_table, interface.extend_attention_mask = (
            originals
        )


def measure_profile(workload: Workload, data_root: Path, work_dir: Path, names: list[str]) -> dict[str, Any]:
    """Where a training round's time goes, per system: scope x op category, ms per step."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoTokenizer

    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    out: dict[str, Any] = {"workload": asdict(workload), "systems": {}, **environment()}
    with labelled_prefix_scopes():
        for name in names:
            system = build_system(name, folder, data, workload)
            system.train_round(0)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result = system.train_round(1)
            steps = len(result.shapes)
            table: dict[str, float] = defaultdict(float)
            for event in prof.events():
                if event.cpu_parent is None:
                    _attribute(event, "unscoped", table)
            out["systems"][name] = {
                "steps": steps,
                "ms_per_step": 1000 * result.seconds / steps,
                "breakdown_ms_per_step": {k: v / 1000 / steps for k, v in sorted(table.items())},
            }
            print(f"profiled {name}", flush=True)
    return out


def _attribute(event: Any, scope: str, table: dict[str, float]) -> None:
    """Add each op's self time to (innermost scope, category); scopes' own overhead goes to the scope."""
    if event.name in SCOPES:
        scope = event.name
    table[f"{scope}|{op_category(event.name) if event.name not in SCOPES else 'other'}"] += (
        event.self_cpu_time_total
    )
    for child in event.cpu_children:
        _attribute(child, scope, table)


# ------------------------------------------------------------------------------------------- accuracy
def measure_accuracy(data_root: Path, train_examples: int, epochs: float) -> dict[str, Any]:
    """(a) PEFT + Trainer, padded to 128, vs ours (``engine.train``) on SST-2 with the same budget."""
    from transformers import AutoTokenizer

    from ptuning.training.config import TrainConfig
    from ptuning.training.engine import train

    out: dict[str, Any] = {"train_examples": train_examples, "epochs": epochs, **environment()}
    work = Path(tempfile.mkdtemp(prefix="ptuning-speed-accuracy-"))
    try:
        config = TrainConfig(
            task="sst2",
            model="minilm",
            method="ptuning-v2",
            data_dir=str(data_root / "sst2"),
            output_dir=str(work / "ours"),
            prefix_length=PREFIX_LENGTH,
            learning_rate=LEARNING_RATE,
            epochs=epochs,
            batch_size=32,
            max_length=MAX_LENGTH,
            max_train_samples=train_examples,
            test_split="none",
            save_every_steps=None,
            log_tensorboard=False,
        )
        summary = train(config).summary
        out["ours"] = {
            "final_dev_accuracy": summary["history"][-1]["dev"]["accuracy"],
            "best_dev_accuracy": summary["dev"]["accuracy"],
            "train_examples_per_second": summary["train_examples_per_second"],
            "wall_seconds": summary["wall_seconds"],
        }
        print(f"ours: {out['ours']}", flush=True)
        if not peft_available():
            print(PEFT_MISSING, flush=True)
            return out
        folder = resolve_model_path("minilm")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        task = get_task("sst2")
        examples, _ = task.read(str(data_root / "sst2"), "train")
        features, _ = task.featurize(examples[:train_examples], tokenizer, MAX_LENGTH)
        dev_examples, _ = task.read(str(data_root / "sst2"), "dev")
        dev, _ = task.featurize(dev_examples, tokenizer, MAX_LENGTH)
        strip = lambda fs: [{k: f[k] for k in MODEL_KEYS if k in f} for f in fs]  # noqa: E731
        data = Data(
            task, list(task.label_names), task.head, strip(features), strip(dev), tokenizer.pad_token_id
        )
        workload = Workload("accuracy", "sst2", "minilm", train_examples, len(dev), repeats=1)
        system = PeftTrainerSystem(folder, data, workload)
        trainer = system.trainer(seed=42, epochs=epochs)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        logits = trainer.predict(system.dev_features).predictions
        labels = np.array([f["labels"] for f in data.dev])
        out["peft_trainer"] = {
            "final_dev_accuracy": float((logits.argmax(-1) == labels).mean()),
            "train_examples_per_second": len(features) * epochs / seconds,
            "train_seconds": seconds,
        }
        print(f"peft-trainer: {out['peft_trainer']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------- tables
def render_tables(results_dir: Path) -> str:
    lines: list[str] = []
    for path in sorted(results_dir.glob("throughput-*.json")):
        lines += render_throughput(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("memory-*.json")):
        lines += render_memory(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("accuracy*.json")):
        lines += render_accuracy(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("scaling*.json")):
        lines += render_scaling(json.loads(path.read_text()), path.with_suffix(".png").name)
    for path in sorted(results_dir.glob("profile-*.json")):
        lines += render_profile(json.loads(path.read_text()))
    return "\n".join(lines).rstrip() + "\n"


SYSTEM_LABELS = {
    "ours": "ours (sdpa, dynamic padding, length-grouped)",
    "peft-trainer": "(a) PEFT + Trainer, padded to 128",
    "peft-trainer-dynamic": "(a') PEFT + Trainer, DataCollatorWithPadding",
    "peft-our-batching": "(b) PEFT, our batching",
    "reference": "(c) reference recipe: pad 128, eager",
    "ours-no-dropout": "ours without prefix dropout (PEFT has none)",
}


def render_throughput(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    loads = result["load_average"]
    lines = [
        f"#### Throughput: {workload['name']}",
        "",
        f"{workload['task']} on {workload['backbone']}: {result['train_examples']} train examples (mean "
        f"{result['mean_train_tokens']:.1f} tokens) and {result['dev_examples']} dev examples per round; "
        f"{workload['warmup']} warm-up + {workload['repeats']} interleaved rounds, medians; "
        f"{result['threads']} torch thread(s); fp32 GEMM (2048^3) {result['gemm_gflops']:.0f} GFLOP/s (median of "
        f"the rounds); 1-min load average {min(loads):.1f}-{max(loads):.1f} on {result['cpus']} cores; "
        f"measured {result['measured_at']}.",
        "",
        "| system | train ex/s | ours ÷ this (train) | train GFLOP/s (% of GEMM) | infer ex/s | ours ÷ this (infer) |",
        "|---|---|---|---|---|---|",
    ]
    for name in result["systems"]:
        train, infer = result["summary"]["train"][name], result["summary"]["infer"][name]
        flops = train["gflops_per_second"]
        efficiency = "–" if not flops else f"{flops:.0f} ({100 * flops / result['gemm_gflops']:.0f} %)"
        lines.append(
            f"| {SYSTEM_LABELS[name]} | {train['examples_per_second']:.1f} | "
            f"{_ratio(train)} | {efficiency} | {infer['examples_per_second']:.1f} | {_ratio(infer)} |"
        )
    return lines + [""]


def _ratio(entry: dict[str, Any]) -> str:
    return "1 (itself)" if "ours_speedup" not in entry else f"{entry['ours_speedup']:.2f}x"


def render_memory(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    lines = [
        f"#### Peak RSS: {workload['name']}",
        "",
        "Each row in a fresh process: load the system, then one round (train: all "
        f"{workload['train_examples']} examples, batch {workload['batch_size']}; infer: {workload['eval_examples']} "
        f"examples, batch {workload['eval_batch_size']}).",
        "",
        "| system | mode | RSS after load (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|",
    ]
    for probe in result["probes"]:
        lines.append(
            f"| {SYSTEM_LABELS[probe['system']]} | {probe['mode']} | {probe['rss_after_load_mb']:.0f} | "
            f"{probe['peak_rss_mb']:.0f} |"
        )
    return lines + [""]


def render_accuracy(result: dict[str, Any]) -> list[str]:
    lines = [
        "#### Equal budget, equal accuracy? (SST-2, all-MiniLM-L6-v2)",
        "",
        f"First {result['train_examples']:,} SST-2 train examples x {result['epochs']:g} epochs, batch 32, lr "
        f"{LEARNING_RATE:g}, P = {PREFIX_LENGTH}, max_length {MAX_LENGTH}; dev accuracy after the last epoch. "
        "Run one after the other (not interleaved), so their times are indicative only.",
        "",
        "| system | final dev accuracy | train ex/s |",
        "|---|---|---|",
    ]
    ours = result.get("ours")
    if ours:
        lines.append(
            f"| ours (`engine.train`) | {100 * ours['final_dev_accuracy']:.1f} | {ours['train_examples_per_second']:.1f} |"
        )
    theirs = result.get("peft_trainer")
    if theirs:
        lines.append(
            f"| (a) PEFT + Trainer, padded to 128 | {100 * theirs['final_dev_accuracy']:.1f} | "
            f"{theirs['train_examples_per_second']:.1f} |"
        )
    else:
        lines.append(f"| (a) PEFT + Trainer | {PEFT_MISSING} | |")
    return lines + [""]


def render_scaling(result: dict[str, Any], image: str) -> list[str]:
    medians, base_t, base_p = result["median_seconds"], result["base_length"], result["base_prefix"]
    lines = [
        "#### Step time vs prefix length and sequence length",
        "",
        f"all-MiniLM-L6-v2, random full-length batches of {result['batch_size']}, {result['threads']} thread(s); "
        "train = forward + backward through the frozen backbone, infer = forward. P = 0 is the same frozen "
        "backbone with a backward pass through every layer but no prefix. Medians of interleaved repeats.",
        "",
        f"![scaling](../benchmarks/results/speed/{image})",
        "",
        f"| P (T = {base_t}) | train ms | overhead vs P=0 | train ms, no prefix dropout | overhead vs P=0 "
        "| infer ms | overhead vs P=0 |",
        "|---|---|---|---|---|---|---|",
    ]
    undropped = medians.get("train-no-dropout", {})
    for p in result["prefix_lengths"]:
        key = f"{p}:{base_t}"
        train, infer = medians["train"][key], medians["infer"][key]
        train0, infer0 = medians["train"][f"0:{base_t}"], medians["infer"][f"0:{base_t}"]
        plain = undropped.get(key)
        plain_cells = (
            "– | –" if plain is None else f"{1000 * plain:.0f} | {100 * (plain / train0 - 1):+.0f} %"
        )
        lines.append(
            f"| {p} | {1000 * train:.0f} | {100 * (train / train0 - 1):+.0f} % | {plain_cells} | "
            f"{1000 * infer:.0f} | {100 * (infer / infer0 - 1):+.0f} % |"
        )
    lines += [
        "",
        f"| T | train ms, P=0 | train ms, P={base_p} | overhead | infer ms, P=0 | infer ms, P={base_p} | overhead |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for t in result["lengths"]:
        row = [str(t)]
        for mode in ("train", "infer"):
            zero, with_prefix = medians[mode][f"0:{t}"], medians[mode][f"{base_p}:{t}"]
            row += [
                f"{1000 * zero:.0f}",
                f"{1000 * with_prefix:.0f}",
                f"{100 * (with_prefix / zero - 1):+.0f} %",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def render_profile(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    names = list(result["systems"])
    lines = [
        f"#### Where a training step goes: {workload['name']} (torch.profiler, self CPU time)",
        "",
        "| scope / ops | " + " | ".join(f"{SYSTEM_LABELS[n]} ms/step" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    keys = sorted({k for n in names for k in result["systems"][n]["breakdown_ms_per_step"]})
    for key in keys:
        scope, category = key.split("|")
        cells = []
        for name in names:
            entry = result["systems"][name]
            value = entry["breakdown_ms_per_step"].get(key, 0.0)
            total = sum(entry["breakdown_ms_per_step"].values())
            cells.append(f"{value:.1f} ({100 * value / total:.0f} %)")
        lines.append(f"| {scope}: {category} | " + " | ".join(cells) + " |")
    lines.append(
        "| wall time per step | "
        + " | ".join(f"{result['systems'][n]['ms_per_step']:.1f}" for n in names)
        + " |"
    )
    return lines + [""]


def update_doc(path: Path, tables: str) -> None:
    replace_between_markers(path, TABLE_START, TABLE_END, tables)


# ------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--throughput", nargs="*", metavar="WORKLOAD", help=f"some of {', '.join(WORKLOADS)}")
    parser.add_argument("--memory", nargs="*", metavar="WORKLOAD")
    parser.add_argument("--memory-modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    parser.add_argument("--profile", nargs="*", metavar="WORKLOAD")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--accuracy-examples", type=int, default=4000)
    parser.add_argument("--accuracy-epochs", type=float, default=3.0)
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), help="a subset of the systems")
    parser.add_argument("--repeats", type=int, help="override the workloads' interleaved rounds")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--update-doc", type=Path)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "ptuning-speed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--smoke", type=str, metavar="MODEL_DIR", help="tiny model folder: a seconds-long run"
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # workload:system:mode, in a fresh process
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    workloads = dict(WORKLOADS)
    if args.smoke:
        workloads = {
            "smoke": Workload("smoke", "sst2", args.smoke, 8, 8, repeats=1, batch_size=4, eval_batch_size=4)
        }
    names = available_systems(tuple(args.systems))

    def chosen(requested: list[str] | None) -> list[Workload]:
        picked = [workloads[n] for n in (requested or list(workloads))]
        return [replace_repeats(w, args.repeats) for w in picked]

    if args.probe:
        name, system, mode = args.probe.split(":")
        print(json.dumps(probe_memory(workloads[name], system, mode, args.data_root, args.work_dir)))
        return 0
    if args.throughput is not None:
        for workload in chosen(args.throughput):
            result = measure_throughput(workload, args.data_root, args.work_dir, names)
            write(args.results_dir / f"throughput-{workload.name}.json", result)
    if args.memory is not None:
        for workload in chosen(args.memory):
            write(
                args.results_dir / f"memory-{workload.name}.json",
                measure_memory(
                    workload,
                    args.data_root,
                    args.work_dir,
                    names,
                    args.memory_modes,
                    ["--smoke", args.smoke] if args.smoke else [],
                ),
            )
    if args.profile is not None:
        for workload in chosen(args.profile):
            profiled = [
                n for n in names if n in ("ours", "ours-no-dropout", "peft-our-batching", "reference")
            ]
            write(
                args.results_dir / f"profile-{workload.name}.json",
                measure_profile(workload, args.data_root, args.work_dir, profiled),
            )
    if args.scaling:
        if args.smoke:
            result = measure_scaling(args.smoke, (0, 8), (8, 16), 2, 8, 8, repeats=1)
        else:
            result = measure_scaling(
                resolve_model_path("minilm"),
                (0, 8, 16, 64, 128, 256),
                (16, 32, 64, 128, 256),
                32,
                64,
                16,
                args.repeats or 5,
            )
        write(args.results_dir / "scaling.json", result)
        plot_scaling(result, args.results_dir / "scaling.png")
    if args.accuracy:
        write(
            args.results_dir / "accuracy.json",
            measure_accuracy(args.data_root, args.accuracy_examples, args.accuracy_epochs),
        )
    if args.table:
        if (args.results_dir / "scaling.json").is_file():  # the figure follows the plotting code
            plot_scaling(
                json.loads((args.results_dir / "scaling.json").read_text()), args.results_dir / "scaling.png"
            )
        tables = render_tables(args.results_dir)
        if args.update_doc:
            update_doc(args.update_doc, tables)
        print(tables)
    return 0


def replace_repeats(workload: Workload, repeats: int | None) -> Workload:
    return workload if repeats is None else replace(workload, repeats=repeats)


def write(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
