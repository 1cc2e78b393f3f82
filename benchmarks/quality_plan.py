"""How long the quality campaign takes on another backbone: from its own measured runs where they exist,
estimated from MiniLM's measured runs where they do not.

``python benchmarks/quality.py --backbone mpnet --plan`` prints every cell of that backbone's table with its
estimated time on this CPU (one thread per run) and on a GPU, the totals and the commands. The estimate:

1. **Work of a run** = epochs x (training tokens + (dev + test tokens) / 3): every epoch trains on the train
   split and scores dev (and test where the budget reports test); a scoring pass is a forward only, about a
   third of a training step's forward + backward. Token counts per split (real tokens, after truncation; the
   engine groups batches by length, so padding adds little) are measured once with the MiniLM tokenizer
   (``--measure-tokens`` writes ``benchmarks/results/quality/token_counts.json``).
2. **MiniLM CPU seconds per unit of work**, per method: the median of wall_seconds / work over the CPU runs
   in MiniLM's results files (SST-2 and CoNLL-2004 ran on this CPU, one thread, two runs at a time).
3. **Backbone ratio**: the matrix-multiply FLOPs per token, layers x 12 x hidden^2 (attention projections
   4 h^2, MLP 8 h^2 with a 4h MLP): all-mpnet-base-v2 12 x 768 against MiniLM 6 x 384 is 8.0x. The
   parameter ratio (109.5 / 22.6 = 4.8x) understates the cost because MiniLM's parameters are half
   embedding table, which costs no FLOPs.
4. **GPU**: MiniLM's GPU run times (12 at a time on one H200) x 1 to x the same ratio: those runs were
   dominated by per-step overhead, which does not grow with the model, so the truth lies in between.
5. **Calibration from the backbone's own runs.** Once the backbone has one-thread CPU runs in its results folder
   (``benchmarks/results/quality/mpnet/*.jsonl``: each line has ``wall_seconds``, ``device``, the budget and
   the setting), its own CPU seconds per unit of work replace steps 2-3: the median over its runs of the same
   task and method ("measured"); else over its runs of the method on other tasks ("measured, other tasks");
   only a method with no run of its own falls back to MiniLM's rate x the FLOP ratio ("FLOP estimate"). The
   plan's header counts the cells of each kind, each cell says which, and where a cell is measured the header
   gives measured / FLOP estimate, so the remaining estimates can be read against it.

Not modelled: prefix length (P 64/128 lengthens the keys; +5-40 % a step at P 128 on MiniLM, more on short
SST-2 sentences), a machine busier or idler than when MiniLM ran, and early divergence.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import quality_protocol as protocol
import quality_results as results

TOKENS_FILE = results.RESULTS_DIR / "token_counts.json"
EVAL_COST = 1 / 3  # a scoring pass per token, relative to a training step per token
CPU_CONCURRENT = 2  # runs at a time on the 2-core CPU (one thread each)
DEFAULT_GPU_JOBS = 12


def flops_ratio(backbone: protocol.Backbone) -> float:
    """Per-token matmul FLOPs of ``backbone`` over MiniLM's (layers x hidden^2)."""
    minilm = protocol.BACKBONES["minilm"]
    return (backbone.num_layers * backbone.hidden_size**2) / (minilm.num_layers * minilm.hidden_size**2)


# ------------------------------------------------------------------------------------------- tokens
def measure_tokens(data_root: Path = results.DATA_ROOT, path: Path = TOKENS_FILE) -> dict[str, Any]:
    """Real tokens per split for every budget (1x and large), with the MiniLM tokenizer; written to ``path``."""
    from transformers import AutoTokenizer

    from ptuning.core.backbones import resolve_model_path
    from ptuning.training.config import TrainConfig
    from ptuning.training.engine import load_split, plan_tasks

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    counts: dict[str, Any] = {}
    for scale, budgets in (("full", protocol.BUDGETS), ("large", protocol.LARGE_BUDGETS)):
        for task, budget in budgets.items():
            config = TrainConfig(**budget.train_options(), data_dir=str(data_root / budget.data))
            (plan,) = plan_tasks(config)
            splits = {}
            for role, name, limit in (
                ("train", plan.train_split, budget.max_train_samples),
                ("dev", plan.dev_split, budget.max_eval_samples),
                ("test", plan.test_split, budget.max_eval_samples),
            ):
                if name is None:
                    continue
                split = load_split(plan.task, config, tokenizer, name, limit)
                splits[role] = {
                    "features": len(split.features),
                    "tokens": sum(map(tokens_of, split.features)),
                }
            counts.setdefault(scale, {})[task] = splits
            print(f"{scale} {task}: {splits}", flush=True)
    path.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    return counts


