"""Load test of ``ptuning serve`` on loopback: 8 tasks mixed in one backbone pass vs a single-task server.

Builds 8 prompt checkpoints on the packaged MiniLM (random prefixes, P=16, SST-2 heads: the compute is the
same whatever the weights), starts two servers as subprocesses on 127.0.0.1 (one holding all 8, one holding
task0 only), and drives them with N concurrent httpx clients, one input per request, texts from SST-2 dev.
The mixed run spreads consecutive requests over the 8 tasks, so concurrent requests carry different
prefixes; the single run sends every request to task0. Rounds alternate (single, mixed, single, ...) so
that drift in the machine's load hits both alike. Every round is bounded in time and in request count.

Memory: RSS of each server process after its rounds, the prompt files' size, and what N separately
fine-tuned copies of the backbone would need (parameter count x 4 bytes, and N x the single server's RSS).

    python benchmarks/bench_serve.py --output-dir outputs/bench_serve              # ~5 min
    python benchmarks/bench_serve.py --output-dir /tmp/serve-smoke --quick        # ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "dev.tsv"
TASKS = [f"task{i}" for i in range(8)]


def build_checkpoints(root: Path, prefix_length: int) -> dict[str, Any]:
    """root/mixed holds task0..task7, root/single holds task0 only (the same files)."""
    import torch

    from ptuning.core.backbones import load_backbone
    from ptuning.core.checkpoint import save_checkpoint
    from ptuning.core.config import PrefixConfig
    from ptuning.core.model import HeadSpec, PromptModel
    from ptuning.tasks.registry import get_task

    backbone, _ = load_backbone("minilm")
    task = get_task("sst2")
    for index, name in enumerate(TASKS):
        torch.manual_seed(index)
        model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=prefix_length, init_std=0.1))
        model.add_task("sst2", HeadSpec(task.head, task.label_names))
        save_checkpoint(model, root / "mixed" / name, {"sst2": "sst2"})
        if index == 0:
            save_checkpoint(model, root / "single" / name, {"sst2": "sst2"})
    report = model.trainable_parameters()
    return {"backbone_params": report.total - report.trainable, "prompt_params_per_task": report.trainable}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoints: Path, port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "ptuning.serve.command",
        "--checkpoints",
        str(checkpoints),
        "--model",
        "minilm",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--log-level",
        "warning",
    ]
    env = {
        **os.environ,
        "TRANSFORMERS_VERBOSITY": "error",
        "PTUNING_API_KEY": "",
        "OMP_NUM_THREADS": str(args.threads),  # the same as when the checkpoints were built (fingerprint)
    }
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"server on port {port} not healthy after {timeout} s")


async def drive(
    port: int, tasks: list[str], texts: list[str], clients: int, seconds: float, limit: int
) -> dict:
    """``clients`` concurrent clients until ``seconds`` pass or ``limit`` requests were sent."""
    latencies: list[float] = []
    failures = 0
    counter = itertools.count()
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as http:

        async def client() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                number = next(counter)
                if number >= limit:
                    return
                body = {"inputs": [texts[number % len(texts)]]}
                tick = time.perf_counter()
                response = await http.post(f"/tasks/{tasks[number % len(tasks)]}/predict", json=body)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - tick)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000 if latencies else (None,) * 3
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 2),
        "throughput": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
    }


def batch_stats(port: int) -> dict:
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).json()
    return {
        "batches": metrics["batches"]["count"],
        "mixed_batches": metrics["batches"]["mixed"],
        "mean_rows": metrics["batches"]["rows"]["mean"],
        "mean_tasks": metrics["batches"]["mean_tasks"],
        "pass_ms_mean": metrics["batches"]["pass_ms"]["mean"],
        "server_p50_ms": metrics["latency_ms"]["p50"],  # inside the handler: queue + pass + decode
    }


def read_texts(limit: int = 400) -> list[str]:
    if DATA.is_file():
        lines = DATA.read_text().splitlines()[1:]
        texts = [line.split("\t", 1)[-1] for line in lines if "\t" in line]
        if texts:
            return texts[:limit]
    return [f"sample review number {i}, neither good nor bad" for i in range(limit)]


def pooled(rounds: list[dict]) -> dict:
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    return {
        "requests": requests,
        "failures": sum(r["failures"] for r in rounds),
        "throughput": round(requests / seconds, 2),
        "p50_ms": round(float(np.median([r["p50_ms"] for r in rounds])), 1),
        "p95_ms": round(float(np.median([r["p95_ms"] for r in rounds])), 1),
        "p99_ms": round(float(np.median([r["p99_ms"] for r in rounds])), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="outputs/bench_serve")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server, alternating")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one round")
    parser.add_argument("--max-requests", type=int, default=3000, help="cap per round")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--prefix-length", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the servers")
    parser.add_argument("--quick", action="store_true", help="1 round of 5 s, 4 clients")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.seconds, args.clients = 1, 5.0, 4
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    sizes = build_checkpoints(output / "checkpoints", args.prefix_length)
    texts = read_texts()
    ports = {"single": free_port(), "mixed": free_port()}
    servers = {
        kind: start_server(output / "checkpoints" / kind, ports[kind], args, output / f"server-{kind}.log")
        for kind in ports
    }
    results: dict[str, Any] = {"settings": vars(args), "sizes": sizes, "rounds": {"single": [], "mixed": []}}
    try:
        for kind in servers:
            health = wait_healthy(ports[kind], servers[kind])
            assert health["tasks"] == (8 if kind == "mixed" else 1), health
        for kind in ("single", "mixed"):  # warm-up: first passes allocate and tune kernels
            asyncio.run(
                drive(ports[kind], TASKS if kind == "mixed" else TASKS[:1], texts, args.clients, 3, 200)
            )
        for round_index in range(args.rounds):
            for kind in ("single", "mixed"):
                tasks = TASKS if kind == "mixed" else TASKS[:1]
                result = asyncio.run(
                    drive(ports[kind], tasks, texts, args.clients, args.seconds, args.max_requests)
                )
                results["rounds"][kind].append(result)
                print(f"round {round_index} {kind}: {result}", flush=True)
        for kind in servers:
            results[kind] = {
                **pooled(results["rounds"][kind]),
                **batch_stats(ports[kind]),
                "rss_mb": round(psutil.Process(servers[kind].pid).memory_info().rss / 2**20, 1),
            }
    finally:
        for process in servers.values():
            process.terminate()
        for process in servers.values():
            process.wait(timeout=30)

    prompt_bytes = sum(f.stat().st_size for f in (output / "checkpoints" / "mixed").rglob("*") if f.is_file())
    backbone_mb = sizes["backbone_params"] * 4 / 2**20
    results["memory"] = {
        "server_8_tasks_rss_mb": results["mixed"]["rss_mb"],
        "server_1_task_rss_mb": results["single"]["rss_mb"],
        "prompt_files_8_tasks_mb": round(prompt_bytes / 2**20, 2),
        "backbone_fp32_mb": round(backbone_mb, 1),
        "separate_finetuned_weights_8_mb": round(8 * backbone_mb, 1),
        "separate_finetuned_servers_8_rss_mb": round(8 * results["single"]["rss_mb"], 1),
    }
    ratio = results["mixed"]["throughput"] / results["single"]["throughput"]
    results["mixed_over_single_throughput"] = round(ratio, 3)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print("\n| server | requests | req/s | p50 ms | p95 ms | p99 ms | mean rows/pass | tasks/pass | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, label in (("single", "1 task"), ("mixed", "8 tasks, mixed")):
        r = results[kind]
        print(
            f"| {label} | {r['requests']} | {r['throughput']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['mean_rows']} | {r['mean_tasks']} | {r['rss_mb']} |"
        )
    print(f"\nmixed / single throughput: {ratio:.3f}")
    print(json.dumps(results["memory"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
