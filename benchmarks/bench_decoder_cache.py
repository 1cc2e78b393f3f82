"""Peak memory of one inference pass of a pooled head on a decoder backbone: ours, which asks the decoder for no
generation cache, against the same pass with the decoder left to its default (``use_cache`` from its config,
as before that change), which builds a cache and keeps every layer's keys and values until the pass ends.

Each measurement runs in a fresh process (random weights, a Llama shape: 16 layers x 512, 8 heads; P-tuning
v2, P = 16; batch 32 x 512 tokens, fp32, one thread) and reports the peak RSS above what was resident before
the pass (``VmHWM`` reset through ``/proc/self/clear_refs``, Linux). The two alternate, twice each.

    python benchmarks/bench_decoder_cache.py          # ~2 minutes of CPU
    python benchmarks/bench_decoder_cache.py --small  # a toy shape, seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "memory" / "decoder-cache.json"
SHAPES = {
    "llama-16x512": dict(layers=16, hidden=512, heads=8, batch=32, length=512),
    "small": dict(layers=2, hidden=64, heads=4, batch=4, length=32),
}
VARIANTS = ("default-cache", "ours")


def measure(variant: str, shape: dict[str, int]) -> float:
    """In this process: MB of peak RSS above the resident set during one no-grad forward of ``variant``."""
    import torch
    from transformers import AutoModel, LlamaConfig

    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=shape["hidden"], intermediate_size=2 * shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"], vocab_size=1000,
    )  # fmt: skip
    model = PromptModel(AutoModel.from_config(config), "ptuning-v2", PrefixConfig(prefix_length=16)).eval()
    model.add_task("c", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    if variant == "default-cache":  # the pass as it was: no use_cache=False reaches the decoder
        model.geometry = dataclasses.replace(model.geometry, takes_use_cache=False)
    ids = torch.randint(3, 1000, (shape["batch"], shape["length"]))
    resident = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # restart VmHWM from the current RSS
    with torch.no_grad():
        model(ids, torch.ones_like(ids), task="c")
    return _status_mb("VmHWM") - resident


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="a toy shape in seconds")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument(
        "--measure", choices=VARIANTS, help=argparse.SUPPRESS
    )  # one fresh-process measurement
    args = parser.parse_args(argv)
    name = "small" if args.small else "llama-16x512"
    if args.measure:
        print(json.dumps(measure(args.measure, SHAPES[name])))
        return
    peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(2):
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--measure", variant] + (["--small"] if args.small else [])
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            peaks[variant].append(json.loads(out.strip().splitlines()[-1]))
    versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers")}
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    result = {
        "shape": name,
        **SHAPES[name],
        "peak_above_resident_mb": peaks,
        **versions,
        "measured_at": measured_at,
    }
    medians = {v: statistics.median(p) for v, p in peaks.items()}
    result["ours_over_default"] = round(medians["ours"] / medians["default-cache"], 3)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{name}: peak above resident, MB (median of 2): default cache {medians['default-cache']:.0f}, "
          f"ours {medians['ours']:.0f} ({result['ours_over_default']:.2f}x); wrote {args.output}")  # fmt: skip


if __name__ == "__main__":
    main()
