"""Time to a target dev score: ours against (a'') PEFT + Trainer with dynamic padding and length grouping.

Throughput compares one step with another; a user waits for a model that is good enough. Each run trains one
system at one learning rate from the grid, evaluates on dev every ``eval_every`` optimizer steps with the
clock paused, and stops at the first evaluation that reaches the target (SST-2: 80 % accuracy, CoNLL-2003:
70 entity F1) or when the step budget is spent. The clock starts right before the training call (optimizer
and Trainer construction included, model loading not) and counts everything but evaluation. Both systems use
AdamW with a linear decay to zero over the budget (the Trainer's default and the engine's), batch 32, P = 16,
max_length 128, and are scored by the same ``predict_outputs`` + ``task.score``. Each run appends one JSON
line to ``time-to-target-<task>.jsonl``; a run already in the file (same system, lr, seed and budget) is
skipped, so an interrupted sweep resumes. The tables compare one series of a file, the task's default budget
on the default model (``compared_series``): a run of another budget or model (``--smoke``, ``--target-score``,
``--target-max-steps``) is listed as not compared, never mixed in.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_common import (
    MAX_LENGTH,
    MODEL_KEYS,
    PEFT_MISSING,
    PREFIX_LENGTH,
    Data,
    Workload,
    environment,
    load_average,
    model_label,
    peft_available,
)
from speed_systems import SYSTEM_LABELS, TRAINER_LAYOUTS, PeftTrainerSystem

from ptuning.core.backbones import load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.dropout import set_dropout
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.core.pooler import PRETRAINED_POOLER, attach_pretrained_pooler, head_spec
from ptuning.tasks.base import Task
from ptuning.tasks.collate import collate, length_grouped_batches
from ptuning.tasks.registry import get_task
from ptuning.training.config import TrainConfig
from ptuning.training.inference import feature_length, predict_outputs

# The model the committed runs trained: what --time-to-target loads without --smoke (``model_label``'s name).
DEFAULT_MODEL = "minilm"
# the systems compared with (a'') at their own best learning rates
TARGET_CONTENDERS = ("ours", "ours-bf16", "ours-mean-pooling")
# what --time-to-target runs unless --systems names others
TARGET_SYSTEMS = (*TARGET_CONTENDERS, "peft-trainer-grouped")
LEARNING_RATES = (3e-3, 1e-2, 3e-2)
# Diagnoses, run only when named (``--systems``): ours with what (a'') does differently, one thing at a time.
# PEFT's sequence classifier reads [CLS] through the checkpoint's pooler (dense + tanh, frozen, as the reference
# P-tuning v2 code does too) and puts no dropout on the prefix; ours reads [CLS] directly and drops 10 % of the
# prefix keys/values (the reference's default). A diagnosis that is a throughput system too has its name.
DIAGNOSIS_LABELS = {
    "ours-no-dropout": SYSTEM_LABELS["ours-no-dropout"],
    "ours-pooler": "ours with --pooling pooler ([CLS] through the checkpoint's frozen pooler, as PEFT)",
    "ours-pooler-no-dropout": "ours with --pooling pooler and without prefix dropout (both as PEFT)",
}
LABELS = {**SYSTEM_LABELS, **DIAGNOSIS_LABELS}


@dataclass(frozen=True)
class Budget:
    """What one run may spend, and what it must reach."""

    task: str
    metric: str  # the task's score key: "accuracy" or "f1" (fractions 0..1)
    target: float
    train_examples: int | None  # a fixed random sample of the train split; None: all of it
    dev_examples: int | None  # the first N of the dev split; None: all of it
    max_steps: int
    eval_every: int  # optimizer steps between evaluations (the last step is always evaluated)
    batch_size: int = 32
    eval_batch_size: int = 64


BUDGETS = {
    "sst2": Budget("sst2", "accuracy", 0.80, None, None, max_steps=1000, eval_every=50),
    "conll2003": Budget("conll2003", "f1", 0.70, None, None, max_steps=2000, eval_every=100),
}


# ------------------------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """The optimizer settings a system trains with. Recorded in every run and part of its key, so runs of two
    recipes are never mixed: a change to ours starts a new series instead of joining the old one."""

    weight_decay: float
    max_grad_norm: float | None  # None: no clipping


def engine_recipe() -> Recipe:
    """What ``ptuning train`` uses by default (TrainConfig), so that ``ours`` cannot drift from it."""
    defaults = TrainConfig()
    return Recipe(defaults.weight_decay, defaults.max_grad_norm)


# HF TrainingArguments' defaults, which (a'') keeps (make_trainer sets neither).
TRAINER_RECIPE = Recipe(weight_decay=0.0, max_grad_norm=1.0)
# Runs written before the recipe was recorded (until 2026-12-02 04:00): ours built torch's AdamW with its
# default weight_decay=0.01, unlike ``ptuning train``; (a'') had the Trainer's defaults, as now.
LEGACY_RECIPES = {"peft-trainer-grouped": TRAINER_RECIPE}
LEGACY_OURS_RECIPE = Recipe(weight_decay=0.01, max_grad_norm=None)


def recipe_of(record: dict[str, Any]) -> dict[str, Any]:
    """The recipe a recorded run trained with (older lines have none: their recipe is known, see above)."""
    if "recipe" in record:
        return record["recipe"]
    return asdict(LEGACY_RECIPES.get(record["system"], LEGACY_OURS_RECIPE))


# ------------------------------------------------------------------------------------------- clock
class TargetWatch:
    """Counts training time with evaluations paused, and says when a run may stop.

    ``after_step(step)`` is called after every optimizer step; every ``eval_every`` steps and at the last one
    it pauses the clock, scores dev, and returns True once the score reaches the target.
    """

    def __init__(
        self, budget: Budget, score: Callable[[], float], clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.budget = budget
        self.score = score
        self.clock = clock
        self.evaluations: list[dict[str, float]] = []
        self.started: float | None = None
        self.paused = 0.0

    def start(self) -> None:
        self.started = self.clock()

    def after_step(self, step: int) -> bool:
        if step % self.budget.eval_every and step < self.budget.max_steps:
            return False
        assert self.started is not None, "start() the watch before training"
        paused_at = self.clock()
        train_seconds = paused_at - self.started - self.paused
        score = self.score()
        self.paused += self.clock() - paused_at
        self.evaluations.append({"step": step, "train_seconds": train_seconds, "score": score})
        return score >= self.budget.target

    def first_reached(self) -> dict[str, float] | None:
        return next((e for e in self.evaluations if e["score"] >= self.budget.target), None)


# ------------------------------------------------------------------------------------------- data
@dataclass
class DevSet:
    """Dev examples with their full features (the task's scorer needs word ids, labels...)."""

    task: Task
    metric: str
    examples: list[dict[str, Any]]
    features: list[dict[str, Any]]

    def score(
        self, model: torch.nn.Module, model_features: list[dict[str, Any]], pad_id: int, batch: int
    ) -> float:
        """The task's dev score of ``model`` (a PromptModel, or anything with its calling convention)."""
        outputs = predict_outputs(model, "task", model_features, pad_id, batch)
        return self.task.score(self.examples, self.features, outputs)[self.metric]


def load_target_data(budget: Budget, tokenizer: Any, data_root: Path) -> tuple[Data, DevSet]:
    """Train features (a fixed random sample when the budget says so) and dev, as the systems need them."""
    task = get_task(budget.task)
    data_dir = str(data_root / budget.task)
    train_examples, _ = task.read(data_dir, "train")
    if budget.train_examples is not None:
        sample = np.random.default_rng(0).permutation(len(train_examples))[: budget.train_examples]
        train_examples = [train_examples[i] for i in sorted(sample)]
    train, _ = task.featurize(train_examples, tokenizer, MAX_LENGTH)
    dev_examples, _ = task.read(data_dir, "dev")
    dev_examples = dev_examples[: budget.dev_examples]
    dev, _ = task.featurize(dev_examples, tokenizer, MAX_LENGTH)
    if len(dev) != len(dev_examples):  # the scorer pairs them one to one
        raise ValueError(f"{budget.task}: {len(dev_examples)} dev examples gave {len(dev)} features")
    strip = lambda features: [{k: f[k] for k in MODEL_KEYS if k in f} for f in features]  # noqa: E731
    data = Data(task, list(task.label_names), task.head, strip(train), strip(dev), tokenizer.pad_token_id)
    return data, DevSet(task, budget.metric, dev_examples, dev)


# ------------------------------------------------------------------------------------------- systems
class PeftAsPromptModel(torch.nn.Module):
    """A PEFT model behind PromptModel's calling convention (``task=``, ``head_specs``), so that both systems
    are scored by the same ``predict_outputs``."""

    def __init__(self, peft_model: torch.nn.Module, spec: HeadSpec) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.head_specs = {"task": spec}

    def forward(self, task: str, **batch: torch.Tensor):
        return self.peft_model(**batch)


def train_ours(
    folder: str,
    data: Data,
    dev: DevSet,
    budget: Budget,
    learning_rate: float,
    seed: int,
    recipe: Recipe,
    dtype: str = "fp32",
    pooling: str | None = None,
    prefix_dropout: float = PrefixConfig.dropout,
    backbone_dropout: float | None = None,
) -> TargetWatch:
    """Our loop as ``ptuning train`` runs it: length-grouped batches reshuffled every epoch, AdamW with the
    recipe's weight decay and gradient clipping, linear decay; the frozen backbone stored in ``dtype``
    (``--backbone-dtype``; prefix, head, optimizer and loss stay fp32); the head pooling as ``--pooling``
    (``"pooler"``: the checkpoint's frozen pretrained pooler); ``backbone_dropout`` as ``--backbone-dropout``.
    ``prefix_dropout`` is a diagnosis' switch (``DIAGNOSIS_LABELS``)."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    backbone, _ = load_backbone(folder, dtype=dtype)
    if backbone_dropout is not None:
        set_dropout(backbone, backbone_dropout)
    prefix = PrefixConfig(prefix_length=PREFIX_LENGTH, dropout=prefix_dropout)
    model = PromptModel(backbone, "ptuning-v2", prefix)
    model.add_task("task", head_spec(data.kind, data.label_names, pooling))
    if pooling == PRETRAINED_POOLER:
        attach_pretrained_pooler(model, "task", folder)
    watch = TargetWatch(budget, lambda: dev.score(model, data.dev, data.pad_id, budget.eval_batch_size))
    lengths = [feature_length(f) for f in data.train]
    watch.start()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=recipe.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, budget.max_steps)
    model.train()
    step, epoch = 0, 0
    while step < budget.max_steps:
        for indices in length_grouped_batches(lengths, budget.batch_size, seed=seed + epoch):
            batch = collate([data.train[i] for i in indices], data.pad_id)
            model(**batch, task="task").loss.backward()
            if recipe.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if watch.after_step(step) or step >= budget.max_steps:
                return watch
        epoch += 1
    return watch


def train_peft_trainer(
    folder: str,
    data: Data,
    dev: DevSet,
    budget: Budget,
    learning_rate: float,
    seed: int,
    recipe: Recipe,
    no_dropout: bool = False,
) -> TargetWatch:
    """(a''): PEFT + HF Trainer, DataCollatorWithPadding + train_sampling_strategy="group_by_length";
    ``no_dropout``: the model loaded with BERT's dropout rates at 0."""
    from transformers import TrainerCallback

    torch.manual_seed(seed)
    workload = Workload(
        f"time-to-target-{budget.task}",
        budget.task,
        folder,
        len(data.train),
        len(data.dev),
        repeats=1,
        batch_size=budget.batch_size,
        eval_batch_size=budget.eval_batch_size,
    )
    system = PeftTrainerSystem(
        folder, data, workload, TRAINER_LAYOUTS["peft-trainer-grouped"], no_dropout=no_dropout
    )
    scored = PeftAsPromptModel(system.model, HeadSpec(data.kind, data.label_names))
    watch = TargetWatch(budget, lambda: dev.score(scored, data.dev, data.pad_id, budget.eval_batch_size))

    class EvaluateEvery(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if watch.after_step(state.global_step):
                control.should_training_stop = True
            return control

    watch.start()
    trainer = system.trainer(
        seed, learning_rate=learning_rate, max_steps=budget.max_steps, callbacks=(EvaluateEvery(),)
    )
    used = Recipe(trainer.args.weight_decay, trainer.args.max_grad_norm)
    if used != recipe:
        raise ValueError(f"(a'') trains with {used}, but its runs are recorded as {recipe}")
    trainer.train()
    return watch


TRAINERS = {
    "ours": train_ours,
    "ours-bf16": functools.partial(train_ours, dtype="bf16"),
    "ours-mean-pooling": functools.partial(train_ours, pooling="mean"),
    "peft-trainer-grouped": train_peft_trainer,
    "ours-no-dropout": functools.partial(train_ours, prefix_dropout=0.0),
    "ours-pooler": functools.partial(train_ours, pooling=PRETRAINED_POOLER),
    "ours-pooler-no-dropout": functools.partial(train_ours, prefix_dropout=0.0, pooling=PRETRAINED_POOLER),
    "ours-no-backbone-dropout": functools.partial(train_ours, backbone_dropout=0.0),
    "ours-bf16-no-backbone-dropout": functools.partial(train_ours, dtype="bf16", backbone_dropout=0.0),
    "peft-trainer-grouped-no-dropout": functools.partial(train_peft_trainer, no_dropout=True),
}


def system_recipe(system: str) -> Recipe:
    """The recipe each system trains with now."""
    return TRAINER_RECIPE if system.startswith("peft-trainer-grouped") else engine_recipe()


# The systems our loop trains (``train_ours`` with one switch or another): ours' recipe overrides reach all of them.
OURS_SYSTEMS = tuple(name for name, train in TRAINERS.items() if getattr(train, "func", train) is train_ours)


# ------------------------------------------------------------------------------------------- runs
def run_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["system"],
        record["learning_rate"],
        record["seed"],
        json.dumps(record["budget"], sort_keys=True),
        json.dumps(recipe_of(record), sort_keys=True),
    )


def measure_time_to_target(
    budget: Budget,
    folder: str,
    data_root: Path,
    output: Path,
    systems: Iterable[str] = TARGET_SYSTEMS,
    learning_rates: Iterable[float] = LEARNING_RATES,
    seeds: Iterable[int] = (42,),
    recipes: dict[str, Recipe] | None = None,
) -> list[dict[str, Any]]:
    """Every (seed, lr, system) run not yet in ``output``, systems alternating; one JSON line each. ``recipes``
    overrides a system's recipe (an A/B of a recipe change); the default is what each system uses now."""
    from transformers import AutoTokenizer

    systems = list(systems)
    recipes = {system: (recipes or {}).get(system, system_recipe(system)) for system in systems}
    if not peft_available() and any(system.startswith("peft-trainer") for system in systems):
        print(PEFT_MISSING, flush=True)
        systems = [system for system in systems if not system.startswith("peft-trainer")]
    done = (
        {run_key(json.loads(line)) for line in output.read_text().splitlines()} if output.is_file() else set()
    )
    data, dev = load_target_data(budget, AutoTokenizer.from_pretrained(folder), data_root)
    records = []
    for seed in seeds:
        for learning_rate in learning_rates:
            for system in systems:
                record: dict[str, Any] = {
                    "task": budget.task,
                    "system": system,
                    "learning_rate": learning_rate,
                    "seed": seed,
                    "budget": asdict(budget),
                    "recipe": asdict(recipes[system]),
                }
                if run_key(record) in done:
                    print(f"{system} lr {learning_rate:g} seed {seed}: in {output.name} already", flush=True)
                    continue
                load_before = load_average()
                watch = TRAINERS[system](folder, data, dev, budget, learning_rate, seed, recipes[system])
                reached = watch.first_reached()
                record.update(
                    reached=reached is not None,
                    seconds_to_target=reached["train_seconds"] if reached else None,
                    steps_to_target=int(reached["step"]) if reached else None,
                    best_score=max(e["score"] for e in watch.evaluations),
                    train_seconds=watch.evaluations[-1]["train_seconds"],
                    steps=int(watch.evaluations[-1]["step"]),
                    evaluations=watch.evaluations,
                    train_examples=len(data.train),
                    dev_examples=len(data.dev),
                    model=model_label(folder),
                    threads=torch.get_num_threads(),
                    load_average=[load_before, load_average()],
                    **environment(),
                )
                output.parent.mkdir(parents=True, exist_ok=True)
                with output.open("a") as stream:
                    stream.write(json.dumps(record) + "\n")
                records.append(record)
                print(
                    f"{system} lr {learning_rate:g} seed {seed}: "
                    + (
                        f"{budget.metric} {budget.target:g} after {record['seconds_to_target']:.1f} s "
                        f"({record['steps_to_target']} steps)"
                        if reached
                        else f"not reached in {record['steps']} steps (best {record['best_score']:.3f})"
                    ),
                    flush=True,
                )
    return records


def smoke_budget(task: str) -> Budget:
    """Seconds-long: 8 steps of batch 4, an evaluation every 4."""
    return replace(
        BUDGETS[task],
        train_examples=16,
        dev_examples=8,
        max_steps=8,
        eval_every=4,
        batch_size=4,
        eval_batch_size=4,
    )


# ------------------------------------------------------------------------------------------- table
def series_of(record: dict[str, Any]) -> tuple[str, str | None]:
    """The (budget, model) a run belongs to: runs of two series are never compared with each other."""
    return json.dumps(record.get("budget"), sort_keys=True), record.get("model")


def compared_series(records: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The series the tables compare: the task's default budget on the default model (the committed runs); in
    a file with no run of it (a smoke run's own folder, an A/B's), the series of its first run."""
    task = (records[0].get("budget") or {}).get("task")
    default = (json.dumps(asdict(BUDGETS[task]), sort_keys=True), DEFAULT_MODEL) if task in BUDGETS else None
    present = [series_of(r) for r in records]
    return default if default in present else present[0]


def split_series(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the runs of the compared series, the runs of any other budget or model)."""
    if not records:
        return [], []
    series = compared_series(records)
    return [r for r in records if series_of(r) == series], [r for r in records if series_of(r) != series]


def fastest(records: list[dict[str, Any]], measure: str = "seconds_to_target") -> tuple[float, float] | None:
    """(learning rate, median ``measure`` to target) of the lr that reached the target in every seed fastest.

    ``measure`` is ``seconds_to_target`` (the clock) or ``steps_to_target`` (optimizer steps: independent of how
    loaded the machine was, so it can be turned into time with the idle throughput of the same systems).
    ``records`` must be one series (``split_series``): a smoke run's seconds are no evidence about a full one."""
    if len({series_of(r) for r in records}) > 1:
        raise ValueError("fastest: the runs span several budgets or models; pass one series (split_series)")
    by_rate: dict[float, list[dict[str, Any]]] = {}
    for record in records:
        by_rate.setdefault(record["learning_rate"], []).append(record)
    reached = {
        rate: statistics.median(r[measure] for r in runs)
        for rate, runs in by_rate.items()
        if all(r["reached"] for r in runs)
    }
    return min(reached.items(), key=lambda item: item[1]) if reached else None


def is_current(record: dict[str, Any]) -> bool:
    """Whether a run trained with the recipe its system uses now (only those are compared)."""
    return recipe_of(record) == asdict(system_recipe(record["system"]))


def describe_recipe(recipe: dict[str, Any]) -> str:
    clipping = recipe["max_grad_norm"]
    return f"weight decay {recipe['weight_decay']:g}, " + (
        f"gradients clipped to norm {clipping:g}" if clipping is not None else "no gradient clipping"
    )


def render_time_to_target(records: list[dict[str, Any]]) -> list[str]:
    """One table per task: every run of the compared series (``compared_series``) and the current recipes, then
    each system at its own best learning rate, their ratio, and one line per series of another recipe
    (superseded runs and A/Bs) or of another budget or model (smoke runs, --target-score), never mixed in."""
    records, other_series = split_series(records)
    others = [r for r in records if not is_current(r)]
    records = [r for r in records if is_current(r)]
    if not records:
        return []
    budget = records[0]["budget"]
    model = records[0].get("model")
    metric, target = budget["metric"], budget["target"]
    shown = lambda value: f"{100 * value:.1f}"  # noqa: E731
    dates = sorted(r["measured_at"] for r in records)
    loads = [value for r in records for value in r["load_average"]]
    recipes = dict.fromkeys(f"{LABELS[r['system']]}: {describe_recipe(recipe_of(r))}" for r in records)
    lines = [
        f"#### Time to {shown(target)} dev {metric}: {budget['task']}",
        "",
        f"{records[0]['train_examples']:,} train and {records[0]['dev_examples']:,} dev examples; at most "
        f"{budget['max_steps']} steps of batch {budget['batch_size']}, dev evaluated every {budget['eval_every']} "
        f"steps (not timed); {records[0]['threads']} torch thread(s); 1-min load average {min(loads):.1f}-"
        f"{max(loads):.1f}; runs one after the other, {dates[0]} to {dates[-1]}. AdamW, "
        + "; ".join(recipes)
        + ".",
        "",
        f"| system | lr | seed | time to target (s) | steps | best dev {metric} | whole run (s, steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        to_target = f"**{r['seconds_to_target']:.1f}**" if r["reached"] else "not reached within budget"
        lines.append(
            f"| {LABELS[r['system']]} | {r['learning_rate']:g} | {r['seed']} | {to_target} | "
            f"{r['steps_to_target'] or '–'} | {shown(r['best_score'])} | {r['train_seconds']:.1f}, {r['steps']} |"
        )
    best = {}
    lines.append("")
    for system in dict.fromkeys(r["system"] for r in records):
        runs = [r for r in records if r["system"] == system]
        best[system] = fastest(runs)
        steps = fastest(runs, "steps_to_target")
        name = LABELS[system]
        lines.append(
            f"* {name}: "
            + (
                f"best lr {best[system][0]:g}, {best[system][1]:.1f} s to target (median over seeds); fewest "
                f"steps at lr {steps[0]:g}: median {steps[1]:.0f}"
                if best[system] and steps
                else "target not reached within budget at any learning rate (in every seed)"
            )
        )
    if "peft-trainer-grouped" not in best:
        lines.append(f"* (a''): no runs in this file. {PEFT_MISSING}")
    for contender in TARGET_CONTENDERS:
        if best.get(contender) and best.get("peft-trainer-grouped"):
            ratio = best["peft-trainer-grouped"][1] / best[contender][1]
            lines.append(
                f"* (a'') ÷ {contender}, each at its best lr, by the clock: {ratio:.2f}x the time to target"
            )
    not_compared = render_not_compared(others, lambda r: "another recipe")
    not_compared += render_not_compared(
        other_series, lambda r: f"another budget or model: {series_difference(r, budget, model)}"
    )
    return lines + not_compared + [""]


def series_difference(record: dict[str, Any], budget: dict[str, Any], model: str | None) -> str:
    """What sets a run apart from the compared series, e.g. ``model tiny, max_steps 8, batch_size 4``."""
    parts = [] if record.get("model") == model else [f"model {record.get('model')}"]
    own = record.get("budget") or {}
    return ", ".join(parts + [f"{key} {value}" for key, value in own.items() if budget.get(key) != value])


def render_not_compared(records: list[dict[str, Any]], reason: Callable[[dict[str, Any]], str]) -> list[str]:
    """One line per (reason, system, recipe, lr) series not compared above: its steps to target per seed."""
    series: dict[tuple[str, str, str, float], list[dict[str, Any]]] = {}
    for r in records:
        key = (reason(r), r["system"], json.dumps(recipe_of(r), sort_keys=True), r["learning_rate"])
        series.setdefault(key, []).append(r)
    lines = []
    for (why, system, recipe, rate), runs in series.items():
        steps = [r["steps_to_target"] for r in runs]
        reached = [s for s in steps if s is not None]
        median = (
            f"median {statistics.median(reached):.0f}" if len(reached) == len(steps) else "not all reached"
        )
        lines.append(
            f"* not compared ({why}): {LABELS[system]}, {describe_recipe(json.loads(recipe))}, "
            f"lr {rate:g}: steps to target by seed "
            + ", ".join(f"{r['seed']}: {r['steps_to_target'] or '–'}" for r in runs)
            + f" ({median}); best dev {metric_shown(runs)}"
        )
    return lines


def metric_shown(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{100 * r['best_score']:.1f}" for r in runs)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
