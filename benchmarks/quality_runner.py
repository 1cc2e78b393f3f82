"""Runs the quality benchmark's pending runs: each one trains through the engine (``ptuning.training.engine``)
and appends one JSON line to its task's results file. ``run_all`` keeps ``jobs`` runs going, each in a process of
its own (``quality.py --cell ... --run N``), so a crash or a leak stays inside one run.

A run is resumable: it trains in a folder of its own under the results folder's ``.in-progress/`` (named by its
key), saving the engine's resumable state every ``SAVE_EVERY_UPDATES`` updates and at every epoch end, and the
same command started again after a kill continues where the state was saved (bit for bit: the engine restores
optimizer, scheduler, RNG and data order). The folder goes once the run's line is written. An MPNet run on SQuAD
or BoolQ takes longer than a machine is held, so without this it could never finish on the CPU."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quality_protocol import BACKBONES, CORE_METHODS, PINNED_OPTIONS, Budget, Cell, ablation_of
from quality_results import RESULTS_DIR, Bench, all_cells, cell_runs, find_run, run_key

if TYPE_CHECKING:
    from ptuning.training.config import TrainConfig

CLI = Path(__file__).resolve().with_name("quality.py")  # what run_all launches, once per run
IN_PROGRESS = ".in-progress"  # under a results folder: one folder per unfinished run (git-ignored)
# Saving a prefix's state takes milliseconds and fine-tuning's (weights and Adam moments, ~1.3 GB at 110 M) a few
# seconds; every 50 updates (minutes apart at 110 M on a CPU) a kill loses little and the saving costs under 1 %.
SAVE_EVERY_UPDATES = 50


def run_cell(bench: Bench, cell: Cell, only: int | None = None) -> None:
    """Every unfinished run of the cell (or only its run number ``only``), appending each result."""
    runs = cell_runs(bench, cell)
    if runs is None:
        if cell.phase.startswith("confirm-"):
            ablation = cell.name.replace(":confirm-", ":ablation-")
            raise SystemExit(f"{cell.name}: run {ablation} first (its seed-42 runs decide what is confirmed)")
        raise SystemExit(
            f"{cell.name}: run {cell.task}:{cell.method}:sweep first (its best setting is needed)"
        )
    if only is not None:
        if not 0 <= only < len(runs):
            raise SystemExit(f"{cell.name} has runs 0..{len(runs) - 1}; got --run {only}")
        runs = [runs[only]]
    budget = bench.budgets[cell.task]
    budget_id = bench.budget_id(cell.task)
    for setting, seed in runs:
        key = run_key(cell.task, cell.method, setting, seed, budget_id)
        if find_run(bench.records(cell.task), key) is not None:
            print(f"{cell.name}: {setting} seed {seed} already done, skipped", flush=True)
            continue
        print(f"{cell.name}: {setting} seed {seed} ...", flush=True)
        record = run_one(bench, budget, cell.method, setting, seed, run_folder(bench.results_dir, key))
        record.update(key=key, cell=cell.name, phase=cell.phase, budget_id=budget_id)
        append_record(bench.results_file(cell.task), record)
        print(
            f"{cell.name}: {setting} seed {seed}: dev {record['dev']} test {record['test']} "
            f"({record['wall_seconds']:.0f} s)",
            flush=True,
        )


def run_extra(bench: Bench, task: str, method: str, setting: dict[str, Any], seed: int, path: Path) -> None:
    """One run outside the grid (a longer schedule, another backbone dtype...): the task's budget with
    ``setting``'s changes, appended to ``path``, never to the table's results file (its key would not be the
    grid's, and the tables must show only what the protocol ran)."""
    # any backbone's grid file: its tables would read a line with no budget_id
    grid_folders = {bench.results_dir.resolve(), *(folder.resolve() for folder in grid_results_dirs())}
    if path.resolve().parent in grid_folders:
        raise SystemExit(f"--record {path}: write runs outside the grid to another folder (e.g. reruns/)")
    print(f"{task}:{method} outside the grid: {setting} seed {seed} ...", flush=True)
    budget = bench.budgets[task]
    key = run_key(task, method, setting, seed, bench.budget_id(task))
    record = run_one(bench, budget, method, setting, seed, run_folder(path.parent, key, path.name))
    append_record(path, record)
    print(f"{task}:{method}: {setting} seed {seed}: dev {record['dev']} ({record['wall_seconds']:.0f} s)")


def grid_results_dirs() -> list[Path]:
    """Every backbone's default results folder (MiniLM's is the parent of the others')."""
    return [RESULTS_DIR / spec.results_subdir for spec in BACKBONES.values()]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, under an exclusive lock: parallel runs share the per-task results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)


