"""The gap arithmetic behind the scaling question: P-tuning v2 − fine-tuning per task, backbone and budget.

A gap is P-tuning v2's primary score minus fine-tuning's (points), each the mean over seeds of that side's chosen
setting. It needs both sides' sweeps finished (the chosen setting is fixed only then): until then it is
"pending"; with both chosen but fewer than all seeds on a side it is "partial" (the gap of the means so far, no
spread); with all seeds on both sides it is "complete". "Best measured" is P-tuning v2's best setting measured
like for like with fine-tuning: of the chosen setting, every ablation change that ran all three seeds and the
MLP reparameterization, the one with the highest mean dev score, leaving out the changes that train longer than
fine-tuning did. Rendered by ``quality_scaling.py``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import quality_curves
import quality_protocol as protocol
import quality_results as results
import quality_tables as tables

SCALES = quality_curves.SCALES  # budget scale -> how the tables name it
COMPARED = ("ptuning-v2", "finetune")
SEEDS_PER_SIDE = 1 + len(protocol.EXTRA_SEEDS)  # the chosen setting's seed-42 sweep run and the extra seeds


def sweep_progress(bench: results.Bench, task: str, method: str) -> tuple[int, int]:
    """(finished, total) runs of the method's seed-42 sweep at the bench's scale."""
    runs = results.sweep_runs(bench, task, method)
    return sum(r is not None for r in runs), len(runs)


def side_scores(bench: results.Bench, task: str, method: str) -> dict[str, Any]:
    """One side of the gap: its chosen setting's primary scores over the seeds that finished (``scores``, empty
    while the sweep is unfinished) and how far its sweep is (``sweep``: finished, total)."""
    metric = bench.budgets[task].metrics[0]
    result = results.method_result(bench, task, method)
    return {
        "scores": list(result["scores"][metric]) if result else [],
        "sweep": sweep_progress(bench, task, method),
    }


def gap(bench: results.Bench, task: str) -> dict[str, Any]:
    """P-tuning v2 − fine-tuning (primary metric, points) at each side's chosen setting.

    ``status`` says what the number may be read as: "pending" (a side's sweep is unfinished, so its chosen
    setting is not known yet: no gap), "partial" (both chosen, fewer than all seeds on a side: gap of the means
    so far, no spread) or "complete" (all seeds on both sides). ``spread`` is the standard deviation of a
    one-seed difference (``one_seed_spread``), given only when complete; ``scores`` and ``ranges`` hold each
    side's scores over its seeds and their min..max."""
    sides = {method: side_scores(bench, task, method) for method in COMPARED}
    ours, theirs = (sides[method]["scores"] for method in COMPARED)
    point: dict[str, Any] = {
        "sweeps": {method: sides[method]["sweep"] for method in COMPARED},
        "seeds": (len(ours), len(theirs)),
        "scores": {method: sides[method]["scores"] for method in COMPARED},
        "ranges": {method: _range(sides[method]["scores"]) for method in COMPARED},
        "ptuning_v2": statistics.mean(ours) if ours else None,
        "finetune": statistics.mean(theirs) if theirs else None,
    }
    if not ours or not theirs:
        return {**point, "status": "pending", "gap": None, "spread": None}
    complete = len(ours) >= SEEDS_PER_SIDE and len(theirs) >= SEEDS_PER_SIDE
    return {
        **point,
        "status": "complete" if complete else "partial",
        "gap": statistics.mean(ours) - statistics.mean(theirs),
        "spread": one_seed_spread(ours, theirs) if complete else None,
    }


def one_seed_spread(ours: list[float], theirs: list[float]) -> float:
    """The standard deviation of a one-seed difference of the two sides, sqrt(sd_PT2² + sd_FT²)."""
    return math.sqrt(statistics.variance(ours) + statistics.variance(theirs))


def _range(scores: list[float]) -> tuple[float, float] | None:
    return (min(scores), max(scores)) if scores else None


LONGER_TRAINING = "epochs_factor"  # a change that trains P-tuning v2 longer than fine-tuning was trained
# P-tuning v2 with its prompts reparameterized by prefix-tuning's 2-layer MLP (one of the paper's design choices,
# "useful depending on the task"): a method with its own lr sweep here, so its chosen setting is the candidate.
REPARAMETERIZED = "prefix-mlp"


