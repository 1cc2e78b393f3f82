"""How much arithmetic each system does for the same examples, and how fast it ran it.

The work is counted from the batches each system forms: ours from its own batching (``length_grouped_batches``
for training, ``inference_batches`` for inference, less the last feed-forward a first-token readout skips), a
Trainer system from the Trainer's own dataloaders (its sampler and collator; a plain HF model stands in for
PEFT's, which the loaders do not read). Nothing is timed, so this runs on a busy machine. Joined with the idle
throughput file of the same workload it gives every system's FLOP rate: where two systems do the same work
per example, a lead in examples/s is a lead in efficiency; where they do not, it says how much of the lead is
arithmetic one of them skips.

    python benchmarks/speed.py --work sst2-minilm conll2003-minilm

Writes benchmarks/results/speed/work-<workload>.json; ``speed.py --table`` renders it.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from speed_common import (
    PREFIX_LENGTH,
    Data,
    Workload,
    environment,
    load_data,
    model_folder,
    pad_features,
)
from speed_flops import Shape, describe_gemm_sizes, step_flops
from speed_systems import (
    SYSTEM_LABELS,
    TRAINER_EVAL_BATCH_SIZES,
    TRAINER_LAYOUTS,
    TRAINER_PRECISIONS,
    inference_shapes,
    make_trainer,
    trainer_collator,
)

from ptuning.core.kinds import HeadKind
from ptuning.core.model import FIRST_TOKEN_KINDS
from ptuning.tasks.collate import length_grouped_batches
from ptuning.training.inference import feature_length

Batches = list[tuple[int, int]]  # (rows, length) of every batch

# The systems that do the same arithmetic as another: a dtype, a compiler or dropout changes the rate only.
WORK_TWINS = {
    "ours-bf16": "ours",
    "ours-compiled": "ours",
    "ours-bf16-compiled": "ours",
    "ours-no-dropout": "ours",
    "ours-bf16-whole-last-layer": "ours-whole-last-layer",
    **{name: "peft-trainer-grouped" for name in TRAINER_PRECISIONS},  # (a'') in bf16, autocast, compiled
}


def measure_work(workload: Workload, data_root: Path, work_dir: Path) -> dict[str, Any]:
    """GFLOP per example of every system's training rounds (the throughput run's seeds) and inference round
    (each Trainer eval batch), with padded and real tokens."""
    from transformers import AutoTokenizer

    folder = model_folder(workload.backbone, work_dir)
    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    shape = Shape.of(folder)
    seeds = list(range(workload.warmup, workload.warmup + workload.repeats))  # speed_throughput's kept rounds
    readout = data.kind in FIRST_TOKEN_KINDS  # a [CLS] head: ours runs core.readout
    ours_train = {seed: grouped_batches(data.train, workload.batch_size, seed) for seed in seeds}
    ours_infer = inference_shapes(data.dev, workload.eval_batch_size)
    systems = {
        "ours": work(shape, ours_train, {None: ours_infer}, readout),
        "ours-whole-last-layer": work(shape, ours_train, {None: ours_infer}, False),
    }
    stand_in = stand_in_model(folder, data)  # the loaders never run it: one for every layout
    for name in ("peft-trainer", "peft-trainer-dynamic", "peft-trainer-grouped"):
        train, infer = trainer_batches(name, stand_in, folder, data, workload, seeds)
        systems[name] = work(shape, train, infer, False)
    return {
        "workload": workload.name,
        "train_examples": len(data.train),
        "split_sizes": list(data.split_sizes),
        "dev_examples": len(data.dev),
        "real_tokens": {"infer": sum(feature_length(f) for f in data.dev)},
        "first_token_readout": readout,
        "systems": systems,
        **environment(),
    }


def grouped_batches(features: list[dict[str, Any]], size: int, seed: int) -> Batches:
    """Ours' training round (``PromptSystem.train_batches``)."""
    lengths = [feature_length(f) for f in features]
    return [(len(b), max(lengths[i] for i in b)) for b in length_grouped_batches(lengths, size, seed=seed)]