def run_config(
    bench: Bench, budget: Budget, method: str, setting: dict[str, Any], seed: int, output_dir: Path
) -> TrainConfig:
    """The TrainConfig of one run: the budget, then the method's setting (a preset that names a measured run
    is checked against this, tests/benchmarks/test_smoke.py)."""
    from ptuning.training.config import TrainConfig

    options = {**PINNED_OPTIONS, **budget.train_options(), **setting}
    factor = options.pop("epochs_factor", 1)
    options["epochs"] = budget.epochs * factor
    return TrainConfig(
        **options,
        model=bench.model,
        method=method,
        data_dir=str(bench.data_root / budget.data),
        output_dir=str(output_dir),
        seed=seed,
        eval_batch_size=bench.spec.eval_batch_size,
        save_every_steps=SAVE_EVERY_UPDATES,
        resume=True,  # a folder without saved state trains afresh
        log_tensorboard=False,
    )


def run_folder(results_dir: Path, key: str, scope: str = "") -> Path:
    """The run's own folder: readable task/method/seed, then a hash of its whole ``run_key`` (settings and
    budget included) and ``scope`` (an extra run's record file: two files' runs never share a folder)."""
    task, method, _, seed, _ = json.loads(key)
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:16]
    return results_dir / IN_PROGRESS / f"{task}-{method}-seed{seed}-{digest}"


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """Hold the run's folder for this process: a second process on the same run would mix two runs' states."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{folder}: this run is already training in another process") from None
        yield


def saved_batches(folder: Path) -> int | None:
    """How many batches the run's saved state had trained (None: no saved state, a fresh start)."""
    from ptuning.training.state import saved_progress

    progress = saved_progress(folder)
    return None if progress is None else int(progress["micro"])


