"""Peak RSS of every system and mode, each in a fresh process (the ``speed.py --probe`` subcommand)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from speed_common import Workload, environment, load_data, model_folder
from speed_systems import SYSTEM_LABELS, build_system

CLI = Path(__file__).with_name("speed.py")  # the probes run as `speed.py --probe`


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def probe_memory(
    workload: Workload, system: str, mode: str, data_root: Path, work_dir: Path
) -> dict[str, Any]:
    """Run in a fresh process: load one system, run one round of ``mode``; RSS after load and peak."""
    folder = model_folder(workload.backbone, work_dir)
    from transformers import AutoTokenizer

    data = load_data(workload, AutoTokenizer.from_pretrained(folder), data_root)
    built = build_system(system, folder, data, workload)
    loaded, _ = rss_mb()
    built.train_round(0) if mode == "train" else built.infer_round(0)
    _, peak = rss_mb()
    return {"system": system, "mode": mode, "rss_after_load_mb": loaded, "peak_rss_mb": peak}


def measure_memory(
    workload: Workload,
    data_root: Path,
    work_dir: Path,
    names: list[str],
    modes: list[str],
    extra: list[str],
) -> dict[str, Any]:
    """One fresh process per (system, mode); ``extra`` arguments are passed on to it (e.g. --smoke)."""
    model_folder(workload.backbone, work_dir)  # build the random model once, outside the probes
    results = []
    for mode in modes:
        for name in names:
            command = [
                sys.executable,
                str(CLI),
                "--probe",
                f"{workload.name}:{name}:{mode}",
                *("--data-root", str(data_root), "--work-dir", str(work_dir)),
                "--threads",
                str(torch.get_num_threads()),
                *extra,
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            print(f"{name} {mode}: {results[-1]}", flush=True)
    return {"workload": asdict(workload), "probes": results, **environment()}


def render_memory(result: dict[str, Any]) -> list[str]:
    workload = result["workload"]
    lines = [
        f"#### Peak RSS: {workload['name']}",
        "",
        "Each row in a fresh process: load the system, then one round (train: all "
        f"{workload['train_examples']} examples, batch {workload['batch_size']}; infer: {workload['eval_examples']} "
        f"examples, batch {workload['eval_batch_size']}).",
        "",
        "| system | mode | RSS after load (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|",
    ]
    for probe in result["probes"]:
        lines.append(
            f"| {SYSTEM_LABELS[probe['system']]} | {probe['mode']} | {probe['rss_after_load_mb']:.0f} | "
            f"{probe['peak_rss_mb']:.0f} |"
        )
    return lines + [""]
