"""Cost of P-tuning v2 on a real causal LM (SmolLM2-135M-Instruct), against PEFT's PrefixTuning.

Measures, on the same model, data and prefix length:

* training throughput (real tokens/s of forward + backward + AdamW step) for our P-tuning v2 with and
  without gradient checkpointing, PEFT 0.21.2 ``PrefixTuning``, and full fine-tuning (no prefix);
* greedy generation throughput (new tokens/s, left-padded batch, fixed length) without a prefix, with
  ours, and with PEFT's;
* peak resident memory (RSS) of a training step, each configuration in a fresh process (peak RSS never
  goes down inside one), also reported above the RSS right after loading the model.

Timings are medians of ``--repeats`` runs after one warm-up, interleaved (every repeat runs every
configuration, starting from a rotating one) so that load from other processes hits all alike; ratios are
against our P-tuning v2. PEFT is a benchmark-only dependency: ``pip install --no-deps peft==0.21.2``.

    python benchmarks/bench_causal_lm.py --json outputs/bench_causal_lm.json     # ~15 min on 2 CPU cores
    python benchmarks/bench_causal_lm.py --repeats 1 --max-length 64 --new-tokens 4   # plumbing only
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from speed_common import interleaved

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.collate import collate
from ptuning.tasks.generative import SquadGenerativeTask

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad_v1.1"
TRAIN_CONFIGS = ("ptuning-v2", "ptuning-v2+gc", "peft-prefix", "finetune")
MEMORY_CONFIGS = ("ptuning-v2", "ptuning-v2+gc", "peft-prefix", "peft-prefix+gc", "finetune")
GENERATE_CONFIGS = ("no-prefix", "ptuning-v2", "peft-prefix")


def batches(tokenizer: Any, args: argparse.Namespace) -> tuple[dict, dict]:
    """A training batch (prompt + answer, right-padded) and a generation batch (prompts, left-padded)."""
    task = SquadGenerativeTask(chat_template=True)
    examples, _ = task.read(str(DATA), "train")
    features, _ = task.featurize(examples[: args.batch_size], tokenizer, args.max_length)
    train_batch = collate(features, tokenizer.pad_token_id)
    prompts = [{"input_ids": f["input_ids"][: f["prompt_length"]]} for f in features]
    return train_batch, collate(prompts, tokenizer.pad_token_id, padding_side="left")


def build(
    name: str, backbone: torch.nn.Module, prefix_length: int, copy_backbone: bool = True
) -> torch.nn.Module:
    """The model of one configuration, on its own copy of the backbone unless told otherwise."""
    backbone = copy.deepcopy(backbone) if copy_backbone else backbone
    if name.startswith("peft-prefix"):
        from peft import PrefixTuningConfig, TaskType, get_peft_model

        model = get_peft_model(
            backbone, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=prefix_length)
        )
        if name.endswith("+gc"):
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model
    method = {"finetune": "finetune", "no-prefix": "linear-probe"}.get(name, "ptuning-v2")
    model = PromptModel(backbone, method, PrefixConfig(prefix_length=prefix_length, dropout=0.0))
    model.add_task("squad", HeadSpec(HeadKind.CAUSAL_LM))
    if name.endswith("+gc"):
        model.enable_gradient_checkpointing()
    return model


def train_step_fn(model: torch.nn.Module, batch: dict) -> Callable[[], float]:
    """One optimizer update; returns the loss (so that a prefix that changes nothing would show)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> float:
        loss = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def generate_fn(model: torch.nn.Module, batch: dict, new_tokens: int, pad_id: int) -> Callable[[], float]:
    model.eval()
    settings = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id
    )

    def run() -> float:
        with torch.no_grad():
            output = model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings
            )
        return float(output[:, -new_tokens:].float().sum())  # a checksum: different prefixes, different text

    return run


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process now (VmRSS) or at its peak (VmHWM), in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of a few training steps of one configuration; runs in its own process.

    The peak is reset after loading (Linux ``clear_refs`` 5), so it measures training, not loading.
    """
    backbone, tokenizer = load_backbone("smollm2", causal_lm=True)
    train_batch, _ = batches(tokenizer, args)
    try:
        model = build(name, backbone, args.prefix_length, copy_backbone=False)
        step = train_step_fn(model, train_batch)
        loaded = rss_mb()
        Path("/proc/self/clear_refs").write_text("5")
        for _ in range(2):
            step()
    except Exception as error:  # e.g. a library refusing gradient checkpointing
        return {"config": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    peak = rss_mb("VmHWM")
    return {
        "config": name,
        "rss_after_load_mb": round(loaded),
        "peak_rss_mb": round(peak),
        "above_load_mb": round(peak - loaded),
    }


def speed(args: argparse.Namespace) -> dict[str, Any]:
    backbone, tokenizer = load_backbone("smollm2", causal_lm=True)
    train_batch, prompt_batch = batches(tokenizer, args)
    real_tokens = int(train_batch["attention_mask"].sum())
    train_functions = {
        name: train_step_fn(build(name, backbone, args.prefix_length), train_batch) for name in TRAIN_CONFIGS
    }
    generate_functions = {
        name: generate_fn(
            build(name, backbone, args.prefix_length), prompt_batch, args.new_tokens, tokenizer.pad_token_id
        )
        for name in GENERATE_CONFIGS
    }
    checksums = {name: function() for name, function in generate_functions.items()}
    if len(set(checksums.values())) != len(checksums):
        raise RuntimeError(f"two configurations generated the same tokens {checksums}: is a prefix ignored?")
    train_seconds = interleaved(train_functions, args.repeats)
    generate_seconds = interleaved(generate_functions, args.repeats)
    new_tokens = args.new_tokens * prompt_batch["input_ids"].shape[0]
    return {
        "train": summarize(train_seconds, real_tokens, "ptuning-v2"),
        "generate": summarize(generate_seconds, new_tokens, "ptuning-v2"),
        "train_tokens_per_batch": real_tokens,
        "generated_tokens_per_batch": new_tokens,
    }


def summarize(seconds: dict[str, list[float]], tokens: int, reference: str) -> dict[str, dict[str, float]]:
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        name: {
            "median_s": round(median, 3),
            "tokens_per_s": round(tokens / median, 1),
            "time_vs_ours": round(median / medians[reference], 3),
            "runs_s": [round(v, 3) for v in seconds[name]],
        }
        for name, median in medians.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--prefix-length", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args)))
        return
    forwarded = [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("json", "memory_worker")
    ]
    memory = []
    for name in MEMORY_CONFIGS:
        command = [sys.executable, __file__, f"--memory-worker={name}", *forwarded]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        memory.append(json.loads(output.strip().splitlines()[-1]))
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "memory_worker"},
        **speed(args),
        "memory": memory,
    }
    print(markdown(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def markdown(results: dict[str, Any]) -> str:
    lines = ["| training | real tokens/s | median step (s) | time vs ours |", "|---|---|---|---|"]
    for name, row in results["train"].items():
        lines.append(f"| {name} | {row['tokens_per_s']} | {row['median_s']} | {row['time_vs_ours']} |")
    lines += ["", "| generation | new tokens/s | median batch (s) | time vs ours |", "|---|---|---|---|"]
    for name, row in results["generate"].items():
        lines.append(f"| {name} | {row['tokens_per_s']} | {row['median_s']} | {row['time_vs_ours']} |")
    lines += [
        "",
        "| memory | RSS after load (MB) | peak RSS in training (MB) | above load (MB) |",
        "|---|---|---|---|",
    ]
    for row in results["memory"]:
        if "error" in row:
            lines.append(f"| {row['config']} | refused: {row['error']} | | |")
        else:
            cells = (row["rss_after_load_mb"], row["peak_rss_mb"], row["above_load_mb"])
            lines.append(f"| {row['config']} | " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