def run_one(
    bench: Bench, budget: Budget, method: str, setting: dict[str, Any], seed: int, folder: Path
) -> dict[str, Any]:
    """One training run through the engine in ``folder`` (continued if it holds a saved state, removed once
    done); returns the record stored in the results file."""
    import torch
    import transformers

    from ptuning.training.engine import train

    torch.set_num_threads(bench.threads)
    with claimed(folder):
        resumed_at = saved_batches(folder)
        if resumed_at is not None:
            print(f"continuing the run saved in {folder} after {resumed_at} batches", flush=True)
        summary = train(run_config(bench, budget, method, setting, seed, folder)).summary
    shutil.rmtree(folder, ignore_errors=True)
    metric = budget.metrics[0]
    return {
        "task": budget.task,
        "method": method,
        "setting": setting,
        "seed": seed,
        "model": bench.model,
        "backbone": bench.backbone,
        "budget": asdict(budget),
        "dev": summary["dev"],
        "test": summary["test"],
        "best_epoch": summary["best_epoch"],
        "updates": summary["updates"],
        "train_examples": summary["data"][budget.train_split or "train"]["examples"],
        "data": _relative_paths(summary["data"], bench.data_root),
        "trainable_params": summary["trainable_params"],
        "total_params": summary["total_params"],
        "trainable_percent": summary["trainable_percent"],
        "train_examples_per_second": summary["train_examples_per_second"],
        "wall_seconds": summary["wall_seconds"],
        # a continued run's wall_seconds and examples/s cover only its last part (after this many batches)
        "resumed_at_batch": resumed_at,
        "warnings": summary.get("warnings", []),  # e.g. the run learned nothing (training/learning_check.py)
        "curve": [
            {
                "epoch": h["epoch"],
                "dev": (h.get("dev") or {}).get(metric),
                "test": (h.get("test") or {}).get(metric),
                "train_loss": h.get("train_loss"),
            }
            for h in summary["history"]
        ],
        "threads": bench.threads,
        "eval_batch_size": bench.spec.eval_batch_size,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _relative_paths(report: dict[str, Any], data_root: Path) -> dict[str, Any]:
    """The data report with the data root spelled ``data/`` so results files hold no machine's paths."""
    text = json.dumps(report)
    for spelling in {str(data_root.resolve()), str(data_root)}:
        text = text.replace(spelling, "data")
    return json.loads(text)


def pending_runs(
    bench: Bench, tasks: list[str] | None, only: list[str] | None = None
) -> list[tuple[Cell, int]]:
    """Every (cell, run number) that can run now, in --run-all order; cells waiting for a sweep are left out.

    ``only``: cell-name patterns (``sst2:finetune:*``); a cell must match one of them."""
    pending = []
    for cell in all_cells(bench):
        if tasks and cell.task not in tasks:
            continue
        if only and only_rank(cell, only) is None:
            continue
        runs = cell_runs(bench, cell)
        if runs is None:
            continue
        budget_id = bench.budget_id(cell.task)
        records = bench.records(cell.task)
        for index, (setting, seed) in enumerate(runs):
            if find_run(records, run_key(cell.task, cell.method, setting, seed, budget_id)) is None:
                pending.append((cell, index))
    return pending


def only_rank(cell: Cell, only: list[str]) -> int | None:
    """The index of the first ``only`` pattern the cell's name matches (None: none does)."""
    return next((i for i, pattern in enumerate(only) if fnmatch.fnmatchcase(cell.name, pattern)), None)


def launch_rank(cell: Cell) -> int:
    """Sweeps first (every later run waits for one), then the seeds the targets compare, then the rest."""
    if cell.phase == "sweep":
        return 0
    if cell.phase == "seeds" and cell.method in CORE_METHODS:
        return 1
    return 2 if ablation_of(cell.phase) is not None else 3


def run_all(
    bench: Bench,
    tasks: list[str] | None,
    jobs: int = 1,
    deadline: float | None = None,
    only: list[str] | None = None,
) -> int:
    """Every unfinished run, ``jobs`` at a time, each in its own process (a crash or leak stays inside one).

    Runs that wait for a sweep start as soon as it is done; a run that fails is not retried in the same
    invocation. With ``deadline`` (seconds from now), no run starts after it; those started finish. With
    ``only`` (cell-name patterns), just the matching cells run, earlier patterns first: a short campaign can
    finish one task's compared methods before it starts the next.
    """

    def order(job: tuple[Cell, int]) -> tuple[int, int]:
        return (only_rank(job[0], only) if only else 0, launch_rank(job[0]))

    stop_launching = None if deadline is None else time.monotonic() + deadline
    failed: set[tuple[str, int]] = set()
    running: dict[tuple[str, int], subprocess.Popen] = {}
    while True:
        for job, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[job]
            if process.returncode != 0:
                failed.add(job)
                print(f"== {job[0]} run {job[1]} failed with exit code {process.returncode}", flush=True)
        may_launch = stop_launching is None or time.monotonic() < stop_launching
        waiting = [
            (cell, index)
            for cell, index in sorted(pending_runs(bench, tasks, only), key=order)
            if (cell.name, index) not in failed and (cell.name, index) not in running
        ]
        while may_launch and waiting and len(running) < jobs:
            cell, index = waiting.pop(0)
            print(f"== {cell.name} run {index} at {time.strftime('%H:%M:%S')}", flush=True)
            command = [sys.executable, str(CLI), "--cell", cell.name, "--run", str(index)]
            running[(cell.name, index)] = subprocess.Popen(
                [*command, *bench_arguments(bench)], env={**os.environ, "TQDM_DISABLE": "1"}
            )
        if not running:
            break
        time.sleep(1.0)
    left = len(pending_runs(bench, tasks, only))
    print(
        f"== stopped at {time.strftime('%H:%M:%S')}: {left} runs can still run; "
        f"failed: {sorted(failed) or 'none'}",
        flush=True,
    )
    return 1 if failed else 0


def bench_arguments(bench: Bench) -> list[str]:
    return [
        *("--results-dir", str(bench.results_dir), "--data-root", str(bench.data_root)),
        *("--model", bench.model, "--scale", bench.scale, "--threads", str(bench.threads)),
        *("--backbone", bench.backbone),
        *(["--scaling-ablations"] if bench.scaling_ablations else []),
    ]


def backbone_problem(model: str) -> str | None:
    """Why the packaged MPNet cannot be loaded here, or None; checked before any run starts, so a campaign
    fails in a second with the fix rather than in every run."""
    if model != "mpnet":
        return None  # MiniLM and folders: the engine's own errors name what is missing
    from ptuning.core import backbones

    if getattr(backbones, "PACKAGED_MPNET", None) != model:
        return (
            "--backbone mpnet needs the packaged short name 'mpnet' (all-mpnet-base-v2), which this checkout's "
            "ptuning.core.backbones does not define (it comes with the MPNet architecture work); or pass "
            "--model FOLDER pointing at an all-mpnet-base-v2 folder"
        )
    try:
        backbones.resolve_model_path(model)
    except FileNotFoundError as error:
        return f"--backbone mpnet: the packaged all-mpnet-base-v2 is not usable here: {error}"
    return None
