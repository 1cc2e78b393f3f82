"""Counters behind GET /metrics: requests per task and status, batch composition, latency percentiles.

Everything is updated from the event loop thread only, so plain dicts need no lock. Latency and batch
percentiles are over the most recent ``window`` requests / batches, so they follow the current load.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from typing import Any

import numpy as np

from ptuning.serve.batcher import BatchRecord


class ServerMetrics:
    def __init__(self, window: int = 4096) -> None:
        self.started = time.time()
        self.requests: dict[str, Counter] = defaultdict(Counter)  # task -> {status code: count}
        self.items: Counter = Counter()  # task -> inputs answered
        self.latency = deque(maxlen=window)  # seconds, successful predict requests
        self.batches = deque(maxlen=window)
        self.batch_count = 0
        self.failed_batches = 0
        self.mixed_batches = 0  # batches holding more than one task

    def record_request(self, task: str, status: int, seconds: float, items: int = 0) -> None:
        self.requests[task][str(status)] += 1
        if status == 200:
            self.items[task] += items
            self.latency.append(seconds)

    def record_batch(self, record: BatchRecord) -> None:
        self.batches.append(record)
        self.batch_count += 1
        self.failed_batches += record.failed
        self.mixed_batches += record.tasks > 1

    def snapshot(self) -> dict[str, Any]:
        rows = [b.rows for b in self.batches]
        return {
            "uptime_seconds": round(time.time() - self.started, 1),
            "requests": {task: dict(counts) for task, counts in sorted(self.requests.items())},
            "items": dict(sorted(self.items.items())),
            "latency_ms": _percentiles([s * 1000 for s in self.latency]),
            "batches": {
                "count": self.batch_count,
                "mixed": self.mixed_batches,
                "failed": self.failed_batches,
                "rows": _percentiles(rows),
                "mean_requests": _mean([b.requests for b in self.batches]),
                "mean_tasks": _mean([b.tasks for b in self.batches]),
                "pass_ms": _percentiles([b.seconds * 1000 for b in self.batches]),
            },
        }


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    array = np.asarray(values, dtype=float)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        "count": len(values),
        "mean": round(float(array.mean()), 3),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(array.max()), 3),
    }


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None
