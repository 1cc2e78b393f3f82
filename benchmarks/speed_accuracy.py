"""Equal budget, equal accuracy? (a) PEFT + Trainer and ours trained one after the other on SST-2."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from speed_common import (
    LEARNING_RATE,
    MAX_LENGTH,
    MODEL_KEYS,
    PEFT_MISSING,
    PREFIX_LENGTH,
    Data,
    Workload,
    environment,
    peft_available,
)
from speed_systems import PeftTrainerSystem

from ptuning.core.backbones import resolve_model_path
from ptuning.tasks.registry import get_task


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
