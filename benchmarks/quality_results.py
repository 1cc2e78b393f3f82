"""What the quality benchmark has measured: a ``Bench`` (where results, data and model live, at which scale) reads
its results files, and from them which setting each sweep chose, what each cell consists of and whether it is
done. ``quality_runner`` appends to those files; ``quality_tables``, ``quality_scaling`` and ``quality_curves``
read them through here.

A sweep chooses the setting with the best seed-42 dev score (``chosen_setting``). A run without a real dev score
(missing, or NaN from a diverged run) ranks below every real score, wherever it stands in the sweep. A tie goes to
the setting listed first in the sweep (``Bench.sweeps``), and the tables mark the tied settings
(``tied_settings``) so that the tie is visible rather than settled silently."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quality_protocol import (
    ALL_SEEDS,
    ALL_SEEDS_ABLATIONS,
    BACKBONES,
    BUDGETS,
    CORE_METHODS,
    EXTRA_SEEDS,
    LARGE_BUDGETS,
    LARGE_SWEEPS,
    ORIGINAL_ABLATIONS,
    SCALING_ABLATIONS,
    SWEEP_SEED,
    SWEEPS,
    TASK_ORDER,
    Backbone,
    Budget,
    Cell,
    ablation_changes,
    ablation_methods,
    ablation_of,
    ablations_for,
    smoke_budgets,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results" / "quality"
DATA_ROOT = REPO.parent / "shared" / "data"
MODEL = "minilm"


@dataclass
class Bench:
    """Where data, model and results live; the smoke test points these at a tiny model and tmp files."""

    results_dir: Path = RESULTS_DIR
    data_root: Path = DATA_ROOT
    model: str = MODEL
    scale: str = "full"  # full | large | smoke
    # torch threads per run. One: on a shared 2-core machine two OpenMP threads spin at every barrier waiting
    # for each other, and a MiniLM step ran 4-5x slower than with one thread (measured at a load of 4-8).
    threads: int = 1
    backbone: str = "minilm"  # a BACKBONES name: layer lists, fingerprints, table text, recorded settings
    scaling_ablations: bool = False  # MiniLM: also make the scaling ablations cells (other backbones: always)

    @property
    def spec(self) -> Backbone:
        return BACKBONES[self.backbone]

    @property
    def ablation_names(self) -> tuple[str, ...]:
        """The ablations that are cells of this bench (and rows of its table)."""
        return ORIGINAL_ABLATIONS + (SCALING_ABLATIONS if self.confirms_ablations else ())

    def ablations(self, task: str) -> list[str]:
        """The ablations that are cells of this bench for ``task``."""
        return ablations_for(task, self.ablation_names, self.spec.ablation_tasks)

    @property
    def confirms_ablations(self) -> bool:
        """The scaling question's benches: its ablations are cells, and a winning change gets 3 seeds."""
        return self.scaling_ablations or self.spec.scaling_ablations

    def budget_id(self, task: str) -> str:
        return self.budgets[task].fingerprint(self.model, self.backbone)

    @property
    def budgets(self) -> dict[str, Budget]:
        if self.scale == "smoke":
            return smoke_budgets()
        return dict(LARGE_BUDGETS if self.scale == "large" else BUDGETS)

    @property
    def sweeps(self) -> dict[str, list[dict[str, Any]]]:
        """Each method's sweep at this scale (with the backbone's additions at 1x); the methods it lists are the
        ones this scale runs."""
        if self.scale == "large":
            return LARGE_SWEEPS
        sweeps = {method: list(settings) for method, settings in SWEEPS.items()}
        if self.scale == "full":
            for method, rate in self.spec.sweep_additions:
                sweeps[method].append({**sweeps[method][0], "learning_rate": rate})
        return sweeps

    def results_file(self, task: str) -> Path:
        return self.results_dir / f"{task}.jsonl"

    def records(self, task: str) -> list[dict[str, Any]]:
        """This task's runs under the current budget and model (older budgets are ignored)."""
        budget_id = self.budget_id(task)
        return [r for r in read_jsonl(self.results_file(task)) if r["budget_id"] == budget_id]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The runs of a results file ([] if there is none yet). A last line without its newline is left out (a run
    is appending it); any other malformed line is an error naming the file and line, since skipping it would drop
    a run from every table without a word."""
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.endswith("\n"):  # a run is appending its line right now (the writer locks, readers don't)
        text = text[: text.rfind("\n") + 1]
    return [
        parse_record(line, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def parse_record(line: str, where: str) -> dict[str, Any]:
    """One results line as a run, or an error naming ``where`` (``path:line``) and what was wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: expected one run per line as a JSON object; {error.msg} at column {error.colno} (a run "
            "killed while writing leaves a cut line, and the next run's line is appended after it: remove the cut "
            "part)"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected one run per line as a JSON object, got {line[:60]!r}")
    return record


def run_key(task: str, method: str, setting: dict[str, Any], seed: int, budget_id: str) -> str:
    return json.dumps([task, method, sorted(setting.items()), seed, budget_id])


def find_run(records: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in records if r["key"] == key), None)


