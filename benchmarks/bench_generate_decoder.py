"""What mixing prefixes and seeding the cache cost the continuous decoder, in one process (no HTTP).

Four prompts decode for exactly ``--steps`` tokens each (EOS disabled, so every variant does the same work),
variants interleaved round by round so that drift in the machine's load hits all alike:

* ``seeded/one``, ``seeded/mixed``: the prefix written into the cache once, one prefix for all rows vs four;
* ``per-step/one``, ``per-step/mixed``: the prefix concatenated to keys/values at every step instead;
* ``generate/one``: ``PromptModel.generate`` on the same 4 prompts (what ``ptuning predict`` runs).

Reported: median generated tokens/s per variant over the rounds, and the ratios mixed/one and seeded/per-step.

    python benchmarks/bench_generate_decoder.py --model smollm2 --rounds 5
    python benchmarks/bench_generate_decoder.py --model /path/to/llama --layers 8 --rounds 3   # random copy
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.generation import ContinuousDecoder, SamplingParams, Sequence
from ptuning.tasks.collate import collate

TASKS = [f"task{i}" for i in range(4)]
PROMPTS = [
    "The capital of France is",
    "Write one sentence about the sea.",
    "List three colours:",
    "Question: what is two plus two?\nAnswer:",
]
# wall: elapsed time; process: CPU time of this process, steadier on a machine shared with other jobs.
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
VARIANTS = ("seeded/one", "seeded/mixed", "per-step/one", "per-step/mixed", "generate/one")


def build(model: str, layers: int | None, prefix_length: int) -> tuple[PromptModel, Any]:
    """4 tasks with random prefixes over ``model`` (or a random copy of its config with ``layers`` layers)."""
    backbone, tokenizer = load_backbone(model, causal_lm=True)
    if layers is not None:
        config = backbone.config
        config.num_hidden_layers = layers
        torch.manual_seed(0)
        backbone = type(backbone)(config).eval()
    prompt_model = PromptModel(
        backbone, "ptuning-v2", PrefixConfig(prefix_length=prefix_length, init_std=0.02)
    )
    for task in TASKS:
        prompt_model.add_task(task, HeadSpec(HeadKind.CAUSAL_LM))
    return prompt_model.eval(), tokenizer


def tokens_per_second(
    model: PromptModel, tokenizer: Any, variant: str, steps: int, clock: Any = time.perf_counter
) -> float:
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    mode, spread = variant.split("/")
    names = TASKS if spread == "mixed" else [TASKS[0]] * len(prompts)
    started = clock()
    if mode == "generate":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batch = collate([{"input_ids": p} for p in prompts], pad, "left")
        with torch.no_grad():
            model.generate(
                batch["input_ids"], attention_mask=batch["attention_mask"], task=TASKS[0],
                max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=pad,
            )  # fmt: skip
    else:
        decoder = ContinuousDecoder(model, tokenizer, eos_token_id=-1, seed_prefix=mode == "seeded")
        decoder.run([Sequence(p, n, SamplingParams(steps)) for p, n in zip(prompts, names, strict=True)])
    return steps * len(prompts) / (clock() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer = build(args.model, args.layers, args.prefix_length)
    for variant in VARIANTS:  # warm-up
        tokens_per_second(model, tokenizer, variant, 2)
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    deadline = time.monotonic() + args.time_limit
    for _ in range(args.rounds):
        if time.monotonic() > deadline:
            break
        for variant in VARIANTS:
            rates[variant].append(
                tokens_per_second(model, tokenizer, variant, args.steps, CLOCKS[args.clock])
            )
    median = {variant: statistics.median(values) for variant, values in rates.items() if values}
    return {
        "model": args.model,
        "layers": args.layers,
        "prefix_length": args.prefix_length,
        "steps": args.steps,
        "rounds": len(rates[VARIANTS[0]]),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "tokens_per_second": median,
        "mixed_vs_one_seeded": median["seeded/mixed"] / median["seeded/one"],
        "mixed_vs_one_per_step": median["per-step/mixed"] / median["per-step/one"],
        "seeded_vs_per_step_one": median["seeded/one"] / median["per-step/one"],
        "seeded_vs_generate_one": median["seeded/one"] / median["generate/one"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="base causal LM: packaged name or folder")
    parser.add_argument(
        "--layers", type=int, help="use a random copy of the model's config with this many layers"
    )
    parser.add_argument("--prefix-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32, help="new tokens per prompt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="no new round after this many seconds"
    )
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall or process CPU time")
    parser.add_argument("--output", help="write the summary as JSON here too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    summary = run(parse_args(argv))
    text = json.dumps(summary, indent=2)
    print(text)
    if summary and (output := parse_args(argv).output):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")


if __name__ == "__main__":
    main()
