"""Dynamic batching: concurrent requests, whatever their task, share one backbone pass.

Rule. Requests queue in arrival order. A batch opens with the oldest waiting request and takes the next
ones, in order, while their rows fit in ``max_batch_size`` backbone rows (a multiple-choice feature counts
one row per choice); it closes when the next request would not fit, or ``max_wait_ms`` after its first
request arrived, whichever comes first. Requests that queued while the model was busy are taken at once.
A request bigger than ``max_batch_size`` is cut into chunks that each run as a batch of their own.
At most ``max_queued_rows`` rows wait at once: a request that would pass it is refused (``QueueFull``)
unless nothing waits, so one request of any size always gets in; a request whose client went away (its
future cancelled) is dropped from the queue without being run.

Passes run one at a time on a single model thread, so the event loop stays free to accept requests. If a
mixed pass fails, each request of it is run again on its own: only the request that fails gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ptuning.serve.mixed import Group, feature_rows

logger = logging.getLogger(__name__)

# per group: its outputs, or the exception its request gets (a task unloaded while it queued)
RunFn = Callable[[list[Group]], list[list[Any] | Exception]]


QUEUED_PASSES = 32  # the default queue bound, in passes of max_batch_size rows (see default_queued_rows)


def default_queued_rows(max_batch_size: int) -> int:
    """``QUEUED_PASSES`` passes' worth of rows: a row beyond that waits for 32 passes (seconds on a CPU), so
    its client is better told to come back, and the features held stay bounded (about 60 KB per 384-token
    QA window, so ~60 MB at the defaults) instead of growing with every client that connects."""
    return QUEUED_PASSES * max_batch_size


def check_batching(max_batch_size: int, max_wait_ms: float, max_queued_rows: int | None = None) -> None:
    """Refuse settings under which requests would never be answered. Written so that NaN fails too (every
    comparison with it is False): a NaN deadline never passes, so a lone request would wait forever, as it
    would with an infinite one."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if not 0 <= max_wait_ms < math.inf:
        raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms}")
    if max_queued_rows is not None and max_queued_rows < 1:
        raise ValueError(f"max_queued_rows must be >= 1, got {max_queued_rows}")


class QueueFull(Exception):
    """The queue holds ``max_queued_rows`` rows already; the request may be retried shortly."""


@dataclass
class BatchRecord:
    """What one backbone pass held, for /metrics."""

    rows: int
    requests: int
    tasks: int
    seconds: float
    failed: bool = False


@dataclass
class _Pending:
    group: Group
    rows: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Queues groups of features and runs them through ``run`` in mixed batches (see the module doc)."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[BatchRecord], None] | None = None,
        max_queued_rows: int | None = None,
    ) -> None:
        check_batching(max_batch_size, max_wait_ms, max_queued_rows)
        self.run = run
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_queued_rows = max_queued_rows or default_queued_rows(max_batch_size)
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a pass, not counting those whose client went away."""
        return sum(item.rows for item in self._queue if not item.future.done())

    @property
    def full(self) -> bool:
        return self.queued_rows >= self.max_queued_rows

    async def submit(self, group: Group) -> list[Any]:
        """The head outputs of ``group``'s features, once a batch holding them has run; ``QueueFull`` if
        they would take the queue past ``max_queued_rows``. Cancelling it drops the request's rows from the
        queue (those already in a running pass are computed and thrown away)."""
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        chunks = self._chunks(group)
        waiting, rows = self.queued_rows, sum(chunk.rows for chunk in chunks)
        if waiting and waiting + rows > self.max_queued_rows:
            raise QueueFull(
                f"{waiting} rows are waiting for the model, the limit is {self.max_queued_rows} and this "
                f"request has {rows}; retry shortly"
            )
        pending = [_Pending(chunk, chunk.rows, loop.create_future()) for chunk in chunks]
        self._queue.extend(pending)
        self._arrived.set()
        results = await asyncio.gather(*(item.future for item in pending))
        return [output for chunk in results for output in chunk]

    def _chunks(self, group: Group) -> list[Group]:
        chunks, current, rows = [], [], 0
        for feature in group.features:
            size = feature_rows(feature, group.kind)
            if current and rows + size > self.max_batch_size:
                chunks.append(current)
                current, rows = [], 0
            current.append(feature)
            rows += size
        chunks.append(current)
        return [Group(group.head, group.prefix, group.kind, chunk) for chunk in chunks]

    def _ensure_worker(self) -> None:
        """Start the batching loop in the running event loop (lazily: ASGI test clients skip lifespan)."""
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name="ptuning-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            results, failed = await loop.run_in_executor(
                self.executor, self._run_isolated, [item.group for item in batch]
            )
            seconds = time.perf_counter() - started
            for item, result in zip(batch, results, strict=True):
                if item.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            if self.on_batch is not None:
                tasks = len({item.group.head for item in batch})
                self.on_batch(BatchRecord(sum(i.rows for i in batch), len(batch), tasks, seconds, failed))

    async def _next_batch(self) -> list[_Pending]:
        while True:
            while self._queue and self._queue[0].future.done():  # its client went away
                self._queue.popleft()
            if self._queue:
                break
            self._arrived.clear()
            await self._arrived.wait()
        first = self._queue.popleft()  # always taken, even if alone it exceeds max_batch_size
        deadline = first.enqueued + self.max_wait
        batch, rows = [first], first.rows
        while True:
            while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
                item = self._queue.popleft()
                if not item.future.done():
                    batch.append(item)
                    rows += item.rows
            if self._queue or rows >= self.max_batch_size:
                return batch  # the next request does not fit: it opens the next batch
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return batch
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _run_isolated(self, groups: list[Group]) -> tuple[list[Any], bool]:
        """Outputs (or the exception) per group; a failed mixed pass is retried one group at a time."""
        try:
            return self.run(groups), False
        except Exception as error:
            if len(groups) == 1:
                logger.exception("a model pass failed")
                return [error], True
        results: list[Any] = []
        for group in groups:
            try:
                results.append(self.run([group])[0])
            except Exception as error:
                logger.exception("a model pass failed")
                results.append(error)
        return results, True
