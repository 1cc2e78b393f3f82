"""The batching rule on a fake model: size cap, wait cap, arrival order, chunking and crash isolation."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from ptuning.core.kinds import HeadKind
from ptuning.serve.batcher import BatchRecord, DynamicBatcher
from ptuning.serve.mixed import Group


def group(head: str, rows: int, kind: HeadKind = HeadKind.CLASSIFICATION) -> Group:
    if kind is HeadKind.MULTIPLE_CHOICE:
        return Group(head, head, kind, [{"input_ids": [[1], [2]], "n": i} for i in range(rows // 2)])
    return Group(head, head, kind, [{"input_ids": [1], "n": i} for i in range(rows)])


class FakeModel:
    """Echoes (head, n) per feature and remembers every pass; a head named 'bad' raises."""

    def __init__(self) -> None:
        self.passes: list[list[str]] = []

    def __call__(self, groups: list[Group]) -> list[list[tuple[str, int]]]:
        self.passes.append([g.head for g in groups])
        if any(g.head == "bad" for g in groups):
            raise RuntimeError("bad head")
        return [[(g.head, f["n"]) for f in g.features] for g in groups]


def make(max_batch_size: int, max_wait_ms: float):
    model, records = FakeModel(), []
    batcher = DynamicBatcher(model, ThreadPoolExecutor(1), max_batch_size, max_wait_ms, records.append)
    return batcher, model, records


@pytest.mark.anyio
async def test_concurrent_requests_fill_batches_up_to_the_row_cap_in_arrival_order() -> None:
    batcher, model, records = make(max_batch_size=4, max_wait_ms=200)
    results = await asyncio.gather(*(batcher.submit(group(f"t{i}", 2)) for i in range(5)))
    assert results[3] == [("t3", 0), ("t3", 1)]
    assert model.passes == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert [r.rows for r in records] == [4, 4, 2] and [r.tasks for r in records] == [2, 2, 1]
    await batcher.close()


@pytest.mark.anyio
async def test_a_lone_request_waits_at_most_max_wait() -> None:
    batcher, model, _ = make(max_batch_size=64, max_wait_ms=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.submit(group("a", 1))
    assert 0.04 <= loop.time() - started < 1.0
    await batcher.close()


@pytest.mark.anyio
async def test_requests_arriving_within_the_wait_join_the_batch() -> None:
    batcher, model, _ = make(max_batch_size=64, max_wait_ms=300)

    async def later(head: str, delay: float):
        await asyncio.sleep(delay)
        return await batcher.submit(group(head, 1))

    await asyncio.gather(later("a", 0), later("b", 0.05), later("c", 0.1))
    assert model.passes == [["a", "b", "c"]]
    await batcher.close()


@pytest.mark.anyio
async def test_a_request_larger_than_the_cap_runs_in_chunks_and_keeps_its_order() -> None:
    batcher, model, records = make(max_batch_size=3, max_wait_ms=0)
    result = await batcher.submit(group("big", 7))
    assert result == [("big", n) for n in range(7)]
    assert [r.rows for r in records] == [3, 3, 1]
    await batcher.close()


@pytest.mark.anyio
async def test_multiple_choice_features_count_one_row_per_choice() -> None:
    batcher, model, records = make(max_batch_size=4, max_wait_ms=100)
    await asyncio.gather(
        batcher.submit(group("mc", 4, HeadKind.MULTIPLE_CHOICE)), batcher.submit(group("x", 1))
    )
    assert [r.rows for r in records] == [4, 1]
    await batcher.close()


@pytest.mark.anyio
async def test_a_failing_request_does_not_fail_its_batch_companions() -> None:
    batcher, model, records = make(max_batch_size=64, max_wait_ms=100)
    results = await asyncio.gather(
        batcher.submit(group("a", 1)),
        batcher.submit(group("bad", 1)),
        batcher.submit(group("c", 1)),
        return_exceptions=True,
    )
    assert results[0] == [("a", 0)] and results[2] == [("c", 0)]
    assert isinstance(results[1], RuntimeError)
    assert model.passes == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]  # the mixed pass, then one by one
    assert records[-1] == BatchRecord(3, 3, 3, records[-1].seconds, failed=True)
    assert await batcher.submit(group("d", 1)) == [("d", 0)]  # and the batcher keeps serving
    await batcher.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(FakeModel(), ThreadPoolExecutor(1), max_batch_size=0)


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), -1.0])
def test_a_wait_that_never_ends_is_refused(wait: float) -> None:
    """A NaN wait passed ``wait < 0`` and made a deadline that never passes: a lone request waited forever."""
    with pytest.raises(ValueError, match=r"^max_wait_ms must be a finite number >= 0, got "):
        DynamicBatcher(FakeModel(), ThreadPoolExecutor(1), 32, wait)


def test_create_app_refuses_a_nan_wait_before_loading_anything(tmp_path) -> None:
    from ptuning.serve.app import create_app

    with pytest.raises(ValueError, match="max_wait_ms must be a finite number >= 0, got nan"):
        create_app(tmp_path / "not-read", "no-such-model", max_wait_ms=float("nan"))
