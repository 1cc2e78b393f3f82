"""The whole-run schedule is held compactly, and holds exactly the batches, in the order, it always did.

A resumed run regenerates its schedule from the seeds and must match the run it continues bit for bit, so the
schedule of the list-of-lists implementation is kept here as the oracle.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ptuning.training.schedule import (
    apportion,
    batch_source,
    mixed_schedule,
    process_share,
    source_seeds,
    task_probabilities,
)


def list_schedule(
    lengths: dict[str, list[int]],
    probabilities: dict[str, float],
    steps: int,
    batch_size: int,
    seed: int,
    group_by_length: bool = True,
    spread_seeds: bool = True,
) -> list[tuple[str, list[int]]]:
    """mixed_schedule as it was, batches as Python lists: the oracle of the order."""
    counts = apportion(probabilities, steps)
    names = list(lengths)
    order = [name for name in names for _ in range(counts[name])]
    np.random.default_rng(seed).shuffle(order)
    seeds = source_seeds(names, seed, spread_seeds)
    sources = {name: batch_source(lengths[name], batch_size, seeds[name], group_by_length) for name in names}
    return [(name, next(sources[name])) for name in order]


def random_lengths(sizes: dict[str, int]) -> dict[str, list[int]]:
    rng = np.random.default_rng(11)
    return {name: rng.integers(3, 90, size).tolist() for name, size in sizes.items()}


CASES = {
    # single task, length-grouped, several passes (an epoch count that does not divide evenly)
    "single": ({"t": 203}, "proportional", 1.0, 7, 13 * 4 + 5, 5, True, False),
    "single-shuffled": ({"t": 97}, "proportional", 1.0, 8, 13 * 3, 2, False, False),
    # several tasks, up-sampled by temperature: the small task runs through many passes
    "temperature": ({"a": 300, "b": 25, "c": 60}, "temperature", 3.0, 6, 120, 4, True, True),
    "proportional": ({"a": 50, "b": 130}, "proportional", 1.0, 9, 61, 0, False, True),
}


@pytest.mark.parametrize("case", CASES)
def test_schedule_matches_the_list_schedule_batch_for_batch(case: str) -> None:
    sizes, sampling, temperature, batch_size, steps, seed, grouped, spread = CASES[case]
    lengths = random_lengths(sizes)
    probabilities = task_probabilities(sizes, sampling, temperature)
    args = (lengths, probabilities, steps, batch_size, seed, grouped, spread)
    schedule, oracle = mixed_schedule(*args), list_schedule(*args)
    assert len(schedule) == len(oracle) == steps
    assert [name for name, _ in schedule] == [name for name, _ in oracle]
    assert [list(indices) for _, indices in schedule] == [indices for _, indices in oracle]
    # what the trainer does with a batch: plain ints to index features, len(), each process's share
    name, indices = schedule[-1]
    assert all(type(i) is int for i in indices) and len(indices) == len(oracle[-1][1])
    assert [lengths[name][i] for i in indices] == [lengths[name][i] for i in oracle[-1][1]]
    for world in (1, 2, 3, 16):
        for rank in range(world):
            assert list(process_share(indices, rank, world)) == process_share(oracle[-1][1], rank, world)


def test_schedule_holds_few_bytes_per_index() -> None:
    """A run's schedule is built before step one: 400k features x 40 epochs held ~43 bytes an index as lists."""
    lengths = random_lengths({"t": 3000})
    tracemalloc.start()
    try:
        schedule = mixed_schedule(
            lengths, {"t": 1.0}, steps=47 * 4, batch_size=64, seed=0, spread_seeds=False
        )
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    indices = sum(len(batch) for _, batch in schedule)
    assert indices == 3000 * 4
    assert held / indices < 10, f"{held / indices:.1f} bytes an index"