def tokens_of(feature: dict[str, Any]) -> int:
    """Real tokens a feature costs: every choice of a multiple-choice feature runs through the model."""
    ids = feature["input_ids"]
    return sum(len(choice) for choice in ids) if ids and isinstance(ids[0], list | tuple) else len(ids)


def load_tokens(path: Path = TOKENS_FILE) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run python benchmarks/quality_plan.py --measure-tokens")
    return json.loads(path.read_text())


def work(tokens: dict[str, Any], epochs: float) -> float:
    """Training-token equivalents a run processes (see the module docstring, step 1)."""
    scored = sum(tokens[role]["tokens"] for role in ("dev", "test") if role in tokens)
    return epochs * (tokens["train"]["tokens"] + EVAL_COST * scored)


# ------------------------------------------------------------------------------------------- rates
def minilm_records(scale: str) -> dict[str, list[dict[str, Any]]]:
    """MiniLM's runs per task under the current budgets of ``scale`` (full or large)."""
    bench = results.Bench(scale=scale)
    return {task: bench.records(task) for task in bench.budgets}


def on_cpu(record: dict[str, Any]) -> bool:
    return record.get("device", "cpu") == "cpu"  # the first CPU runs predate the device field


def timed_whole(record: dict[str, Any]) -> bool:
    """Whether the record's wall_seconds is the whole run's: a run continued after a kill timed its last part."""
    return record.get("resumed_at_batch") is None


def epochs_of(record: dict[str, Any]) -> float:
    return record["budget"]["epochs"] * record["setting"].get("epochs_factor", 1)


def cpu_rates(tokens: dict[str, Any]) -> dict[str, float]:
    """MiniLM CPU seconds per unit of work, per method (median over its CPU runs at the 1x budget)."""
    per_method: dict[str, list[float]] = {}
    for task, records in minilm_records("full").items():
        for record in filter(timed_whole, filter(on_cpu, records)):
            units = work(tokens["full"][task], epochs_of(record))
            per_method.setdefault(record["method"], []).append(record["wall_seconds"] / units)
    return {method: statistics.median(values) for method, values in per_method.items()}


def gpu_seconds(scale: str) -> dict[tuple[str, str], float]:
    """MiniLM GPU seconds per (task, method) at ``scale`` (median); ("*", method) is the method's median."""
    found: dict[tuple[str, str], list[float]] = {}
    for task, records in minilm_records(scale).items():
        for record in filter(timed_whole, records):
            if not on_cpu(record):
                seconds = record["wall_seconds"] / record["setting"].get("epochs_factor", 1)
                found.setdefault((task, record["method"]), []).append(seconds)
                found.setdefault(("*", record["method"]), []).append(seconds)
    return {key: statistics.median(values) for key, values in found.items()}


def measured_rates(bench: results.Bench, tokens: dict[str, Any]) -> dict[tuple[str, str], float]:
    """``bench``'s own CPU seconds per unit of work from its results files (step 5 of the module docstring):
    {(task, method): median over that task's runs, ("*", method): median over all the method's runs}."""
    found: dict[tuple[str, str], list[float]] = {}
    for task in bench.budgets:
        for record in bench.records(task):
            # the plan's CPU hours are one thread's, over a whole run
            if not on_cpu(record) or record.get("threads", 1) != 1 or not timed_whole(record):
                continue
            rate = record["wall_seconds"] / work(tokens[task], epochs_of(record))
            found.setdefault((task, record["method"]), []).append(rate)
            found.setdefault(("*", record["method"]), []).append(rate)
    return {key: statistics.median(values) for key, values in found.items()}


TIME_SOURCES = ("measured", "measured, other tasks", "FLOP estimate")


