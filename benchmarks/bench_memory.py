"""Peak memory and training tokens/s of P-tuning v2 on a Llama-shaped ~1 B model: fp32 vs bf16 backbone,
with and without gradient checkpointing (random weights, CPU).

Each configuration runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own: the model is built
directly in the backbone dtype (random init, TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads over 4
KV heads, MLP 5632, vocabulary 32000), wrapped in a ``PromptModel`` (P-tuning v2, P = 16, fp32 prefix) and
trained for a few AdamW steps on random tokens. Reported: RSS after building, peak RSS, and tokens/s over the
steps after the first. Writes benchmarks/results/memory/<shape>.json and prints a markdown table.

    python benchmarks/bench_memory.py             # the 1.1 B shape: batch 2 x 128, ~1 minute per config idle
    python benchmarks/bench_memory.py --small     # a 4-layer toy shape, seconds (what the smoke test runs)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "memory"
CONFIGS = ("fp32", "fp32+checkpointing", "bf16", "bf16+checkpointing")
SHAPES = {
    "llama-1.1b": dict(
        hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
        intermediate_size=5632, vocab_size=32000, batch=2, length=128, steps=2,
    ),
    "small": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, vocab_size=1000, batch=2, length=32, steps=3,
    ),
}  # fmt: skip


def rss_mb() -> float:
    """This process's resident set size now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(shape_name: str, config_name: str) -> dict[str, Any]:
    """Build, wrap and train one configuration in this process."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel
    from ptuning.core.precision import backbone_dtype

    shape = dict(SHAPES[shape_name])
    batch, length, steps = shape.pop("batch"), shape.pop("length"), shape.pop("steps")
    dtype = backbone_dtype(config_name.split("+")[0])
    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=max(2048, length), tie_word_embeddings=False)
    backbone = LlamaForCausalLM._from_config(config, dtype=dtype).eval()
    parameters = sum(p.numel() for p in backbone.parameters())
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=16, dropout=0.0), head_dropout=0.0)
    model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    if config_name.endswith("+checkpointing"):
        model.enable_gradient_checkpointing()
    model.train()
    after_build = rss_mb()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(3, config.vocab_size, (batch, length))
    times, losses = [], []
    for _ in range(steps):
        started = time.perf_counter()
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
        losses.append(loss.item())
    measured = times[1:] or times
    return {
        "config": config_name,
        "parameters": parameters,
        "rss_after_build_mb": round(after_build),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "tokens_per_second": round(batch * length * len(measured) / sum(measured), 1),
        "step_seconds": [round(t, 2) for t in times],
        "losses": [round(v, 4) for v in losses],
        "batch": [batch, length],
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="the toy shape (seconds): for smoke tests")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("SHAPE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return 0
    shape = "small" if args.small else "llama-1.1b"
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    rows = []
    for config in configs:
        command = [sys.executable, str(Path(__file__).resolve()), "--one", shape, config]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    output = args.output or RESULTS / f"{shape}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"shape": shape, **SHAPES[shape], "runs": rows}, indent=2) + "\n")
    print("| backbone | RSS after build (MB) | peak RSS (MB) | tokens/s |\n|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['config']} | {row['rss_after_build_mb']:,} | {row['peak_rss_mb']:,} | {row['tokens_per_second']} |"
        )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
