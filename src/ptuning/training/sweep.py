"""Runs of several variants of one config (a prefix length x learning rate grid, or several seeds).

Each variant trains into its own subdirectory of the base output_dir, so that an interrupted sweep can be
started again with the same command: a variant whose summary.json exists under the same options is not run
again, and one that was cut off continues from its training_state (with ``--resume``, every unfinished variant
continues its own state as ``ptuning train --resume`` would, refused there if its options changed). In a sweep
a learning rate that diverges is a result, not a failure: the cell is recorded as diverged (``diverged.json``,
skipped on a rerun) and the other cells still train.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptuning.core.config import ConfigError
from ptuning.core.folders import write_text_whole
from ptuning.training.config import TrainConfig, flag_name
from ptuning.training.engine import RunResult, train
from ptuning.training.preflight import check_output_dir
from ptuning.training.report import SUMMARY_MD, read_summary, write_json_and_markdown, write_run_report
from ptuning.training.state import option_changes, saved_options
from ptuning.training.trainer import TrainingDivergedError

SWEEP_JSON = "sweep.json"
SWEEP_MD = "sweep.md"
DIVERGED_JSON = "diverged.json"  # in a cell's folder: why it stopped (a rerun does not train it again)

TrainFn = Callable[[TrainConfig], RunResult]


@dataclass
class VariantRun:
    name: str
    config: TrainConfig
    summary: dict[str, Any]
    reused: bool  # True when an earlier run had finished it
    diverged: str | None = None  # why training stopped (record_divergence): the cell has no score


def run_variants(
    variants: dict[str, TrainConfig],
    train_fn: TrainFn = train,
    log: Callable[[str], None] = print,
    is_main: bool = True,
    record_divergence: bool = False,
) -> list[VariantRun]:
    """Train every variant whose output_dir holds no finished run of the same options; reports per run.

    ``record_divergence``: a variant whose training diverges is recorded as such and the next one trains
    (a sweep's too-high learning rate); otherwise the divergence ends the command (seeds of one setting)."""
    runs = []
    for config in variants.values():  # before any cell: a base folder that is a file is one line, not a trace
        check_output_dir(Path(config.output_dir))
    for name, config in variants.items():
        output_dir = Path(config.output_dir)
        same_options = _same_options(output_dir, config)
        summary_path, diverged_path = output_dir / "summary.json", output_dir / DIVERGED_JSON
        summary = read_summary(summary_path, log, "training it again") if same_options else None
        if summary is not None:
            log(f"{name}: finished earlier, reusing {summary_path}")
            if is_main and not (output_dir / SUMMARY_MD).is_file():  # a report that failed to write last time
                write_run_report(output_dir, summary)
                log(f"{name}: wrote its missing {SUMMARY_MD}")
            runs.append(VariantRun(name, config, summary, reused=True))
            continue
        if record_divergence and same_options and diverged_path.is_file():
            why = json.loads(diverged_path.read_text())["error"]
            log(f"{name}: diverged earlier ({diverged_path}), not trained again")
            runs.append(VariantRun(name, config, {}, reused=True, diverged=why))
            continue
        diverged_path.unlink(missing_ok=True)
        # continue a run that was cut off, but never one trained with other options; --resume is train's:
        # continue the cell's saved state, refused there if its options changed
        config = config.replace(resume=config.resume or same_options)
        log(f"{name}: {'resuming' if config.resume else 'training'} in {output_dir}")
        try:
            summary = train_fn(config).summary
        except TrainingDivergedError as error:
            if not record_divergence:
                raise
            log(f"{name}: {error}")
            if is_main:
                write_text_whole(diverged_path, json.dumps({"error": str(error)}) + "\n")
            runs.append(VariantRun(name, config, {}, reused=False, diverged=str(error)))
            continue
        if is_main:
            write_run_report(output_dir, summary)
        runs.append(VariantRun(name, config, summary, reused=False))
    return runs


def _same_options(output_dir: Path, config: TrainConfig) -> bool:
    """Whether output_dir's config.json (written when a run starts) asks for what ``config`` does, as
    ``--resume`` judges it (options of how a run computes or reports may differ)."""
    saved = saved_options(output_dir)
    return saved is not None and option_changes(saved, config.to_dict()) == ([], [])


# --- prefix length x learning rate grid ------------------------------------------------------------------


def grid_variants(
    base: TrainConfig, prefix_lengths: list[int], learning_rates: list[float]
) -> dict[str, TrainConfig]:
    """One config per (prefix length, learning rate), each in ``base.output_dir/p{P}-lr{lr}``. A value given
    twice, or two rates one folder name cannot tell apart, are refused: the cells would share a folder."""
    _refuse_repeats("--prefix-lengths", [str(length) for length in prefix_lengths])
    _refuse_repeats("--learning-rates", [f"{rate:g}" for rate in learning_rates])
    _refuse_overridden(base, "prefix_length", "--prefix-lengths", [str(length) for length in prefix_lengths])
    _refuse_overridden(base, "learning_rate", "--learning-rates", [f"{rate:g}" for rate in learning_rates])
    variants = {}
    for prefix_length in prefix_lengths:
        for learning_rate in learning_rates:
            name = f"p{prefix_length}-lr{learning_rate:g}"
            variants[name] = base.replace(
                prefix_length=prefix_length,
                learning_rate=learning_rate,
                output_dir=str(Path(base.output_dir) / name),
            )
    return variants


def sweep_table(runs: list[VariantRun]) -> dict[str, Any]:
    """The grid's results as JSON-ready rows, and the best cell by dev primary metric (higher is better)."""
    rows = []
    for run in runs:
        metric = run.summary.get("primary_metric")
        rows.append(
            {
                "name": run.name,
                "prefix_length": run.config.prefix_length,
                "learning_rate": run.config.learning_rate,
                "dev": (run.summary.get("dev") or {}).get(metric),
                "test": (run.summary.get("test") or {}).get(metric),
                "best_epoch": run.summary.get("best_epoch"),
                "output_dir": run.config.output_dir,
                "reused": run.reused,
                "diverged": run.diverged,
            }
        )
    # a NaN dev score (a correlation of constant predictions) is no score: max() would keep a leading NaN
    scored = [row for row in rows if row["dev"] is not None and math.isfinite(row["dev"])]
    best = max(scored, key=lambda row: row["dev"])["name"] if scored else None
    metric = next((run.summary["primary_metric"] for run in runs if run.summary.get("primary_metric")), None)
    return {"primary_metric": metric, "best": best, "cells": rows}


def sweep_markdown(table: dict[str, Any]) -> str:
    metric = table["primary_metric"]
    lines = [
        f"| cell | prefix length | learning rate | dev {metric} | test {metric} | best epoch | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table["cells"]:
        mark = "**best**" if row["name"] == table["best"] else ("reused" if row["reused"] else "")
        mark = "diverged" if row.get("diverged") else mark
        dev, test = (f"{row[k]:.4f}" if row[k] is not None else "–" for k in ("dev", "test"))
        lines.append(
            f"| {row['name']} | {row['prefix_length']} | {row['learning_rate']:g} | {dev} | {test} | "
            f"{row['best_epoch']} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def write_sweep_report(output_dir: str | Path, table: dict[str, Any]) -> list[Path]:
    return write_json_and_markdown(output_dir, SWEEP_JSON, table, SWEEP_MD, sweep_markdown(table))


# --- seeds ---------------------------------------------------------------------------------------------------


def seed_variants(base: TrainConfig, seeds: list[int]) -> dict[str, TrainConfig]:
    """One config per seed, each in ``base.output_dir/seed-{seed}``; a seed given twice is refused."""
    _refuse_repeats("--seeds", [str(seed) for seed in seeds])
    _refuse_overridden(base, "seed", "--seeds", [str(seed) for seed in seeds])
    return {
        f"seed-{seed}": base.replace(seed=seed, output_dir=str(Path(base.output_dir) / f"seed-{seed}"))
        for seed in seeds
    }


def _refuse_repeats(flag: str, names: list[str]) -> None:
    """A list option whose values (as their folders name them) repeat: one cell would silently stand for two."""
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(
            f"{flag} names {', '.join(repeated)} more than once (as its folder names it); give each value once"
        )


def _refuse_overridden(base: TrainConfig, field: str, flag: str, values: list[str]) -> None:
    """A flag the list replaces in every cell (``--seed 99`` under ``--seeds 1,2``): it was dropped without a
    word. A preset's or a config file's value is what flags override, so only a flag is refused."""
    if base.given_as_flag(field):
        given, what = getattr(base, field), field.replace("_", " ")
        raise ConfigError(
            f"{flag_name(field)} {given:g} and {flag} {','.join(values)}: every run takes its {what} from "
            f"{flag}; drop {flag_name(field)}"
        )
