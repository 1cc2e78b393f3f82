"""GPU speed (issue 16's GPU table): ours against (a'') -- PEFT + HF Trainer with dynamic padding and length
grouping -- on an accelerator, at the BERT-large and Llama-3.2-1B shapes, in bf16 and fp32.

Speed does not depend on the weights, so each shape is built from its config with random weights (seed 0),
saved once as safetensors with MiniLM's tokenizer (vocabulary 30,522; only the embedding table's size
depends on it, and every system shares it), and loaded by every system from that folder. Rounds interleave
the systems as ``speed_throughput`` does (warm-up, then repeats in rotated order); a round trains on a fixed
SST-2 sample (batch 32, P = 16, lr 1e-2) and predicts the first dev examples. Memory per system: its weights
on the accelerator, and each mode's peak above everything resident when its round starts (every system's
model stays loaded, so a plain peak would count the others' weights too).

    python benchmarks/speed_gpu.py --data-root DATA --tokenizer TOKENIZER_DIR --out DIR   # a CUDA machine
    python benchmarks/speed_gpu.py --device cpu --smoke --out DIR                          # dry run, tiny shapes
    python benchmarks/speed_gpu.py --table DIR/speed_gpu.json                              # the Markdown table

The PEFT systems need PEFT 0.22, or PEFT 0.21.2 on transformers <= 5.23 (``speed_common.peft_available``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from speed_common import DATA_ROOT, PREFIX_LENGTH, Workload, environment, load_data
from speed_systems import (
    BASELINE,
    BF16_BASELINE,
    DEVICE_SYSTEMS,
    SYSTEM_LABELS,
    available_systems,
    build_system,
)
from speed_throughput import speedup_cell, summarize

from ptuning.core.backbones import resolve_model_path
from ptuning.training.inference import feature_length

# name -> (transformers config class, its sizes); a "-smoke" shape keeps its family's structure at toy size
GPU_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "bert-large": ("BertConfig", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                  "intermediate_size": 4096}),
    "llama-1b": ("LlamaConfig", {  # Llama-3.2-1B's layers, heads and feed-forward
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 2048, "rope_theta": 500000.0,
        "tie_word_embeddings": True}),
    "bert-large-smoke": ("BertConfig", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                        "intermediate_size": 64}),
    "llama-1b-smoke": ("LlamaConfig", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                                       "tie_word_embeddings": True}),
}  # fmt: skip


def shape_config(name: str, vocab: int, pad: int) -> Any:
    """The config of shape ``name`` for a tokenizer of ``vocab`` tokens whose padding id is ``pad``."""
    import transformers

    family, sizes = GPU_SHAPES[name]
    return getattr(transformers, family)(vocab_size=vocab, pad_token_id=pad, **sizes)


def random_backbone(name: str, tokenizer_dir: str, work_dir: Path) -> str:
    """The folder of shape ``name`` with random weights (seed 0) and the tokenizer, saved once."""
    folder = work_dir / name
    if not (folder / "config.json").is_file():
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        config = shape_config(name, len(tokenizer), tokenizer.pad_token_id)
        torch.manual_seed(0)
        AutoModel.from_config(config).save_pretrained(folder)  # fp32: each system picks its own dtype
        tokenizer.save_pretrained(folder)
    return str(folder)


def workload_for(shape_name: str, train_examples: int, eval_examples: int, repeats: int) -> Workload:
    return Workload(
        f"sst2-{shape_name}", "sst2", shape_name, train_examples, eval_examples, repeats, warmup=1
    )


def measure(
    shape_name: str, workload: Workload, names: list[str], folder: str, data_root: Path, device: str
) -> dict[str, Any]:
    """Interleaved rounds of every system on one shape; examples/s and peak accelerator memory per mode."""
    from transformers import AutoConfig, AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    systems = {name: build_system(name, folder, data, workload, device) for name in names}
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {m: defaultdict(list) for m in ("train", "infer")}
    peaks: dict[str, dict[str, int]] = {m: defaultdict(int) for m in ("train", "infer")}
    weights = {name: parameter_bytes(system.model) for name, system in systems.items()}
    for index in range(workload.warmup + workload.repeats):
        rotated = names[index % len(names) :] + names[: index % len(names)]
        for mode in ("train", "infer"):
            for name in rotated:
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    resident = torch.cuda.memory_allocated()
                system = systems[name]
                result = system.train_round(index) if mode == "train" else system.infer_round(index)
                if device == "cuda":
                    extra = torch.cuda.max_memory_allocated() - resident
                    peaks[mode][name] = max(peaks[mode][name], extra)
                if index >= workload.warmup:
                    rounds[mode][name].append(
                        {
                            "seconds": result.seconds,
                            "examples_per_second": result.examples / result.seconds,
                        }
                    )
        print(f"{shape_name}: round {index + 1}/{workload.warmup + workload.repeats} done", flush=True)
    config = AutoConfig.from_pretrained(folder)
    return {
        "shape": shape_name,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "parameters": sum(p.numel() for p in systems[names[0]].model.parameters()),
        "workload": asdict(workload),
        "systems": names,
        "train_examples": len(data.train),
        "dev_examples": len(data.dev),
        "mean_train_tokens": statistics.mean(feature_length(f) for f in data.train),
        "summary": {mode: summarize(rounds[mode], names) for mode in rounds},
        "weights_bytes": weights,
        "peak_extra_bytes": {mode: dict(p) for mode, p in peaks.items()},
        "rounds": {mode: dict(r) for mode, r in rounds.items()},
    }


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def device_description(device: str) -> dict[str, Any]:
    if device != "cuda":
        return {"device": device}
    return {
        "device": torch.cuda.get_device_name(),
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "cuda": torch.version.cuda,
    }


# ------------------------------------------------------------------------------------------- table
def render(result: dict[str, Any]) -> list[str]:
    """One table per shape: examples/s per mode, ours and ours-bf16 against each, and peak memory."""
    lines = []
    for entry in result["shapes"]:
        names = entry["systems"]
        contenders = [c for c in ("ours-bf16", "ours") if c in names]
        lines += [
            f"#### {entry['shape']}: {entry['layers']} layers x {entry['hidden']}, "
            f"{entry['parameters'] / 1e6:,.0f} M parameters (random weights)",
            "",
            f"SST-2, {entry['train_examples']} train examples (mean {entry['mean_train_tokens']:.1f} tokens) and "
            f"{entry['dev_examples']} dev examples per round, {entry['workload']['warmup']} warm-up + "
            f"{entry['workload']['repeats']} interleaved rounds, medians; {result['device']['device']}, "
            f"{', '.join(f'{k} {v}' for k, v in result['versions'].items())}; measured {result['measured_at']}.",
            "",
            "| system | train ex/s | "
            + "".join(f"{c} ÷ this (train) | " for c in contenders)
            + "infer ex/s | "
            + "".join(f"{c} ÷ this (infer) | " for c in contenders)
            + "weights + peak train / infer (GiB) |",
            "|---|---|" + "---|" * len(contenders) + "---|" + "---|" * len(contenders) + "---|",
        ]
        for name in names:
            train, infer = entry["summary"]["train"][name], entry["summary"]["infer"][name]
            memory = [entry["peak_extra_bytes"][m].get(name) for m in ("train", "infer")]
            lines.append(
                f"| {SYSTEM_LABELS[name].replace('CPU autocast', 'autocast')} | "
                f"{train['examples_per_second']:.1f} | "
                + "".join(f"{speedup_cell(train, c, name)} | " for c in contenders)
                + f"{infer['examples_per_second']:.1f} | "
                + "".join(f"{speedup_cell(infer, c, name)} | " for c in contenders)
                + f"{entry['weights_bytes'][name] / 2**30:.2f} + "
                + " / ".join("–" if m is None else f"{m / 2**30:.2f}" for m in memory)
                + " |"
            )
        lines += [*headline(entry), ""]
    return lines


BF16_TRAINERS = (BF16_BASELINE, "peft-trainer-grouped-autocast")  # the two ways a Trainer user gets bf16


def headline(entry: dict[str, Any]) -> list[str]:
    """ours-bf16 against the faster bf16 (a'') of each mode: the strongest setup a careful user would pick."""
    names = entry["systems"]
    trainers = [n for n in BF16_TRAINERS if n in names]
    if "ours-bf16" not in names or not trainers:
        return []
    parts = []
    for mode in ("train", "infer"):
        summary = entry["summary"][mode]
        best = max(trainers, key=lambda n: summary[n]["examples_per_second"])
        parts.append(f"{mode} **{summary[best]['ours-bf16_speedup']:.2f}x** (against {best})")
    return ["", "ours-bf16 against the faster bf16 (a''): " + ", ".join(parts) + " (target >= 1.3x)."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (the GPU table) or cpu (a dry run)")
    parser.add_argument("--shapes", nargs="+", default=["bert-large", "llama-1b"], choices=tuple(GPU_SHAPES))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 16 examples, 1 round: a dry run")
    parser.add_argument("--systems", nargs="+", default=list(DEVICE_SYSTEMS), choices=DEVICE_SYSTEMS)
    parser.add_argument("--train-examples", type=int, default=2048)
    parser.add_argument("--eval-examples", type=int, default=872)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument(
        "--tokenizer", default=None, help="a tokenizer folder (default: the packaged MiniLM's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for speed_gpu.json")
    parser.add_argument("--table", type=Path, default=None, help="print the Markdown table of a result file")
    args = parser.parse_args(argv)
    if args.table is not None:
        print("\n".join(render(json.loads(args.table.read_text()))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("speed_gpu.py: no CUDA device here (use --device cpu --smoke for a dry run)")
    shapes = [f"{s}-smoke" if args.smoke and not s.endswith("-smoke") else s for s in args.shapes]
    sizes = (16, 16, 1) if args.smoke else (args.train_examples, args.eval_examples, args.repeats)
    tokenizer = args.tokenizer or resolve_model_path("minilm")
    names = available_systems(tuple(args.systems))  # the PEFT rows need a PEFT that runs here
    with tempfile.TemporaryDirectory(prefix="ptuning-speed-gpu-") as work_dir:  # the random backbones
        result = measure_shapes(args, shapes, sizes, tokenizer, names, Path(work_dir))
    print("\n".join(render(result)))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "speed_gpu.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out / 'speed_gpu.json'}", flush=True)


def measure_shapes(
    args: argparse.Namespace,
    shapes: list[str],
    sizes: tuple[int, int, int],
    tokenizer: str,
    names: list[str],
    work_dir: Path,
) -> dict[str, Any]:
    """Every shape's systems, with the run's device and versions."""
    started = time.perf_counter()
    result = {
        "prefix_length": PREFIX_LENGTH,
        "baseline": BASELINE,
        "bf16_baseline": BF16_BASELINE,
        "device": device_description(args.device),
        "shapes": [],
        **environment(),
    }
    for name in shapes:
        folder = random_backbone(name, tokenizer, work_dir)
        workload = workload_for(name, *sizes)
        result["shapes"].append(measure(name, workload, names, folder, args.data_root, args.device))
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


if __name__ == "__main__":
    main()
