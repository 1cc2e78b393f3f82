"""What storing the frozen backbone small costs in accuracy: one trained prompt, scored on fp32, bf16 and int8.

Trains a preset briefly with the library (fp32, the preset's options; by default sst2-minilm on 2,000 SST-2
examples for 1 epoch), then loads the same prompt checkpoint onto the backbone stored three ways and scores
the dev split with each: fp32 (as trained), bf16 (``load_backbone(dtype="bf16")``), int8 weight-only
(``quantize_backbone(model, "int8")``: int8 weights with one scale per output channel, activations in fp32)
and int8-dynamic (torch dynamic quantization: int8 weights and per-batch int8 activations; weight scales
per output channel, the library's default, and one per tensor, torch's default); then fp32 and bf16 again
with the backbone compiled as ``--compile`` compiles it for inference (``core.compilation``: the frozen
weights folded into the graph), the pairing that earns the inference speed-up (docs/BENCHMARKS.md). Reports
the metric, its change from fp32, the number of predictions that changed, dev examples/s (a compiled
variant is scored once untimed first, so its compiling is not counted) and the backbone's size.
Writes benchmarks/results/precision/<preset>.json.

    python benchmarks/bench_precision.py                                   # ~2-4 minutes on 2 cores
    python benchmarks/bench_precision.py --preset conll2003-minilm --max-train-samples 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import load_checkpoint
from ptuning.core.compilation import compile_backbone
from ptuning.core.quantization import backbone_storage, quantize_backbone
from ptuning.training.config import TrainConfig
from ptuning.training.data import DEV_SPLITS, choose_split
from ptuning.training.engine import train
from ptuning.training.inference import predict_outputs
from ptuning.training.predict import LoadedCheckpoint, load_for_inference
from ptuning.training.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "precision"
VARIANTS = (
    "fp32",
    "bf16",
    "int8",
    "int8-dynamic",
    "int8-dynamic-per-tensor",
    "fp32-compiled",
    "bf16-compiled",
)
COMPILED = "-compiled"


def backbone_megabytes(backbone: torch.nn.Module) -> float:
    """The backbone's weights as stored (``core.quantization.backbone_storage``, what /health reports)."""
    return backbone_storage(backbone)["bytes"] / 2**20


def variant(
    loaded: LoadedCheckpoint, checkpoint: Path, name: str, compile_backend: str = "inductor"
) -> LoadedCheckpoint:
    """The same prompt on the backbone stored as ``name`` (and compiled, for a ``-compiled`` name)."""
    base = json.loads((checkpoint / "prompt_config.json").read_text())["base_model"]["name_or_path"]
    stored = name.removesuffix(COMPILED)
    backbone, _ = load_backbone(base, dtype="bf16" if stored == "bf16" else "fp32")
    model = load_checkpoint(checkpoint, backbone=backbone).eval()
    if stored.startswith("int8"):
        kind = stored.removesuffix("-per-tensor")
        quantize_backbone(model, kind, per_channel=not stored.endswith("-per-tensor"))
    if name.endswith(COMPILED):
        compile_backbone(model, backend=compile_backend)
    return dataclasses.replace(loaded, model=model)


def score(loaded: LoadedCheckpoint, data_dir: str, split: str, limit: int | None) -> dict[str, Any]:
    examples, _ = loaded.task.read(data_dir, split)
    examples = examples[:limit] if limit else examples  # the training run's max_eval_samples
    features, _ = loaded.task.featurize(examples, loaded.tokenizer, loaded.max_length)
    torch.manual_seed(0)
    started = time.perf_counter()
    outputs = predict_outputs(loaded.model, loaded.head, features, loaded.tokenizer.pad_token_id, 64)
    seconds = time.perf_counter() - started
    scores = loaded.task.score(examples, features, outputs)
    return {"examples": len(examples), "examples_per_second": len(examples) / seconds, **scores}, outputs


def argmax_changes(reference: list[Any], outputs: list[Any]) -> int:
    return sum(
        int(not np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))
        for a, b in zip(reference, outputs, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="sst2-minilm")
    parser.add_argument("--max-train-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=None, help="the task's data folder")
    parser.add_argument("--model", default=None, help="override the preset's model (the smoke test)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--keep-checkpoint", type=Path, default=None, help="copy the trained prompt here")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the -compiled variants (the smoke test's 'eager' builds no kernels)",
    )
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    options = dict(preset.options)
    data_dir = str(args.data or DATA / options.get("task", preset.task))
    with tempfile.TemporaryDirectory(prefix="ptuning-precision-") as output_dir:
        config = TrainConfig(
            **{
                **options,
                "task": preset.task,
                "data_dir": data_dir,
                "output_dir": output_dir,
                "max_train_samples": args.max_train_samples,
                "epochs": args.epochs,
                "seed": args.seed,
                "save_every_steps": None,
                "log_tensorboard": False,
                **({"model": args.model} if args.model else {}),
            }
        )
        started = time.perf_counter()
        train(config)
        train_seconds = time.perf_counter() - started
        checkpoint = Path(output_dir) / "checkpoint"
        if args.keep_checkpoint:
            shutil.copytree(checkpoint, args.keep_checkpoint, dirs_exist_ok=True)
        loaded = load_for_inference(checkpoint)
        dev = choose_split(
            loaded.task, data_dir, config.dev_split, DEV_SPLITS, notes=[]
        )  # as the engine does
        results: dict[str, Any] = {}
        reference_outputs = None
        for name in VARIANTS:
            current = variant(loaded, checkpoint, name, args.compile_backend)
            if name.endswith(COMPILED):
                score(current, data_dir, dev, config.max_eval_samples)  # compiles: not timed
            scores, outputs = score(current, data_dir, dev, config.max_eval_samples)
            reference_outputs = reference_outputs or outputs
            scores["predictions_changed_vs_fp32"] = argmax_changes(reference_outputs, outputs)
            scores["backbone_mb"] = round(backbone_megabytes(current.model.backbone), 1)
            results[name] = scores
            print(name, json.dumps(scores), flush=True)
    report = {
        "preset": args.preset,
        "trained": {
            "max_train_samples": args.max_train_samples,
            "epochs": args.epochs,
            "seed": args.seed,
            "seconds": round(train_seconds, 1),
            "backbone": "fp32",
        },  # fmt: skip
        "threads": torch.get_num_threads(),
        "results": results,
    }
    output = args.output or RESULTS / f"{args.preset}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