def stand_in_model(folder: str, data: Data) -> Any:
    """The HF task model a Trainer is built around (PEFT's would do the same: the loaders do not read it)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    token_level = data.kind is HeadKind.TOKEN_CLASSIFICATION
    loader = AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification
    return loader.from_pretrained(folder, num_labels=len(data.label_names))


def trainer_batches(
    name: str, model: Any, folder: str, data: Data, workload: Workload, seeds: list[int]
) -> tuple[dict[int, Batches], dict[int, Batches]]:
    """The shapes of the batches the Trainer's own dataloaders yield: training per seed, prediction per eval
    batch size."""
    layout = TRAINER_LAYOUTS[name]
    train_features, dev_features = data.train, data.dev
    if not layout.dynamic_padding:
        train_features, dev_features = (
            pad_features(data.train, data.pad_id),
            pad_features(data.dev, data.pad_id),
        )
    collator = trainer_collator(layout, folder, data.kind)
    work_dir = Path(tempfile.mkdtemp(prefix="ptuning-speed-work-"))  # the Trainer's output_dir; never written

    def shapes(batches: Any) -> Batches:
        return [tuple(batch["input_ids"].shape[:2]) for batch in batches]

    def trainer(seed: int, eval_batch_size: int | None = None) -> Any:
        sized = workload if eval_batch_size is None else replace(workload, eval_batch_size=eval_batch_size)
        return make_trainer(
            model, layout, collator, train_features, work_dir, sized, seed, split_sizes=data.split_sizes
        )

    try:
        train = {seed: shapes(trainer(seed).get_train_dataloader()) for seed in seeds}
        infer = {
            size: shapes(trainer(seeds[0], size).get_test_dataloader(dev_features))
            for size in TRAINER_EVAL_BATCH_SIZES
        }
    finally:  # also when a Trainer fails to build
        shutil.rmtree(work_dir, ignore_errors=True)
    return train, infer


def work(
    shape: Shape,
    train: dict[int, Batches],
    infer: dict[int | None, Batches],
    first_token_only: bool,
) -> dict[str, Any]:
    """GFLOP per example and padded tokens: training per seed, inference per eval batch (None: ours' own)."""

    def entry(batches: Batches, training: bool) -> dict[str, float]:
        flops = step_flops(shape, batches, PREFIX_LENGTH, training, first_token_only)
        examples = sum(rows for rows, _ in batches)
        return {"gflop_per_example": flops / 1e9 / examples, "padded_tokens": sum(b * t for b, t in batches)}

    return {
        "train": {str(seed): entry(b, True) for seed, b in train.items()},
        "infer": {str(size): entry(b, False) for size, b in infer.items()},
    }


def implied_rates(work_result: dict[str, Any], throughput: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per system of the throughput run, the median over its rounds of GFLOP/s = examples/s x GFLOP per example
    (training: the round's seed; inference: the eval batch the round used)."""
    warmup = throughput["workload"]["warmup"]
    rates: dict[str, dict[str, float]] = {}
    for name in throughput["systems"]:
        own = work_result["systems"].get(WORK_TWINS.get(name, name))
        if own is None:
            continue
        rates[name] = {}
        for mode in ("train", "infer"):
            per_round = []
            for index, round_ in enumerate(throughput["rounds"][mode][name]):
                key = str(warmup + index) if mode == "train" else str(round_.get("eval_batch_size"))
                entry = own[mode].get(key)
                if entry is not None:
                    per_round.append(round_["examples_per_second"] * entry["gflop_per_example"])
            if per_round:
                rates[name][mode] = statistics.median(per_round)
    return rates


def render_work(work_result: dict[str, Any], throughput: dict[str, Any] | None) -> list[str]:
    """One table per workload: work per example, relative to ours, and the idle run's implied FLOP rate."""
    systems = work_result["systems"]
    rates = implied_rates(work_result, throughput) if throughput else {}
    gemm = throughput or {}

    def mean_work(name: str, mode: str, key: str | None = None) -> float:
        entries = systems[name][mode]
        values = (
            [entries[key]["gflop_per_example"]] if key else [e["gflop_per_example"] for e in entries.values()]
        )
        return float(np.mean(values))

    ours = {mode: mean_work("ours", mode) for mode in ("train", "infer")}
    lines = [
        f"#### Work per example: {work_result['workload']}",
        "",
        f"GFLOP per example (the encoder's matrix products, `speed_flops.step_flops`) over the batches each "
        f"system forms: a training round's {work_result['train_examples']} examples (mean over the throughput "
        f"run's seeds) and {work_result['dev_examples']} dev examples ({work_result['real_tokens']['infer']:,} "
        f"real tokens), sampled from splits of {work_result['split_sizes'][0]:,} and "
        f"{work_result['split_sizes'][1]:,}. Rates: examples/s of the throughput run "
        f"({gemm.get('measured_at', 'not measured')}) × this work, median of its rounds; GEMM references "
        f"({describe_gemm_sizes(gemm.get('gemm_sizes'))}) fp32 {_rate(gemm.get('gemm_gflops'))} / "
        f"bf16 {_rate(gemm.get('gemm_bf16_gflops'))} GFLOP/s. "
        "Systems that differ only in dtype, compiling or dropout share their twin's work.",
        "",
        "| system | train GFLOP/ex | ÷ ours | train GFLOP/s | infer GFLOP/ex (eval batch) | ÷ ours | infer GFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    names = list(throughput["systems"]) if throughput else list(systems)
    for name in names:
        twin = WORK_TWINS.get(name, name)
        if twin not in systems:
            continue
        train = mean_work(twin, "train")
        infer_keys = list(systems[twin]["infer"])
        infer_cells = ", ".join(f"{mean_work(twin, 'infer', k):.3f} ({_batch(k)})" for k in infer_keys)
        infer_ratio = ", ".join(f"{mean_work(twin, 'infer', k) / ours['infer']:.2f}" for k in infer_keys)
        rate = rates.get(name, {})
        lines.append(
            f"| {SYSTEM_LABELS.get(name, name)} | {train:.3f} | {train / ours['train']:.2f} | "
            f"{_rate(rate.get('train'))} | {infer_cells} | {infer_ratio} | {_rate(rate.get('infer'))} |"
        )
    return lines + [""]


def _batch(key: str) -> str:
    return "ours' token budget" if key == "None" else f"at {key}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"