def cpu_rate(
    task: str,
    method: str,
    measured: dict[tuple[str, str], float],
    minilm_rates: dict[str, float],
    ratio: float,
) -> tuple[float, str]:
    """CPU seconds per unit of work for a cell, and which of ``TIME_SOURCES`` it came from."""
    if (task, method) in measured:
        return measured[(task, method)], TIME_SOURCES[0]
    if ("*", method) in measured:
        return measured[("*", method)], TIME_SOURCES[1]
    return minilm_rates[method] * ratio, TIME_SOURCES[2]


# ------------------------------------------------------------------------------------------- plan
def cell_estimates(bench: results.Bench) -> list[dict[str, Any]]:
    """Every cell of ``bench`` with its runs, estimated CPU and GPU seconds and where the CPU time came from
    (``time_from``, one of ``TIME_SOURCES``; see the module docstring)."""
    tokens = load_tokens()[bench.scale]
    rates = cpu_rates(load_tokens())
    measured = measured_rates(bench, tokens)
    gpu = gpu_seconds(bench.scale)
    ratio = flops_ratio(bench.spec)
    rows = []
    for cell in results.all_cells(bench):
        budget = bench.budgets[cell.task]
        if cell.phase == "sweep":
            settings = list(bench.sweeps[cell.method])
        elif cell.phase == "seeds":
            settings = [{}] * len(protocol.EXTRA_SEEDS)
        else:
            name = protocol.ablation_of(cell.phase)
            settings = protocol.ablation_changes(name, bench.spec.num_layers)
            if cell.phase.startswith("confirm-"):  # at most every change, with each extra seed
                settings = [s for s in settings for _ in protocol.EXTRA_SEEDS]
            elif name in protocol.ALL_SEEDS_ABLATIONS:
                settings = [s for s in settings for _ in protocol.ALL_SEEDS]
        factors = [setting.get("epochs_factor", 1) for setting in settings]
        rate, time_from = cpu_rate(cell.task, cell.method, measured, rates, ratio)
        units = sum(work(tokens[cell.task], budget.epochs * f) for f in factors)
        per_gpu_run = gpu.get((cell.task, cell.method), gpu.get(("*", cell.method), 0.0))
        rows.append(
            {
                "cell": cell.name,
                "runs": len(settings),
                "cpu_seconds": rate * units,
                "flops_cpu_seconds": rates[cell.method] * ratio * units,  # step 3's estimate, for comparison
                "gpu_seconds": sum(per_gpu_run * f for f in factors),  # x1; x ratio is the upper bound
                "time_from": time_from,
                "status": results.cell_status(bench, cell),
            }
        )
    return rows


def calibration(rows: list[dict[str, Any]]) -> str:
    """How the measured cells compare with what the FLOP estimate would have said (empty when none is)."""
    ratios = [r["cpu_seconds"] / r["flops_cpu_seconds"] for r in rows if r["time_from"] == TIME_SOURCES[0]]
    if not ratios:
        return ""
    return (
        f"; the measured cells took x{statistics.median(ratios):.2f} the FLOP estimate (median; "
        f"x{min(ratios):.2f}-x{max(ratios):.2f})"
    )


