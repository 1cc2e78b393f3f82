"""The order of training batches: a batch source per task, mixed into one schedule; and each process's share.

One task is the simple case: its batches, pass after pass (pass k shuffled with seed + k). Several tasks
(MPT-2) get batches in proportion to a mixing rule. With ``n_i`` training features for task i, the share of
batches drawn from task i is

* ``proportional``: p_i = n_i / sum_j n_j (every task is seen about once per nominal epoch);
* ``temperature``:  p_i ∝ n_i^(1/T) (T = 1 is proportional, larger T moves towards uniform and so
  up-samples small tasks; T5 and mT5 use this rule).

A run of S micro-batches holds round(S * p_i) batches of task i (largest remainder, so the counts sum to S)
in a seeded random order. Each batch holds ONE task (its own padding, head and loss). A nominal epoch is
sum_i ceil(n_i / batch_size) micro-batches. The schedule depends only on the seed and the data, which is
what lets a resumed run continue bit for bit.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence

import numpy as np

from ptuning.core.config import ConfigError
from ptuning.core.kinds import HeadKind
from ptuning.tasks.collate import length_grouped_batches

SAMPLING_RULES = ("proportional", "temperature")
TASK_SEED_STRIDE = 7919  # task i of several draws its batches from seed + 7919 * (i + 1)
# A scheduled batch's feature indices as C ints: a whole run's schedule is held at once, where a Python int
# object per index would dominate the run's memory; reading one still gives a plain int (features[i], JSON).
INDEX_TYPECODE = "i"


def task_probabilities(sizes: dict[str, int], sampling: str, temperature: float = 1.0) -> dict[str, float]:
    """The share of batches each task gets: p_i ∝ n_i (proportional) or p_i ∝ n_i^(1/T) (temperature)."""
    if sampling not in SAMPLING_RULES:
        raise ConfigError(f"sampling must be one of {', '.join(SAMPLING_RULES)}; got {sampling!r}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0; got {temperature!r}")
    empty = [name for name, size in sizes.items() if size <= 0]
    if empty:
        raise ConfigError(f"tasks {empty} have no training examples")
    exponent = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = {name: float(size) ** exponent for name, size in sizes.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def apportion(probabilities: dict[str, float], steps: int) -> dict[str, int]:
    """Integer batch counts summing to ``steps``, closest to ``steps * p_i`` (largest remainder)."""
    exact = {name: steps * p for name, p in probabilities.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (-(exact[name] - counts[name]), name))
    for name in by_remainder[: steps - sum(counts.values())]:
        counts[name] += 1
    return counts


def shuffled_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(count).tolist()
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def batch_source(
    lengths: list[int], batch_size: int, seed: int, group_by_length: bool
) -> Iterator[list[int]]:
    """One task's batches forever: pass k is a fresh shuffle (seed + k) of all its features."""
    for epoch in range(1_000_000):
        if group_by_length:
            yield from length_grouped_batches(lengths, batch_size, seed=seed + epoch)
        else:
            yield from shuffled_batches(len(lengths), batch_size, seed + epoch)


def source_seeds(names: list[str], seed: int, spread: bool = True) -> dict[str, int]:
    """The seed of each task's batch source: spread apart for a multi-task run, the run's seed otherwise (so a
    single-task run's pass k is shuffled with seed + k)."""
    if not spread:
        return dict.fromkeys(names, seed)
    return {name: seed + TASK_SEED_STRIDE * (index + 1) for index, name in enumerate(names)}


def mixed_schedule(
    lengths: dict[str, list[int]],
    probabilities: dict[str, float],
    steps: int,
    batch_size: int,
    seed: int,
    group_by_length: bool = True,
    spread_seeds: bool = True,
) -> list[tuple[str, array[int]]]:
    """``steps`` homogeneous batches as (task, feature indices), mixed by the rule in the module doc; each
    batch's indices are a compact ``array`` (INDEX_TYPECODE), the same numbers in the same order as the lists
    the batch sources yield."""
    counts = apportion(probabilities, steps)
    names = list(lengths)
    order = [name for name in names for _ in range(counts[name])]
    np.random.default_rng(seed).shuffle(order)
    seeds = source_seeds(names, seed, spread_seeds)
    sources = {name: batch_source(lengths[name], batch_size, seeds[name], group_by_length) for name in names}
    return [(name, array(INDEX_TYPECODE, next(sources[name]))) for name in order]


def process_share(batch: Sequence[int], rank: int, world: int) -> Sequence[int]:
    """What process ``rank`` of ``world`` runs of a global batch: every world-th example from its rank. A
    process left without examples (a batch smaller than the world) runs the batch's first example, weighted 0
    (``window_weight`` of no units), so that every process still joins the gradient all-reduce."""
    return batch[rank::world] or batch[:1]


# Heads whose loss is a mean over labelled tokens (transformers' LM losses, token classification), not examples.
TOKEN_LOSSES = (HeadKind.TOKEN_CLASSIFICATION, HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM)


def loss_units(features: list[dict], head: HeadKind) -> int:
    """How many terms a head's mean loss over these features averages: labelled tokens for token-level losses
    (a causal LM scores each label but the first, which nothing predicts), examples otherwise."""
    if head not in TOKEN_LOSSES:
        return len(features)
    skip = 1 if head is HeadKind.CAUSAL_LM else 0
    return sum(sum(label != -100 for label in feature["labels"][skip:]) for feature in features)


def window_weight(
    share_units: int, task: str, window: list[tuple[str, int]], world: int, accumulation: int
) -> float:
    """The factor on one process's mean loss over its ``share_units`` so that DDP's average over ``world``
    processes and the division by ``accumulation`` leave the mean that one process would take over the whole
    accumulation window at once: within a task every labelled unit (token or example, ``loss_units``) counts
    the same, whichever micro-batch or process holds it, and each task's share of a mixed window is its share
    of the window's micro-batches. ``window`` lists (task, units of the whole global batch) per micro-batch.

    Weighting shares by examples instead (a mean of means) is right only for per-example losses in equal
    batches: tagging and LM losses would weigh a token in a short batch above one in a long batch.
    """
    task_units = sum(units for name, units in window if name == task)
    if not task_units:
        return 0.0
    task_batches = sum(1 for name, _ in window if name == task)
    return share_units * world * accumulation * task_batches / (len(window) * task_units)
