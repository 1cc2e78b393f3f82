"""Does packing pay? Packed rows (--pack-sequences) against our default, length-grouped dynamic padding.

Same backbone, same train sample and dev split, same batches of examples (length-grouped, batch 32): the
grouped layout pads each batch to its longest input; the packed layouts pack the batch's inputs into rows of
at most N tokens (one layout per ``--pack-lengths`` entry). Rounds are interleaved (the order rotates every
round), training then inference, at 2 threads. Each layout trains its own copy of the model (same initial
weights), so the dev accuracy after the last round says whether its training went where the grouped one did.
Besides examples/s the result records, per layout, the share of padding token slots and the attention score
cells (sum over rows of length^2: a mask does not let sdpa skip blocked cells), which say why it pays or not.

    python benchmarks/speed_packing.py --workload sst2-minilm
    python benchmarks/speed_packing.py --workload conll2003-minilm

writes benchmarks/results/speed/packing-<workload>.json. ``--model``/``--data-root``/``--repeats`` let the smoke
test run it on a tiny model in seconds.

Do dev scores hold? ``--quality PRESET...`` trains each preset with and without ``pack_sequences``, once per
seed, each run in a fresh process, alternating, and writes the dev scores and end-to-end training examples/s
of every run to benchmarks/results/speed/packing-quality.json:

    python benchmarks/speed_packing.py --quality sst2-minilm conll2003-minilm --seeds 42 43 44

``--set KEY=VALUE`` overrides preset options (the smoke test uses a tiny model and one step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_common import (
    DATA_ROOT,
    LEARNING_RATE,
    PREFIX_LENGTH,
    RESULTS_DIR,
    WORKLOADS,
    Data,
    Workload,
    environment,
    load_average,
    load_data,
    model_folder,
    model_label,
    write,
)

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.packing import pack_features, segment_labels
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.training.inference import feature_length, predict_outputs

GROUPED = "grouped"


class Layout:
    """One way of laying out the same batches: ``pack_length`` None = length-grouped dynamic padding."""

    def __init__(self, model: PromptModel, data: Data, workload: Workload, pack_length: int | None) -> None:
        self.model, self.data, self.workload, self.pack_length = model, data, workload, pack_length
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, weight_decay=0.0
        )

    def batch(self, features: list[dict[str, Any]]) -> tuple[dict[str, Any], int, int]:
        """Model inputs, token slots (padding included) and attention score cells of one batch."""
        if self.pack_length is None:
            batch = collate(features, self.data.pad_id)
            rows, length = batch["input_ids"].shape
            return batch, rows * length, rows * length * length
        packed = pack_features(features, self.pack_length, self.data.pad_id)
        rows, length = packed.input_ids.shape
        inputs = {"packed": packed, "labels": segment_labels(features, self.data.kind)}
        return inputs, rows * length, rows * length * length

    def train_round(self, seed: int) -> dict[str, float]:
        lengths = [feature_length(f) for f in self.data.train]
        batches = length_grouped_batches(lengths, self.workload.batch_size, seed=seed)
        self.model.train()
        slots = cells = 0
        start = time.perf_counter()
        for indices in batches:
            inputs, batch_slots, batch_cells = self.batch([self.data.train[i] for i in indices])
            loss = self.model(**inputs, task="task").loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            slots, cells = slots + batch_slots, cells + batch_cells
        seconds = time.perf_counter() - start
        return self._record(seconds, len(self.data.train), sum(lengths), slots, cells)

    def infer_round(self) -> dict[str, float]:
        start = time.perf_counter()
        self.outputs = predict_outputs(
            self.model,
            "task",
            self.data.dev,
            self.data.pad_id,
            self.workload.eval_batch_size,
            pack_length=self.pack_length,
        )
        seconds = time.perf_counter() - start
        lengths = [feature_length(f) for f in self.data.dev]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # predict_outputs' batches
        slots = cells = 0
        size = self.workload.eval_batch_size
        for first in range(0, len(order), size):
            _, batch_slots, batch_cells = self.batch([self.data.dev[i] for i in order[first : first + size]])
            slots, cells = slots + batch_slots, cells + batch_cells
        return self._record(seconds, len(self.data.dev), sum(lengths), slots, cells)

    @staticmethod
    def _record(seconds: float, examples: int, real: int, slots: int, cells: int) -> dict[str, float]:
        return {
            "seconds": seconds,
            "examples_per_second": examples / seconds,
            "padding_fraction": 1 - real / slots,
            "attention_cells": cells,
        }

    def dev_accuracy(self) -> float:
        """Accuracy of the last inference round: per input (classification), per labelled token (tagging)."""
        if self.data.kind is HeadKind.TOKEN_CLASSIFICATION:
            pairs = [
                (int(np.argmax(row)), label)
                for output, feature in zip(self.outputs, self.data.dev, strict=True)
                for row, label in zip(output, feature["labels"], strict=True)
                if label != -100
            ]
        else:
            pairs = [
                (int(np.argmax(output)), feature["labels"])
                for output, feature in zip(self.outputs, self.data.dev, strict=True)
            ]
        return sum(p == t for p, t in pairs) / len(pairs)


def name_of(pack_length: int | None) -> str:
    return GROUPED if pack_length is None else f"packed-{pack_length}"


def build_layouts(folder: str, data: Data, workload: Workload, pack_lengths: list[int]) -> dict[str, Layout]:
    """One model per layout, each on its own freshly loaded backbone, all starting from the same prefix and
    head weights (seeded)."""
    layouts = {}
    for length in [None, *pack_lengths]:
        backbone, _ = load_backbone(folder, attn_implementation="sdpa")
        torch.manual_seed(0)
        model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=PREFIX_LENGTH))
        model.add_task("task", HeadSpec(data.kind, data.label_names))
        if length is not None:
            model.check_packable("task")
        layouts[name_of(length)] = Layout(model, data, workload, length)
    return layouts


def measure(workload: Workload, folder: str, data_root: Path, pack_lengths: list[int]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    layouts = build_layouts(folder, data, workload, pack_lengths)
    names = list(layouts)
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {
        mode: {name: [] for name in names} for mode in ("train", "infer")
    }
    loads = [load_average()]
    for index in range(workload.warmup + workload.repeats):
        rotated = names[index % len(names) :] + names[: index % len(names)]
        for mode in ("train", "infer"):
            for name in rotated:
                layout = layouts[name]
                record = layout.train_round(index) if mode == "train" else layout.infer_round()
                if index >= workload.warmup:
                    rounds[mode][name].append(record)
        loads.append(load_average())
        print(
            f"round {index + 1}/{workload.warmup + workload.repeats} done (load {loads[-1]:.1f})", flush=True
        )
    summary = {mode: summarize(rounds[mode], names) for mode in rounds}
    summary["dev_accuracy"] = {name: layouts[name].dev_accuracy() for name in names}
    return {
        "workload": asdict(workload),
        "model": model_label(folder),
        "layouts": names,
        "baseline": GROUPED,
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "mean_train_tokens": statistics.mean(feature_length(f) for f in data.train),
        "threads": torch.get_num_threads(),
        "load_average": loads,
        "summary": summary,
        "rounds": rounds,
        **environment(),
    }


def summarize(rounds: dict[str, list[dict[str, float]]], names: list[str]) -> dict[str, Any]:
    """Median examples/s per layout, its padding share and attention cells, and the median per-round ratio
    of each layout to the grouped one (> 1: faster than grouped)."""
    out: dict[str, Any] = {}
    for name in names:
        rates = [r["examples_per_second"] for r in rounds[name]]
        ratios = [
            r["examples_per_second"] / g["examples_per_second"]
            for r, g in zip(rounds[name], rounds[GROUPED], strict=True)
        ]
        out[name] = {
            "examples_per_second": statistics.median(rates),
            "examples_per_second_rounds": rates,
            "ratio_to_grouped": statistics.median(ratios),
            "padding_fraction": rounds[name][-1]["padding_fraction"],
            "attention_cells": rounds[name][-1]["attention_cells"],
        }
    return out


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """KEY=VALUE overrides; values that start with a digit are JSON numbers."""
    pairs = (item.split("=", 1) for item in sets)
    return {key: json.loads(value) if value[:1].isdigit() else value for key, value in pairs}


def train_one(
    preset: str, packed: bool, seed: int, data_root: Path, overrides: dict[str, Any]
) -> dict[str, Any]:
    """One training run of ``preset`` in this process: its dev scores and training examples/s."""
    from ptuning.training.config import TrainConfig
    from ptuning.training.engine import train
    from ptuning.training.presets import get_preset

    options = {**get_preset(preset).options, **overrides}
    with tempfile.TemporaryDirectory(prefix="ptuning-packing-ab-") as output:
        options.update(data_dir=str(data_root / options["task"]), output_dir=output, pack_sequences=packed)
        config = TrainConfig(**options, seed=seed, save_every_steps=None, log_tensorboard=False)
        summary = train(config).summary
    return {
        "primary_metric": summary["primary_metric"],
        "dev": summary["dev"],
        "train_examples_per_second": summary["train_examples_per_second"],
        "wall_seconds": summary["wall_seconds"],
    }


def run_in_fresh_process(
    preset: str, kind: str, seed: int, data_root: Path, sets: list[str]
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", preset, kind, str(seed)]
    command += ["--data-root", str(data_root), *[f"--set={item}" for item in sets]]
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
    return json.loads(lines[-1])


def quality(
    presets: list[str],
    seeds: list[int],
    data_root: Path,
    sets: list[str],
    output: Path,
    runner: Callable[..., dict[str, Any]] = run_in_fresh_process,
) -> dict:
    """Every preset x seed, grouped and packed (alternating which goes first), each in a fresh process."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {GROUPED: [], "packed": []} for p in presets}
    for preset in presets:
        for seed in seeds:
            for kind in (GROUPED, "packed") if seed % 2 == 0 else ("packed", GROUPED):
                runs[preset][kind].append({"seed": seed, **runner(preset, kind, seed, data_root, sets)})
                print(preset, kind, runs[preset][kind][-1], flush=True)
    summary = {}
    for preset, kinds in runs.items():
        summary[preset] = {}
        for kind, results in kinds.items():
            scores = [r["dev"][r["primary_metric"]] for r in results]
            summary[preset][kind] = {
                "primary_metric": results[0]["primary_metric"],
                "mean_dev": statistics.mean(scores),
                "dev_spread": max(scores) - min(scores),
                "median_train_examples_per_second": statistics.median(
                    r["train_examples_per_second"] for r in results
                ),
            }
    result = {"presets": presets, "seeds": seeds, "overrides": sets, "runs": runs, "summary": summary}
    write(output, {**result, **environment()})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="sst2-minilm")
    parser.add_argument(
        "--pack-lengths", default="128,64", help="comma-separated row lengths, one layout each"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="model folder instead of the workload's backbone (smoke test)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--repeats", type=int, help="timed rounds (default: the workload's)")
    parser.add_argument("--train-examples", type=int, help="train sample size (default: the workload's)")
    parser.add_argument("--eval-examples", type=int, help="dev examples (default: the workload's)")
    parser.add_argument(
        "--output", type=Path, help="default: benchmarks/results/speed/packing-<workload>.json"
    )
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/ptuning-speed"))
    parser.add_argument("--quality", nargs="+", metavar="PRESET", help="dev-score A/B of these presets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset option"
    )
    parser.add_argument("--one", nargs=3, metavar=("PRESET", "KIND", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        preset, kind, seed = args.one
        print(
            json.dumps(train_one(preset, kind == "packed", int(seed), args.data_root, parse_sets(args.set)))
        )
        return 0
    if args.quality:
        output = args.output or RESULTS_DIR / "packing-quality.json"
        result = quality(args.quality, args.seeds, args.data_root, args.set, output)
        print(json.dumps(result["summary"], indent=1))
        return 0
    workload = WORKLOADS[args.workload]
    changes = {
        "repeats": args.repeats,
        "train_examples": args.train_examples,
        "eval_examples": args.eval_examples,
    }
    workload = replace(workload, **{key: value for key, value in changes.items() if value is not None})
    pack_lengths = [int(item) for item in args.pack_lengths.split(",") if item.strip()]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = args.model or model_folder(workload.backbone, args.work_dir)
    result = measure(workload, folder, args.data_root, pack_lengths)
    for mode in ("train", "infer"):
        for name, entry in result["summary"][mode].items():
            print(
                f"{mode:5} {name:12} {entry['examples_per_second']:8.1f} ex/s  x{entry['ratio_to_grouped']:.2f} "
                f"padding {entry['padding_fraction']:.1%}  attention cells {entry['attention_cells']:,}"
            )
    print("dev accuracy after training:", result["summary"]["dev_accuracy"])
    write(args.output or RESULTS_DIR / f"packing-{args.workload}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