def render_plan(bench: results.Bench, gpu_jobs: int = 1) -> str:
    """The campaign for ``bench``: cells, estimates, totals, commands (Markdown)."""
    gpu_jobs = gpu_jobs if gpu_jobs > 1 else DEFAULT_GPU_JOBS
    rows = cell_estimates(bench)
    ratio = flops_ratio(bench.spec)
    cpu_total = sum(r["cpu_seconds"] for r in rows)
    gpu_total = sum(r["gpu_seconds"] for r in rows)
    runs = sum(r["runs"] for r in rows)
    tasks = list(dict.fromkeys(r["cell"].split(":")[0] for r in rows))
    scale = "" if bench.scale == "full" else f" --scale {bench.scale}"
    backbone = f"--backbone {bench.backbone}"
    kinds = {kind: [r["cell"] for r in rows if r["time_from"] == kind] for kind in TIME_SOURCES}
    lines = [
        f"### Campaign: `{backbone}{scale}` ({len(rows)} cells, {runs} runs)",
        "",
        f"CPU time per cell (benchmarks/quality_plan.py says how; 'time from' in the cell table): "
        f"**{len(kinds['measured'])} cells measured** (this backbone's own CPU seconds per token of work, same "
        f"task and method), **{len(kinds['measured, other tasks'])} from its runs of the method on other "
        f"tasks**, **{len(kinds['FLOP estimate'])} FLOP estimates** (MiniLM's CPU seconds per token of work for "
        f"the method x this cell's tokens x {ratio:.1f}, the matmul FLOPs per token of "
        f"{bench.spec.num_layers} layers x {bench.spec.hidden_size} against 6 x 384){calibration(rows)}. "
        f"GPU device time = MiniLM's GPU run time x 1 to x {ratio:.1f} (its runs were mostly per-step overhead).",
        "",
        "| task | cells | runs | CPU hours (1 thread) | GPU device minutes |",
        "|---|---|---|---|---|",
    ]
    for task in tasks:
        mine = [r for r in rows if r["cell"].startswith(f"{task}:")]
        cpu, gpu_low = sum(r["cpu_seconds"] for r in mine) / 3600, sum(r["gpu_seconds"] for r in mine) / 60
        lines.append(
            f"| {bench.budgets[task].label} | {len(mine)} | {sum(r['runs'] for r in mine)} | {cpu:.0f} | "
            f"{gpu_low:.0f}-{gpu_low * ratio:.0f} |"
        )
    lines += [
        "",
        "| cell | runs | CPU hours (1 thread) | time from | GPU device minutes | status |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['cell']}` | {r['runs']} | {r['cpu_seconds'] / 3600:.1f} | {r['time_from']} | "
        f"{r['gpu_seconds'] / 60:.1f}-{r['gpu_seconds'] * ratio / 60:.1f} | {r['status']} |"
        for r in rows
    ]
    first = [r for r in rows if r["cell"].split(":")[0] in ("sst2", "conll2003")]
    first_hours = sum(r["cpu_seconds"] for r in first) / 3600
    lines += [
        "",
        f"**Total**: {cpu_total / 3600:.0f} CPU hours, i.e. about {cpu_total / 3600 / CPU_CONCURRENT:.0f} hours "
        f"({cpu_total / 86400 / CPU_CONCURRENT:.1f} days) of wall time with {CPU_CONCURRENT} runs at a time "
        f"(SST-2 and CoNLL-2003 alone: {first_hours:.0f} CPU hours, {first_hours / CPU_CONCURRENT:.0f} h wall); "
        f"on one GPU {gpu_total / 60:.0f}-{gpu_total * ratio / 60:.0f} device minutes, i.e. "
        f"{gpu_total / 60 / gpu_jobs:.0f}-{gpu_total * ratio / 60 / gpu_jobs:.0f} minutes of wall time with "
        f"--jobs {gpu_jobs}.",
        "",
        "CPU (one thread per run, two runs at a time, in the background, resumable: re-run the same line "
        "after an interruption; finished runs are skipped):",
        "",
        "```",
        f"nohup python benchmarks/quality.py {backbone}{scale} --run-all --jobs 2 --threads 1 "
        f"--tasks sst2 conll2003 > quality-{bench.backbone}.log 2>&1 &",
        f"nohup python benchmarks/quality.py {backbone}{scale} --run-all --jobs 2 --threads 1 "
        f">> quality-{bench.backbone}.log 2>&1 &",
        "```",
        "",
        "GPU (one machine; `--deadline` stops launching runs at 300 s so runs started before it can finish "
        "inside a 10-minute command; resumable across commands and leases):",
        "",
        "```",
        f"python benchmarks/quality.py {backbone} --run-all --jobs {gpu_jobs} --deadline 300",
        f"python benchmarks/quality.py {backbone} --scale large --run-all --jobs {gpu_jobs} --deadline 300",
        "```",
        "",
        "A backbone larger than one device call's transfer (MPNet's 438 MB) travels in parts first: "
        '`scripts/prepare_gpu_quality.sh` here, then the call sequence in docs/RESULTS.md, "Before asking for '
        'the accelerator".',
        "",
        "Then: `python benchmarks/quality.py "
        f"{backbone}{scale} --table --update-doc docs/RESULTS.md` and `python benchmarks/quality_scaling.py "
        "--update-doc docs/RESULTS.md`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--measure-tokens", action="store_true", help=f"(re)write {TOKENS_FILE.name}")
    parser.add_argument("--data-root", type=Path, default=results.DATA_ROOT)
    args = parser.parse_args(argv)
    if args.measure_tokens:
        measure_tokens(args.data_root)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(results.REPO / "src"))
    raise SystemExit(main())
