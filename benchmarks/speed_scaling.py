"""Step time against prefix length and sequence length: what the prefix itself costs."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from speed_common import environment, load_average

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.injection.attention_interface import AttentionInterfaceInjector
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel


class NoPrefixModel(torch.nn.Module):
    """P = 0 with the same work as P-tuning v2 minus the prefix: frozen backbone, the same attention
    function (the prefix-aware wrapper, which without a prefix runs sdpa, or on CPU in training the cheaper
    dropout mask), and a backward pass through every layer (the embeddings' output is made to require a
    gradient, as a prefix at layer 0 would)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        backbone, _ = load_backbone(folder)
        AttentionInterfaceInjector(backbone)
        self.model = PromptModel(backbone, "linear-probe")
        self.model.add_task("task", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
        backbone.embeddings.register_forward_hook(
            lambda module, args, output: output.detach().requires_grad_()
        )

    def forward(self, **batch):
        return self.model(**batch, task="task")


def scaling_model(folder: str, prefix_length: int, dropout: float = 0.1) -> torch.nn.Module:
    if prefix_length == 0:
        return NoPrefixModel(folder)
    backbone, _ = load_backbone(folder)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=prefix_length, dropout=dropout))
    model.add_task("task", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    return model


def time_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], training: bool) -> float:
    start = time.perf_counter()
    if training:
        model.train()
        model(**batch).loss.backward() if isinstance(model, NoPrefixModel) else model(
            **batch, task="task"
        ).loss.backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad():
            model(**batch) if isinstance(model, NoPrefixModel) else model(**batch, task="task")
    return time.perf_counter() - start


def measure_scaling(
    folder: str,
    prefix_lengths: tuple[int, ...],
    lengths: tuple[int, ...],
    batch_size: int,
    base_length: int,
    base_prefix: int,
    repeats: int,
) -> dict[str, Any]:
    """Step time (train: forward + backward; infer: forward) of random full-length batches, interleaved.

    ``train-no-dropout`` repeats the prefix-length points with the prefix dropout off, which separates the
    cost of the prefix in attention from the cost of drawing its dropout mask.
    """
    points = [(p, base_length) for p in prefix_lengths] + [
        (p, t) for t in lengths for p in (0, base_prefix) if t != base_length
    ]
    models = {p: scaling_model(folder, p) for p in sorted({p for p, _ in points})}
    undropped = {p: scaling_model(folder, p, dropout=0.0) if p else models[0] for p in prefix_lengths}
    generator = torch.Generator().manual_seed(0)
    batches = {
        t: {
            "input_ids": torch.randint(1000, 2000, (batch_size, t), generator=generator),
            "attention_mask": torch.ones(batch_size, t, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=generator),
        }
        for t in sorted({t for _, t in points})
    }
    modes = ("train", "infer", "train-no-dropout")
    times: dict[str, dict[str, list[float]]] = {mode: defaultdict(list) for mode in modes}
    for index in range(repeats + 1):
        rotated = points[index % len(points) :] + points[: index % len(points)]
        for mode in modes:
            for p, t in rotated:
                if mode == "train-no-dropout" and t != base_length:
                    continue
                model = undropped[p] if mode == "train-no-dropout" else models[p]
                seconds = time_step(model, batches[t], mode != "infer")
                if index:  # the first round warms up
                    times[mode][f"{p}:{t}"].append(seconds)
        print(f"scaling round {index + 1}/{repeats + 1} (load {load_average():.1f})", flush=True)
    medians = {mode: {k: statistics.median(v) for k, v in d.items()} for mode, d in times.items()}
    return {
        "batch_size": batch_size,
        "base_length": base_length,
        "base_prefix": base_prefix,
        "prefix_lengths": list(prefix_lengths),
        "lengths": list(lengths),
        "median_seconds": medians,
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
        **environment(),
    }


def plot_scaling(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    medians, base_t, base_p = result["median_seconds"], result["base_length"], result["base_prefix"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = result["prefix_lengths"]
    if "train-no-dropout" in medians:
        left.plot(
            xs,
            [1000 * medians["train-no-dropout"][f"{p}:{base_t}"] for p in xs],
            "--",
            marker="o",
            label="train, no prefix dropout",
        )
    for mode, marker in (("train", "o"), ("infer", "s")):
        left.plot(xs, [1000 * medians[mode][f"{p}:{base_t}"] for p in xs], marker=marker, label=mode)
        ts = result["lengths"]
        for p, style in ((0, "--"), (base_p, "-")):
            right.plot(
                ts,
                [1000 * medians[mode][f"{p}:{t}"] for t in ts],
                style,
                marker=marker,
                label=f"{mode}, P={p}",
            )
    left.set(
        xlabel="prefix length P",
        ylabel="ms per step",
        title=f"batch {result['batch_size']} x {base_t} tokens",
    )
    right.set(
        xlabel="sequence length T",
        ylabel="ms per step",
        title=f"batch {result['batch_size']}",
        xscale="log",
        yscale="log",
    )
    right.set_xticks(result["lengths"], [str(t) for t in result["lengths"]])
    right.minorticks_off()
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("all-MiniLM-L6-v2, P-tuning v2 (train = forward + backward, infer = forward)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def render_scaling(result: dict[str, Any], image: str) -> list[str]:
    medians, base_t, base_p = result["median_seconds"], result["base_length"], result["base_prefix"]
    lines = [
        "#### Step time vs prefix length and sequence length",
        "",
        f"all-MiniLM-L6-v2, random full-length batches of {result['batch_size']}, {result['threads']} thread(s); "
        "train = forward + backward through the frozen backbone, infer = forward. P = 0 is the same frozen "
        "backbone with a backward pass through every layer but no prefix. Medians of interleaved repeats.",
        "",
        f"![scaling](../benchmarks/results/speed/{image})",
        "",
        f"| P (T = {base_t}) | train ms | overhead vs P=0 | train ms, no prefix dropout | overhead vs P=0 "
        "| infer ms | overhead vs P=0 |",
        "|---|---|---|---|---|---|---|",
    ]
    undropped = medians.get("train-no-dropout", {})
    for p in result["prefix_lengths"]:
        key = f"{p}:{base_t}"
        train, infer = medians["train"][key], medians["infer"][key]
        train0, infer0 = medians["train"][f"0:{base_t}"], medians["infer"][f"0:{base_t}"]
        plain = undropped.get(key)
        plain_cells = (
            "– | –" if plain is None else f"{1000 * plain:.0f} | {100 * (plain / train0 - 1):+.0f} %"
        )
        lines.append(
            f"| {p} | {1000 * train:.0f} | {100 * (train / train0 - 1):+.0f} % | {plain_cells} | "
            f"{1000 * infer:.0f} | {100 * (infer / infer0 - 1):+.0f} % |"
        )
    lines += [
        "",
        f"| T | train ms, P=0 | train ms, P={base_p} | overhead | infer ms, P=0 | infer ms, P={base_p} | overhead |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for t in result["lengths"]:
        row = [str(t)]
        for mode in ("train", "infer"):
            zero, with_prefix = medians[mode][f"0:{t}"], medians[mode][f"{base_p}:{t}"]
            row += [
                f"{1000 * zero:.0f}",
                f"{1000 * with_prefix:.0f}",
                f"{100 * (with_prefix / zero - 1):+.0f} %",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]
