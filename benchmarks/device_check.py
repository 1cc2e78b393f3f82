"""Checks that need a GPU: the core on CUDA agrees with the CPU, low precision keeps the prefix in fp32, and
eval/predict and serve (``--device``) answer on CUDA as on the CPU.

CI has no GPU, so this is a script, run by hand on a CUDA machine (results in docs/BENCHMARKS.md):

    python benchmarks/device_check.py                # exits 1 if any check fails
    python benchmarks/device_check.py --device cpu   # dry run of the script itself (CPU against CPU)

Backbones: the packaged all-MiniLM-L6-v2 (encoder) and a tiny random Llama with GQA (decoder).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from transformers import LlamaConfig, LlamaForCausalLM

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.serve.app import create_app
from ptuning.serve.inputs import examples_from_inputs
from ptuning.tasks.registry import get_task
from ptuning.training.predict import jsonable, load_for_inference, predict

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)


def encoder_model(
    device: str, attn: str = "sdpa", dtype: torch.dtype | None = None
) -> tuple[PromptModel, object]:
    backbone, tokenizer = load_backbone("minilm", attn_implementation=attn, dtype=dtype)
    torch.manual_seed(0)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=16, dropout=0.0), head_dropout=0.0)
    model.add_task("a", HeadSpec(HeadKind.CLASSIFICATION, ["neg", "pos"]))
    model.add_task("b", HeadSpec(HeadKind.CLASSIFICATION, ["no", "yes"]))
    return model.to(device).eval(), tokenizer


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float().cpu() - b.float().cpu()).abs().max().item()


def answers_agree(a: Any, b: Any) -> bool:
    """Equal labels and tags, numbers within 1e-4 (probabilities, scores)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(answers_agree(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(answers_agree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, abs_tol=1e-4)
    return a == b


def check_inference_commands(device: str) -> None:
    """``ptuning predict`` / ``eval`` (``load_for_inference(device=...)``) and ``ptuning serve --device`` on
    ``device``: the whole model lands there and answers as on the CPU (before --device, all three stayed on the
    CPU on any machine). Two random-weight prompts on MiniLM: SST-2 (sequence head) and CoNLL-2003 (tags)."""
    inputs = {
        "sentiment": ["a gripping, funny film", "dull", "the cast is wonderful but the plot drags badly"],
        "ner": ["John Smith flew to Berlin on Monday", "EU rejects German call to boycott British lamb"],
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        backbone, _ = load_backbone("minilm")
        for seed, (name, task_name) in enumerate((("sentiment", "sst2"), ("ner", "conll2003"))):
            torch.manual_seed(seed)
            config = PrefixConfig(prefix_length=8, dropout=0.0, init_std=0.5)
            model = PromptModel(backbone, "ptuning-v2", config, head_dropout=0.0)
            task = get_task(task_name)
            model.add_task(task_name, HeadSpec(task.head, task.label_names))
            save_checkpoint(model, root / name, {task_name: task_name})
        offline, served, placed = {}, {}, set()
        for where in ("cpu", device):
            for name, texts in inputs.items():
                loaded = load_for_inference(root / name, device=where)
                placed |= {(where, p.device.type) for p in loaded.model.parameters()}
                examples = examples_from_inputs(loaded.task, texts, 10_000)
                offline[where, name] = jsonable(predict(loaded, examples, batch_size=2))
            with TestClient(create_app(root, "minilm", max_wait_ms=0, device=where)) as http:
                for name, texts in inputs.items():
                    response = http.post(f"/tasks/{name}/predict", json={"inputs": texts})
                    served[where, name] = response.json() if response.status_code == 200 else response.text
    expected_places = {("cpu", "cpu"), (device, torch.device(device).type)}
    agree = all(
        answers_agree(offline["cpu", name], offline[device, name])
        and answers_agree(served["cpu", name], served[device, name])
        for name in inputs
    )
    check(
        f"predict/eval and serve --device {device} == --device cpu (sst2, conll2003)",
        placed == expected_places and agree,
        f"parameters on {sorted(placed)}; answers agree {agree}; "
        f"{device}: {offline[device, 'sentiment']} / served {served[device, 'sentiment']}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (default cuda)")
    device = parser.parse_args(argv).device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    name = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False  # compare fp32 with fp32
    torch.backends.cudnn.allow_tf32 = False
    texts = ["a gripping, beautifully acted film", "dull", "the plot never comes together, sadly"]

    cpu, tokenizer = encoder_model("cpu")
    gpu, _ = encoder_model(device)
    gpu.load_state_dict(cpu.state_dict())
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = cpu(**batch, task="a").logits
        on_gpu = gpu(**{k: v.to(device) for k, v in batch.items()}, task="a").logits
    check(
        f"{device} == cpu (fp32, sdpa)",
        max_diff(reference, on_gpu) < 1e-4,
        f"max |diff| {max_diff(reference, on_gpu):.2e}",
    )

    eager, _ = encoder_model(device, attn="eager")
    eager.load_state_dict(cpu.state_dict())
    with torch.no_grad():
        eager_logits = eager(**{k: v.to(device) for k, v in batch.items()}, task="a").logits
    check(
        f"eager == sdpa on {device}",
        max_diff(eager_logits, on_gpu) < 1e-4,
        f"max |diff| {max_diff(eager_logits, on_gpu):.2e}",
    )

    rows = ["a", "b", "a"]
    with torch.no_grad():
        gpu_batch = {k: v.to(device) for k, v in batch.items()}
        mixed = gpu.encode(
            gpu_batch["input_ids"], gpu_batch["attention_mask"], gpu_batch["token_type_ids"], rows
        )
        alone = torch.cat(
            [
                gpu.encode(
                    *(gpu_batch[k][i : i + 1] for k in ("input_ids", "attention_mask", "token_type_ids")), [r]
                )
                for i, r in enumerate(rows)
            ]
        )
    real = gpu_batch["attention_mask"].bool()
    diff = max_diff(mixed[real], alone[real])
    check(f"mixed-prefix batch == rows alone on {device}", diff < 1e-4, f"max |diff| {diff:.2e}")

    # bf16 backbone, fp32 prefix + head: a training step stays finite and only trainable tensors change.
    low, _ = encoder_model(device, dtype=torch.bfloat16)
    prefix_dtypes = {p.dtype for p in low.prefixes.parameters()}
    backbone_before = {k: v.clone() for k, v in low.backbone.state_dict().items()}
    low.train()
    optimizer = torch.optim.AdamW([p for p in low.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([1, 0, 0], device=device)
    losses = []
    for _ in range(5):
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = low(**gpu_batch, labels=labels, task="a").loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    unchanged = all(torch.equal(v, low.backbone.state_dict()[k]) for k, v in backbone_before.items())
    check(
        "bf16 backbone + autocast: prefix kept fp32, finite falling loss, backbone untouched",
        prefix_dtypes == {torch.float32}
        and all(map(torch.isfinite, map(torch.tensor, losses)))
        and losses[-1] < losses[0]
        and unchanged,
        f"prefix dtypes {sorted(map(str, prefix_dtypes))}, losses {[round(x, 4) for x in losses]}, "
        f"backbone unchanged {unchanged}",
    )

    # Decoder with GQA: greedy generation with the prefix, dynamic == static cache, cuda == cpu.
    config = LlamaConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    decoders = {}
    for where in ("cpu", device):
        torch.manual_seed(0)
        backbone = LlamaForCausalLM(config).eval()
        model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0, init_std=1.0))
        model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
        decoders[where] = model.to(where).eval()
    decoders[device].load_state_dict(decoders["cpu"].state_dict())
    prompt = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    options = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    on_cpu = decoders["cpu"].generate(prompt, mask, **options)
    dynamic = decoders[device].generate(prompt.to(device), mask.to(device), **options)
    static = decoders[device].generate(
        prompt.to(device), mask.to(device), cache_implementation="static", **options
    )
    check(
        f"llama-gqa greedy generate: {device} == cpu, static == dynamic cache",
        torch.equal(on_cpu, dynamic.cpu()) and torch.equal(dynamic, static),
        f"cpu {on_cpu.tolist()} {device} {dynamic.tolist()} static {static.tolist()}",
    )
    check_inference_commands(device)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