def best_measured(bench: results.Bench, task: str, point: dict[str, Any]) -> dict[str, Any] | None:
    """P-tuning v2's best setting measured like for like with fine-tuning: of the chosen setting, every
    ablation change that ran all three seeds (a confirmed change) and the MLP reparameterization at its own
    chosen setting, the one with the highest mean dev score, leaving out the changes that train longer than
    fine-tuning did. One-sided: fine-tuning keeps its one chosen setting while P-tuning v2 takes the best of
    several, and on the tasks that report dev (SST-2, COPA, RTE, BoolQ, SQuAD) the pick is made on the split
    it is reported on; only the CoNLL tasks report a test split the pick never saw. ``point``: the
    task's ``gap``, whose fine-tuning side it is compared with; None until that gap is complete (both sides'
    chosen settings have all their seeds).

    What the gap table cannot say on its own: how far the changes the ablations found move the gap at each
    size. ``change`` names the ablation (None: the chosen setting stayed best; "reparameterization": the MLP),
    ``method`` the results' method and ``changed`` what differs from P-tuning v2's chosen setting (for the MLP,
    its own chosen setting)."""
    if point["status"] != "complete":
        return None
    budget = bench.budgets[task]
    chosen = results.chosen_setting(bench, task, "ptuning-v2")
    theirs = point["scores"]["finetune"]
    candidates: list[tuple[str | None, str, dict[str, Any]]] = [(None, "ptuning-v2", {})]
    rows = tables.ablation_rows(bench, task, tables.ablations_run(bench))
    for name in (name for name, method in rows if method == "ptuning-v2"):
        candidates += [
            (name, "ptuning-v2", change)
            for change in protocol.ablation_changes(name, bench.spec.num_layers)
            if LONGER_TRAINING not in change
        ]
    reparameterized = results.chosen_setting(bench, task, REPARAMETERIZED)
    if reparameterized is not None:
        candidates.append(("reparameterization", REPARAMETERIZED, reparameterized))
    measured = []
    for name, method, change in candidates:
        setting = change if method == REPARAMETERIZED else {**chosen, **change}
        runs = results.setting_runs(bench, task, method, setting)
        scores = [results.primary(run, budget) if run else None for run in runs]
        if None in scores:
            continue
        measured.append({
            "change": name,
            "method": method,
            "changed": change,
            "dev": statistics.mean(results.dev_score(run, budget) for run in runs),
            "scores": scores,
            "ptuning_v2": statistics.mean(scores),
            "gap": statistics.mean(scores) - statistics.mean(theirs),
            "spread": one_seed_spread(scores, theirs),
        })  # fmt: skip
    best = max(measured, key=lambda entry: entry["dev"])
    return {**best, "candidates": len(measured), "measured": measured}


def bench_of(name: str, scale: str, results_root: Path = results.RESULTS_DIR) -> results.Bench:
    spec = protocol.BACKBONES[name]
    return results.Bench(
        results_dir=results_root / spec.results_subdir, model=spec.model, scale=scale, backbone=name
    )


def collect(results_root: Path = results.RESULTS_DIR) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """{(backbone, scale): {task: gap}} for every backbone and budget scale (pending ones included)."""
    points = {}
    for name in protocol.BACKBONES:
        for scale in SCALES:
            bench = bench_of(name, scale, results_root)
            points[(name, scale)] = {task: gap(bench, task) for task in tasks_of(scale)}
    return points


def collect_best(
    points: dict[tuple[str, str], dict[str, dict[str, Any]]], results_root: Path = results.RESULTS_DIR
) -> dict[str, dict[str, dict[str, Any] | None]]:
    """{backbone: {task: best_measured}} at the 1x budget (the only one with ablations), beside ``points``."""
    best = {}
    for name in protocol.BACKBONES:
        bench = bench_of(name, "full", results_root)
        best[name] = {
            task: best_measured(bench, task, points[(name, "full")][task]) for task in tasks_of("full")
        }
    return best


def tasks_of(scale: str) -> list[str]:
    budgets = protocol.LARGE_BUDGETS if scale == "large" else protocol.BUDGETS
    return [t for t in protocol.TASK_ORDER if t in budgets]
