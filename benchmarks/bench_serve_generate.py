"""Load test of ``POST /tasks/{task}/generate`` on loopback: 4 prefixes mixed in one decoding batch vs one.

Builds 4 causal-LM prompt checkpoints on one base model (random prefixes, P=16: the compute is the same
whatever the weights), starts ``ptuning serve`` on 127.0.0.1 as a subprocess holding all four, and drives it
with streaming requests (greedy, ``--max-new-tokens`` each) in three scenarios, rounds interleaved so that
drift in the machine's load hits all alike:

* ``one-alone``: one client, task0 only (no batching at all);
* ``one-prefix``: ``--concurrency`` clients, every request to task0 (batching, one prefix);
* ``mixed``: ``--concurrency`` clients, consecutive requests spread over the 4 tasks (each row its prefix).

Reported: generated tokens/s per scenario, ``mixed / one-prefix`` (the cost of mixing prefixes) and
``mixed / one-alone`` (what batching gains), time to first token p50/p95, and memory: the backbone's
parameters + the sum of the prefixes (what the server holds for 4 tasks) next to the server's RSS.
Everything is bounded: ``--rounds`` x ``--requests`` per scenario, and ``--time-limit`` seconds in all.

    python benchmarks/bench_serve_generate.py --model smollm2 --output outputs/bench_serve_generate.json
    python benchmarks/bench_serve_generate.py --model /path/to/tiny-llama --rounds 1 --requests 4   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

SOURCE = Path(__file__).resolve().parents[1] / "src"  # the server runs this checkout's ptuning
TASKS = [f"task{i}" for i in range(4)]
PROMPTS = [
    "The capital of France is",
    "Write one sentence about the sea.",
    "List three colours:",
    "Question: what is two plus two?\nAnswer:",
    "Once upon a time",
    "The best way to learn a language is",
    "Translate to French: good morning",
    "A short poem about autumn:",
]
SCENARIOS = ("one-alone", "one-prefix", "mixed")


def build_checkpoints(model: str, root: Path, prefix_length: int) -> dict[str, int]:
    """root/task0..task3: causal-LM checkpoints with random prefixes; parameter bytes of backbone and prefixes."""
    import torch

    from ptuning.core.backbones import load_backbone
    from ptuning.core.checkpoint import save_checkpoint
    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel

    backbone, _ = load_backbone(model, causal_lm=True)
    prefix_bytes = 0
    for index, name in enumerate(TASKS):
        torch.manual_seed(index)
        prompt = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=prefix_length, init_std=0.02))
        prompt.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
        save_checkpoint(prompt, root / name, {"lm": "causal-lm"})
        prefix_bytes += sum(p.numel() * p.element_size() for p in prompt.prefixes.parameters())
    backbone_bytes = sum(p.numel() * p.element_size() for p in backbone.parameters())
    return {"backbone_bytes": backbone_bytes, "prefix_bytes": prefix_bytes}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, root: Path, port: int, max_new_tokens: int, timeout: float) -> subprocess.Popen:
    """``ptuning serve`` on loopback; returns once /health answers (or raises with the server's output)."""
    command = [
        sys.executable, "-m", "ptuning.serve.command", "--checkpoints", str(root), "--model", model,
        "--host", "127.0.0.1", "--port", str(port), "--max-new-tokens", str(max_new_tokens),
        "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")])),
    }
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{server.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout} s")


async def one_request(
    client: httpx.AsyncClient, task: str, prompt: str, max_new_tokens: int
) -> dict[str, Any]:
    """Stream one greedy generation; its token count, time to first token and total time (seconds)."""
    body = {"prompt": prompt, "max_new_tokens": max_new_tokens, "stream": True}
    started = time.perf_counter()
    first = None
    summary: dict[str, Any] = {}
    async with client.stream("POST", f"/tasks/{task}/generate", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if first is None and event.get("token") is not None:
                first = time.perf_counter() - started
            if event.get("done"):
                summary = event
    return {"tokens": summary.get("tokens", 0), "ttft": first, "seconds": time.perf_counter() - started}


async def run_round(
    port: int, scenario: str, requests: int, concurrency: int, max_new_tokens: int, offset: int
) -> dict[str, Any]:
    """``requests`` generations by ``concurrency`` clients (1 for one-alone); tokens/s over the round."""
    clients = 1 if scenario == "one-alone" else concurrency
    jobs = [
        (
            TASKS[(offset + i) % len(TASKS)] if scenario == "mixed" else TASKS[0],
            PROMPTS[(offset + i) % len(PROMPTS)],
        )
        for i in range(requests)
    ]
    results: list[dict[str, Any]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while jobs:
            task, prompt = jobs.pop(0)
            results.append(await one_request(client, task, prompt, max_new_tokens))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        seconds = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "ttft": [r["ttft"] for r in results if r["ttft"] is not None],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as folder:
        root = Path(folder)
        sizes = build_checkpoints(args.model, root, args.prefix_length)
        port = free_port()
        server = start_server(args.model, root, port, args.max_new_tokens, args.startup_timeout)
        try:
            warm = run_round(port, "mixed", len(TASKS), args.concurrency, 4, 0)  # first passes are slow
            asyncio.run(warm)
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
            deadline = time.monotonic() + args.time_limit
            for number in range(args.rounds):
                for scenario in SCENARIOS:
                    if time.monotonic() > deadline:
                        break
                    outcome = run_round(
                        port, scenario, args.requests, args.concurrency, args.max_new_tokens, number
                    )
                    rounds[scenario].append(asyncio.run(outcome))
            rss = psutil.Process(server.pid).memory_info().rss
        finally:
            server.terminate()
            server.wait(timeout=30)
    summary: dict[str, Any] = {
        "model": args.model,
        "prefix_length": args.prefix_length,
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "memory": {
            **sizes,
            "backbone_plus_prefixes_bytes": sizes["backbone_bytes"] + sizes["prefix_bytes"],
            "server_rss_bytes": rss,
        },
        "scenarios": {},
    }
    for scenario, outcomes in rounds.items():
        if not outcomes:
            continue
        tokens, seconds = sum(o["tokens"] for o in outcomes), sum(o["seconds"] for o in outcomes)
        ttft = [t for o in outcomes for t in o["ttft"]]
        summary["scenarios"][scenario] = {
            "rounds": len(outcomes),
            "tokens": tokens,
            "tokens_per_second": tokens / seconds if seconds else 0.0,
            "ttft_p50_ms": 1000 * float(np.percentile(ttft, 50)) if ttft else None,
            "ttft_p95_ms": 1000 * float(np.percentile(ttft, 95)) if ttft else None,
        }
    rates = {name: s["tokens_per_second"] for name, s in summary["scenarios"].items()}
    if rates.get("one-prefix") and "mixed" in rates:
        summary["mixed_vs_one_prefix"] = rates["mixed"] / rates["one-prefix"]
    if rates.get("one-alone") and "mixed" in rates:
        summary["mixed_vs_one_alone"] = rates["mixed"] / rates["one-alone"]
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="base causal LM: packaged name or folder")
    parser.add_argument("--prefix-length", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8, help="generations per scenario per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds for all rounds together")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--output", help="write the summary as JSON here too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