def primary(record: dict[str, Any], budget: Budget) -> float | None:
    """The reported score in percent: dev or test (at the best dev epoch), first metric of the budget."""
    scores = record.get(budget.report_split) or {}
    value = scores.get(budget.metrics[0])
    return None if value is None else as_percent(value, budget)


def dev_score(record: dict[str, Any], budget: Budget) -> float:
    """The score a sweep ranks by: dev's first metric in percent, or -inf without a real one (None, or NaN from a
    diverged run), which would otherwise be chosen or skipped depending on where it stands in the sweep."""
    value = (record.get("dev") or {}).get(budget.metrics[0])
    score = float("-inf") if value is None else as_percent(value, budget)
    return float("-inf") if math.isnan(score) else score


def as_percent(value: float, budget: Budget) -> float:
    """A stored score as a percentage (most tasks store fractions; SQuAD's are percentages already)."""
    return float(value) if budget.in_percent else 100.0 * float(value)


def sweep_runs(bench: Bench, task: str, method: str) -> list[dict[str, Any] | None]:
    """The method's seed-42 sweep runs at the bench's scale, one per setting (None: not run yet)."""
    records = bench.records(task)
    budget_id = bench.budget_id(task)
    return [find_run(records, run_key(task, method, s, SWEEP_SEED, budget_id)) for s in bench.sweeps[method]]


def setting_runs(
    bench: Bench, task: str, method: str, setting: dict[str, Any], seeds: tuple[int, ...] = ALL_SEEDS
) -> list[dict[str, Any] | None]:
    """The setting's runs at these seeds, in order (None: not run yet)."""
    records, budget_id = bench.records(task), bench.budget_id(task)
    return [find_run(records, run_key(task, method, setting, seed, budget_id)) for seed in seeds]


def best_run(runs: list[dict[str, Any]], budget: Budget) -> dict[str, Any]:
    """The run with the best dev score; of tied runs the first (``max`` keeps it): results already depend on it."""
    return max(runs, key=lambda r: dev_score(r, budget))


def chosen_setting(bench: Bench, task: str, method: str) -> dict[str, Any] | None:
    """The sweep setting with the best dev score (seed 42); None until the whole sweep is done."""
    runs = sweep_runs(bench, task, method)
    if any(r is None for r in runs):
        return None
    return dict(best_run(runs, bench.budgets[task])["setting"])


def tied_settings(bench: Bench, task: str, method: str) -> list[dict[str, Any]]:
    """The sweep settings that share the best dev score, in sweep order (the first is the chosen one); [] when the
    best is unique, the sweep unfinished, or no run has a real score."""
    runs = sweep_runs(bench, task, method)
    if any(r is None for r in runs):
        return []
    budget = bench.budgets[task]
    best = dev_score(best_run(runs, budget), budget)
    tied = [dict(r["setting"]) for r in runs if dev_score(r, budget) == best]
    return tied if len(tied) > 1 and best > float("-inf") else []


