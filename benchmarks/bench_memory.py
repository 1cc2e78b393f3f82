"""Peak memory and training tokens/s of P-tuning v2 on a Llama-shaped ~1 B model: fp32 vs bf16 backbone,
with and without gradient checkpointing (random weights, CPU), and PEFT 0.21.2's prefix tuning beside it.

Each configuration runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own: the model is built
directly in the backbone dtype (random init, TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads over 4
KV heads, MLP 5632, vocabulary 32000), wrapped in a ``PromptModel`` (P-tuning v2, P = 16, fp32 prefix) and
trained for a few AdamW steps on random tokens. Reported: RSS after building, peak RSS, and tokens/s over the
steps after the first. ``peft-fp32`` and ``peft-fp32+checkpointing`` train the same model and prefix size
through PEFT's ``PrefixTuningConfig`` (``get_peft_model``) instead: PEFT 0.21.2 needs transformers 5.23, so
run those with that interpreter (``--python``); a configuration that fails is recorded with its error (PEFT
refuses gradient checkpointing with a prefix). Rows are merged into benchmarks/results/memory/<shape>.json
by configuration, so the PEFT rows can be added to a run of ours; a markdown table is printed, with each
peak as a fraction of PEFT fp32's when that row exists (the issue's target: bf16 + checkpointing <= 0.3x).

    python benchmarks/bench_memory.py             # ours, the 1.1 B shape: batch 2 x 128, ~1 minute per config idle
    python benchmarks/bench_memory.py --small     # a 4-layer toy shape, seconds (what the smoke test runs)
    PYTHONPATH=src .venv-transformers-5.23/bin/python benchmarks/bench_memory.py \
        --configs peft-fp32,peft-fp32+checkpointing    # PEFT's rows, ~1-2 minutes each idle
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "memory"
CONFIGS = (
    "fp32",
    "fp32+checkpointing",
    "bf16",
    "bf16+checkpointing",
    "int8+checkpointing",
    "peft-fp32",
    "peft-fp32+checkpointing",
)
OURS = CONFIGS[:5]  # the default run; PEFT's rows need transformers 5.23 (``--python``)
PEFT_REFERENCE = "peft-fp32"  # the target ratio is against this row's peak
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


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set size now (``VmRSS``) or its peak since the last reset (``VmHWM``), Linux."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Restart ``VmHWM`` from the current RSS (writing 5 to clear_refs), so the peak is the training's own."""
    Path("/proc/self/clear_refs").write_text("5")


def run_one(shape_name: str, config_name: str) -> dict[str, Any]:
    """Build, wrap and train one configuration in this process."""
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel
    from ptuning.core.precision import backbone_dtype

    shape = dict(SHAPES[shape_name])
    batch, length, steps = shape.pop("batch"), shape.pop("length"), shape.pop("steps")
    peft = config_name.startswith("peft-")
    storage = config_name.removeprefix("peft-").split("+")[0]
    dtype = backbone_dtype("bf16" if storage == "int8" else storage)  # int8: built in bf16, then quantized
    checkpointing = config_name.endswith("+checkpointing")
    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=max(2048, length), tie_word_embeddings=False)
    backbone = LlamaForCausalLM._from_config(config, dtype=dtype).eval()
    parameters = sum(p.numel() for p in backbone.parameters())
    if storage == "int8":  # weight-only int8 Linear layers (embeddings, norms and the LM head stay bf16)
        from ptuning.core.quantization import quantize_backbone

        quantize_backbone(backbone, "int8")
    if peft:
        model = _peft_prefix_model(backbone, checkpointing)
    else:
        model = PromptModel(
            backbone, "ptuning-v2", PrefixConfig(prefix_length=16, dropout=0.0), head_dropout=0.0
        )
        model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
        if checkpointing:
            model.enable_gradient_checkpointing()
    model.train()
    after_build = rss_mb()
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the reset below clears it too
    reset_peak()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(3, config.vocab_size, (batch, length))
    times, losses = [], []
    for _ in range(steps):
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
        losses.append(loss.item())
    measured = times[1:] or times
    versions = {"transformers": transformers.__version__}
    if peft:
        versions["peft"] = importlib.metadata.version("peft")
    return {
        "config": config_name,
        **versions,
        "parameters": parameters,
        "rss_after_build_mb": round(after_build),
        "peak_rss_mb": round(max(build_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)),
        "training_peak_rss_mb": round(rss_mb("VmHWM")),
        "tokens_per_second": round(batch * length * len(measured) / sum(measured), 1),
        "step_seconds": [round(t, 2) for t in times],
        "losses": [round(v, 4) for v in losses],
        "batch": [batch, length],
        "threads": torch.get_num_threads(),
    }


def _peft_prefix_model(backbone: Any, checkpointing: bool) -> Any:
    """PEFT 0.21.2's prefix tuning with the same prefix length (P = 16, an embedding table, no MLP)."""
    from peft import PrefixTuningConfig, get_peft_model

    if checkpointing:
        backbone.activation_checkpointing_enable()  # gradient_checkpointing_enable: deprecated, gone in v6
    return get_peft_model(backbone, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="the toy shape (seconds): for smoke tests")
    parser.add_argument("--configs", default=",".join(OURS), help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for each run (PEFT's rows: transformers 5.23)"
    )
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
    output = args.output or RESULTS / f"{shape}.json"
    earlier = json.loads(output.read_text())["runs"] if output.exists() else []
    rows = {row["config"]: row for row in earlier if row["config"] in CONFIGS}
    for config in configs:
        command = [args.python, str(Path(__file__).resolve()), "--one", shape, config]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            if not config.startswith("peft-") or "No module named 'peft'" in result.stderr:
                return 1  # ours must run; PEFT must at least be installed
            rows[config] = {"config": config, "error": _last_error(result.stderr)}  # PEFT's own refusal
        else:
            rows[config] = json.loads(result.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[config]), flush=True)
    ordered = [rows[c] for c in CONFIGS if c in rows]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"shape": shape, **SHAPES[shape], "runs": ordered}, indent=2) + "\n")
    print(table(ordered))
    print(f"wrote {output}")
    return 0


def _last_error(stderr: str) -> str:
    """The exception line of a traceback (its last non-empty line)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "failed without a message"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: peaks, and each as a fraction of PEFT fp32's when that row ran. The process peak includes
    building the model (int8 is built in bf16 first); the training peak starts after the build."""
    reference = next((r for r in rows if r["config"] == PEFT_REFERENCE and "error" not in r), None)
    lines = [
        "| configuration | RSS after build (MB) | process peak (MB) | training peak (MB) | training peak vs PEFT fp32 | tokens/s |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['config']} | fails: {row['error']} | | | | |")
            continue
        training = row.get("training_peak_rss_mb")
        ratio = (
            f"{training / reference['training_peak_rss_mb']:.2f}"
            if training and reference and reference.get("training_peak_rss_mb")
            else "-"
        )
        lines.append(
            f"| {row['config']} | {row['rss_after_build_mb']:,} | {row['peak_rss_mb']:,} | "
            f"{f'{training:,}' if training else '-'} | {ratio} | {row['tokens_per_second']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
