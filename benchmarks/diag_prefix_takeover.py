"""Why do some deep prefixes collapse a tagging run to 0 F1 on all-mpnet-base-v2? Watch the first steps.

Trains one prefix (P-tuning v2's table or prefix-tuning's MLP) on CoNLL-2003 with a plain loop: batches of 16
in a seeded random order, AdamW at a constant rate, no warmup or clipping, P = 16 and the library's other
defaults. At chosen steps it scores a fixed batch of 16 dev sentences, eval mode, and records:

- ``value_ratio`` / ``key_ratio``: the prefix values' (keys') RMS over the real tokens' values (keys),
  averaged over the 12 layers;
- ``prefix_attention``: per layer, the attention share the real tokens give the 16 prefix slots, read from
  the injected attention's own probabilities (``output_attentions``; ``core/injection/mpnet.py`` puts the
  prefix columns first);
- ``token_specific``: for the last layer's states of the real tokens, the mean of |h - mean(h)| / |h|, the
  share of a state that is not common to every token (0.86 for the backbone without a prefix); a tagging head
  reads only that share, so near 0 it can predict the label frequencies and nothing more;
- ``loss``: the mean training loss of the last 10 steps.

The loop is not the quality runner's (no linear decay, no length grouping, its own batch order), so a rate at
the edge of collapse there may fall either way here; the question is what a collapse looks like.
Appends JSON lines to benchmarks/results/diagnostics/prefix_takeover.jsonl.

    python benchmarks/diag_prefix_takeover.py --method prefix-mlp --learning-rate 3e-4   # ~8 min, 1 thread
    python benchmarks/diag_prefix_takeover.py --method ptuning-v2 --learning-rate 1e-2
    python benchmarks/diag_prefix_takeover.py --method ptuning-v2 --learning-rate 3e-2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.collate import collate
from ptuning.tasks.registry import get_task
from ptuning.training.data import featurize_split, read_split

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "conll2003"
RESULTS = ROOT / "benchmarks" / "results" / "diagnostics" / "prefix_takeover.jsonl"
TASK = "conll2003"


def token_specific_share(hidden: torch.Tensor) -> float:
    """Mean |h - mean(h)| / |h| over the rows of ``hidden`` (real tokens' states, one per row)."""
    centered = hidden - hidden.mean(0)
    return (centered.norm(dim=-1) / hidden.norm(dim=-1)).mean().item()


def rms(tensor: torch.Tensor) -> float:
    return tensor.float().pow(2).mean().sqrt().item()


class Probe:
    """A fixed dev batch, and what one prefix does to it (``measure``)."""

    def __init__(self, features: list[dict[str, Any]], pad_token_id: int) -> None:
        self.batch = collate(features, pad_token_id)
        self.real = self.batch["attention_mask"].bool()

    def without_prefix(self, backbone: torch.nn.Module) -> float:
        with torch.no_grad():
            hidden = backbone(
                input_ids=self.batch["input_ids"], attention_mask=self.batch["attention_mask"]
            ).last_hidden_state
        return token_specific_share(hidden[self.real])

    def measure(self, model: PromptModel) -> dict[str, Any]:
        layers = model.backbone.encoder.layer
        captured: dict[Any, Any] = {}
        hooks = [
            getattr(layer.attention.attn, part).register_forward_hook(
                lambda _module, _inputs, out, key=(index, part): captured.__setitem__(key, out.detach())
            )
            for index, layer in enumerate(layers)
            for part in ("k", "v")
        ]
        hooks.append(  # the attention probabilities the backbone returns when asked (see output_attentions)
            model.backbone.register_forward_hook(
                lambda _module, _inputs, out: captured.__setitem__("attentions", out.attentions)
            )
        )
        config = model.backbone.config
        asked_before, config.output_attentions = config.output_attentions, True
        model.eval()
        rows = self.batch["input_ids"].shape[0]
        try:
            with torch.no_grad():
                hidden = model.encode(
                    self.batch["input_ids"], self.batch["attention_mask"], None, [TASK] * rows
                )
                prefix = model.prefix_kv([TASK])
        finally:
            config.output_attentions = asked_before
            for hook in hooks:
                hook.remove()
        geometry = model.geometry
        key_ratios, value_ratios, shares = [], [], []
        for index in range(len(layers)):
            key, value = (
                captured[(index, part)]
                .view(rows, -1, geometry.num_kv_heads, geometry.head_dim)
                .transpose(1, 2)
                for part in ("k", "v")
            )
            prefix_key, prefix_value = prefix.layers[index]
            real = self.real[:, None, :, None].expand_as(key)
            key_ratios.append(rms(prefix_key) / rms(key[real]))
            value_ratios.append(rms(prefix_value) / rms(value[real]))
            probabilities = captured["attentions"][index]  # (B, heads, T, P + T), prefix columns first
            on_prefix = probabilities[..., : prefix_key.shape[2]].sum(-1)  # (B, heads, T)
            shares.append(round(on_prefix.permute(0, 2, 1)[self.real].mean().item(), 3))
        return {
            "key_ratio": round(sum(key_ratios) / len(key_ratios), 3),
            "value_ratio": round(sum(value_ratios) / len(value_ratios), 3),
            "prefix_attention": shares,
            "token_specific": round(token_specific_share(hidden[self.real]), 3),
        }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = get_task(TASK)
    backbone, tokenizer = load_backbone(args.model)
    train = read_split(task, str(args.data), "train", limit=args.train_examples)
    featurize_split(task, train, tokenizer, 128)
    dev = read_split(task, str(args.data), "dev", limit=16)
    featurize_split(task, dev, tokenizer, 128)
    probe = Probe(dev.features, tokenizer.pad_token_id)
    baseline = probe.without_prefix(backbone)
    model = PromptModel(backbone, args.method, PrefixConfig(prefix_length=16))
    model.add_task(TASK, HeadSpec(HeadKind.TOKEN_CLASSIFICATION, task.label_names))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    order = list(range(len(train.features)))
    random.Random(args.seed).shuffle(order)
    checks, losses, records, start = set(args.checks), [], [], time.time()
    for step in range(max(checks) + 1):
        if step in checks:
            recent = losses[-10:]
            record = {
                "method": args.method,
                "learning_rate": args.learning_rate,
                "seed": args.seed,
                "step": step,
                "loss": round(sum(recent) / len(recent), 4) if recent else None,
                "token_specific_without_prefix": round(baseline, 3),
                **probe.measure(model),
                "seconds": round(time.time() - start, 1),
            }
            print(json.dumps(record), flush=True)
            records.append(record)
        if step == max(checks):
            break
        model.train()
        begin = (step * args.batch_size) % (len(order) - args.batch_size + 1)
        rows = [train.features[i] for i in order[begin : begin + args.batch_size]]
        loss = model(**collate(rows, tokenizer.pad_token_id), task=TASK).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=("ptuning-v2", "prefix-mlp"), default="prefix-mlp")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--model", default="mpnet", help="an MPNet backbone (the hooks read MPNet's q/k/v)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--checks", type=int, nargs="+", default=[0, 20, 60, 120, 188])
    parser.add_argument("--train-examples", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    records = run(args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