def cell_runs(bench: Bench, cell: Cell) -> list[tuple[dict[str, Any], int]] | None:
    """(setting, seed) pairs the cell consists of; None while the sweep it depends on is unfinished."""
    if cell.phase == "sweep":
        return [(dict(setting), SWEEP_SEED) for setting in bench.sweeps[cell.method]]
    chosen = chosen_setting(bench, cell.task, cell.method)
    if chosen is None:
        return None
    if cell.phase == "seeds":
        return [(chosen, seed) for seed in EXTRA_SEEDS]
    changes = ablation_changes(ablation_of(cell.phase), bench.spec.num_layers)
    if cell.phase.startswith("confirm-"):
        winners = winning_changes(bench, cell.task, chosen, changes)
        return None if winners is None else [(w, seed) for w in winners for seed in EXTRA_SEEDS]
    seeds = ALL_SEEDS if ablation_of(cell.phase) in ALL_SEEDS_ABLATIONS else (SWEEP_SEED,)
    return [({**chosen, **change}, seed) for change in changes for seed in seeds]


def winning_changes(
    bench: Bench, task: str, chosen: dict[str, Any], changes: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The changed settings whose seed-42 run beat the chosen setting's on dev, as the sweep chose it (a
    reported test score must not pick what gets confirmed); None while one has not run."""
    budget = bench.budgets[task]
    settings = [chosen] + [{**chosen, **change} for change in changes]
    base, *runs = (setting_runs(bench, task, "ptuning-v2", s, (SWEEP_SEED,))[0] for s in settings)
    if base is None or any(r is None for r in runs):
        return None
    return [
        s for s, r in zip(settings[1:], runs, strict=True) if dev_score(r, budget) > dev_score(base, budget)
    ]


def cell_status(bench: Bench, cell: Cell) -> str:
    runs = cell_runs(bench, cell)
    if runs is None:
        return "waiting for its ablation" if cell.phase.startswith("confirm-") else "waiting for its sweep"
    budget_id = bench.budget_id(cell.task)
    records = bench.records(cell.task)
    done = sum(
        find_run(records, run_key(cell.task, cell.method, s, seed, budget_id)) is not None for s, seed in runs
    )
    return "done" if done == len(runs) else f"{done}/{len(runs)} runs"


def all_cells(bench: Bench) -> list[Cell]:
    """Every cell of the bench's scale, in the order --run-all runs them. Per task: every sweep, then the
    seeds of the methods the targets compare, then P-tuning v2's ablations, then the other seeds."""
    cells = []
    methods = bench.sweeps
    for task in (t for t in TASK_ORDER if t in bench.budgets):
        cells += [Cell(task, method, "sweep") for method in methods]
        cells += [Cell(task, method, "seeds") for method in CORE_METHODS if method in methods]
        if bench.scale != "large":
            cells += [
                Cell(task, method, f"ablation-{name}")
                for name in bench.ablations(task)
                for method in ablation_methods(name)
            ]
            if bench.confirms_ablations:
                cells += [
                    Cell(task, "ptuning-v2", f"confirm-{n}")
                    for n in bench.ablations(task)
                    if n not in ALL_SEEDS_ABLATIONS
                ]
        cells += [Cell(task, method, "seeds") for method in methods if method not in CORE_METHODS]
    return cells


def method_result(bench: Bench, task: str, method: str) -> dict[str, Any] | None:
    """The chosen setting's scores over seeds (all metrics), params; None before the sweep is done."""
    budget = bench.budgets[task]
    chosen = chosen_setting(bench, task, method)
    if chosen is None:
        return None
    runs = [r for r in setting_runs(bench, task, method, chosen) if r is not None]
    scores = {
        metric: [as_percent((r.get(budget.report_split) or {})[metric], budget) for r in runs]
        for metric in budget.metrics
    }
    return {"setting": chosen, "runs": runs, "scores": scores}


def seed_scores(bench: Bench, task: str, method: str, setting: dict[str, Any]) -> list[float] | None:
    """The primary metric of ``setting`` over seeds 42-44, or None unless all three have run."""
    runs = setting_runs(bench, task, method, setting)
    return None if None in runs else [primary(r, bench.budgets[task]) for r in runs]
