"""Using a prompt checkpoint: rebuild its model and task, read inputs, decode or score predictions.

Inputs are JSONL lines carrying the task's own fields (``{"sentence": ...}`` for SST-2, ``{"tokens": [...]}``
for NER, ``{"question": ..., "context": ...}`` for QA) or, for single-text tasks, plain text with one input
per line. Predictions are the task's ``decode`` output, one JSON object per input, with the input's id.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, trained_dtype
from ptuning.core.config import ConfigError
from ptuning.core.devices import inference_device
from ptuning.core.model import PromptModel
from ptuning.core.quantization import check_quantization, quantize_backbone, quantizes_after_loading
from ptuning.generation import generate_task_outputs, is_generative
from ptuning.generation.texts import check_prompt_room, task_prompt_room
from ptuning.tasks.base import DataError, DataReport, Features, Task
from ptuning.tasks.classification import ClassificationTask
from ptuning.tasks.generative import CausalLmTask
from ptuning.tasks.qa import QaTask
from ptuning.tasks.readers import (
    Table,
    decode_utf8,
    decode_utf8_bytes,
    parse_delimited,
    parse_jsonl,
    parse_text_lines,
    row_id,
)
from ptuning.tasks.rebuild import rebuild_task, training_run_config
from ptuning.tasks.srl import SrlTask
from ptuning.tasks.tagging import TaggingTask
from ptuning.training.data import DEV_FROM_TRAIN_SEED, first_whole_groups, hold_out, limit_note, read_split
from ptuning.training.inference import predict_outputs

FORMATS = ("jsonl", "txt", "csv", "tsv")
DELIMITED = ("csv", "tsv")  # read by header, as the tasks read their files


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model with the tokenizer, task and input length it was trained with."""

    model: PromptModel
    tokenizer: Any
    task: Task
    head: str  # the model's head (task name inside the checkpoint)
    max_length: int
    notes: list[str] = field(default_factory=list)  # choices made for the caller, e.g. the backbone dtype


def load_for_inference(
    checkpoint_dir: str | Path,
    head: str | None = None,
    model_path: str | None = None,
    max_length: int | None = None,
    backbone_dtype: str | None = None,
    quantization: str | None = None,
    device: str | None = None,
) -> LoadedCheckpoint:
    """Load ``checkpoint_dir`` on its base model (or on ``model_path``, which must be the same model).

    The task and its ``max_length`` are rebuilt as in training (``ptuning.tasks.rebuild``, shared with the
    server); an explicit ``max_length`` overrides the trained one. ``backbone_dtype`` stores the frozen
    backbone in bf16/fp16 (None: the dtype it was trained on, ``trained_dtype``, so that eval reproduces the
    training run's scores); ``quantization`` int8 on CPU (weight-only) or int8-dynamic quantizes its linear
    layers after the prompt is loaded (``core.quantization``); int8/nf4 on CUDA go through bitsandbytes.
    ``device`` (None: ``"auto"``, CUDA when there is one) is where the model runs (``core.devices``).
    """
    checkpoint_dir = Path(checkpoint_dir)
    config = read_checkpoint_config(checkpoint_dir, base_model=model_path)  # --model: a PEFT adapter's base
    heads = config["tasks"]
    if head is None:
        if len(heads) != 1:
            raise CheckpointError(f"{checkpoint_dir} holds tasks {sorted(heads)}; choose one with --task")
        head = next(iter(heads))
    if head not in heads:
        raise CheckpointError(f"{checkpoint_dir} has no task {head!r}; it holds {sorted(heads)}")
    base = config["base_model"]
    notes = []
    target = inference_device(device)
    trained = trained_dtype(config)
    if backbone_dtype is None and trained:
        # weight-only int8 on the CPU keeps the activations in the stored dtype: quantize the copy it trained on
        if quantization is None or (quantization == "int8" and quantizes_after_loading(quantization, target)):
            backbone_dtype = trained
            notes.append(
                f"the backbone is stored in {trained}, as the prompt was trained (the checkpoint's "
                "base_model.dtype); --backbone-dtype fp32 to load it in fp32"
            )
        else:
            notes.append(
                f"the prompt was trained on the backbone stored in {trained}; --backbone-quantization "
                f"{quantization} quantizes it from fp32"
            )
    cpu_int8 = check_quantization(quantization, target, backbone_dtype)
    backbone, tokenizer = load_backbone(
        model_path or base["name_or_path"],
        causal_lm=base.get("causal_lm", False),
        dtype=backbone_dtype,
        quantization=None if cpu_int8 else quantization,
        device=target,
    )
    rebuilt = rebuild_task(checkpoint_dir, config, head)  # before the model: a bad task fails fast
    model = load_checkpoint(checkpoint_dir, backbone=backbone)
    if cpu_int8:
        quantize_backbone(model, quantization)
    length = rebuilt.length(max_length)
    check_positions(model, length, explicit=max_length is not None)
    check_prompt_room(rebuilt.task, model)
    return LoadedCheckpoint(model, tokenizer, rebuilt.task, head, length, notes)


def check_positions(model: PromptModel, max_length: int, explicit: bool) -> None:
    """Refuse before any input is read a max_length whose inputs the position table cannot number (the model
    would fail only on the first long input, mid-run), as training's preflight does; ``serve`` checks each
    checkpoint it loads the same way."""
    limit, slots = model.geometry.usable_positions, model.prefix_positions
    needed = max_length + slots
    if limit is not None and needed > limit:
        source = f"--max-length {max_length}" if explicit else f"the checkpoint's max_length {max_length}"
        extra = f" + {slots} prefix positions" if slots else ""
        raise ConfigError(
            f"{source}{extra} needs {needed} positions but {model.geometry.model_type} has {limit}; "
            f"use --max-length {limit - needed + max_length} or less"
        )


# --- inputs --------------------------------------------------------------------------------------------------


def input_format(source: str, requested: str | None) -> str:
    """``requested``, else jsonl for .jsonl/.json/.ndjson files, csv and tsv for .csv and .tsv (a header row
    naming the task's fields, as its own files have: read as text lines, the header became an input and each
    line's label column part of its text) and txt otherwise (stdin included)."""
    if requested:
        if requested not in FORMATS:
            raise DataError(f"--format must be one of {', '.join(FORMATS)}; got {requested!r}")
        return requested
    suffix = Path(source).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return suffix.lstrip(".") if suffix in (".csv", ".tsv") else "txt"


def read_records(source: str, fmt: str) -> Table:
    """Lines of ``source`` (a path, or '-' for stdin) as a Table: one record per non-blank line.

    Text lines become ``{"text": line}``, as written (less the line ending: ``examples_from_records`` strips
    them for the tasks that do not generate); JSONL lines must be JSON objects; CSV/TSV rows are records
    keyed by the header row.
    """
    name = "<stdin>" if source == "-" else source
    if source == "-":  # bytes, decoded as a file is: not UTF-8 is an error naming the line, a BOM is dropped
        text = decode_utf8_bytes(sys.stdin.buffer.read(), name)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{source}: input file not found")
        text = decode_utf8(path)  # bytes that are not UTF-8: an error naming line and byte offset
    if fmt == "txt":
        table = parse_text_lines(name, text, strip=False)
    elif fmt in DELIMITED:
        if not text.strip():
            raise DataError(f"{name}: no inputs (every line is blank)")
        table = parse_delimited(name, text, fmt)
        if not table.rows:
            raise DataError(f"{name}: no inputs after the header (columns: {table.columns})")
    else:
        table = parse_jsonl(name, text)
    if not table.rows:
        raise DataError(f"{name}: no inputs (every line is blank)")
    return table


def examples_from_records(task: Task, table: Table, fmt: str) -> list[dict[str, Any]]:
    """The task's examples for ``table``'s records, checked like the task's own files.

    A text line is a generative task's prompt as written (its edge spaces are text, as in a JSONL prompt);
    for every other task it is stripped."""
    if fmt == "txt" and not isinstance(task, CausalLmTask):
        table = replace(table, rows=[{**row, "text": row["text"].strip()} for row in table.rows])
    if isinstance(task, ClassificationTask):
        return _classification_examples(task, table, fmt)
    if isinstance(task, TaggingTask):
        return [_tagging_example(task, table, row, fmt) for row in range(len(table.rows))]
    if isinstance(task, QaTask):
        if fmt == "txt":
            raise DataError(f"{task.name} needs a question and a context: give JSONL lines (--format jsonl)")
        return [_qa_example(table, row) for row in range(len(table.rows))]
    if isinstance(task, CausalLmTask):  # and seq2seq-lm: a prompt (JSONL: its field, and a history) to answer
        if fmt == "txt":
            rows = [{task.prompt_field: row["text"]} for row in table.rows]
            table = replace(table, columns=[task.prompt_field], rows=rows)
        return [task.example(table, row, labelled=False) for row in range(len(table.rows))]
    raise DataError(f"predicting from raw input is not supported for task {task.name!r}")


def _classification_examples(task: ClassificationTask, table: Table, fmt: str) -> list[dict[str, Any]]:
    if fmt == "txt":
        names = list(task.fields)
        if len(names) != 1:
            # the column names a JSONL line may use (each field's aliases), not the internal field names
            accepted = "; ".join(
                " or ".join(repr(alias) for alias in aliases) for aliases in task.fields.values()
            )
            raise DataError(
                f"{task.name} reads {len(names)} fields; a text line holds one: give JSONL lines with one key "
                f"for each ({accepted}) and --format jsonl"
            )
        column = task.fields[names[0]][0]  # the column the task reads it from (a csv task's text_field)
        rows = [{column: row["text"]} for row in table.rows]
        table = Table(table.source, [column], rows, table.locations)
    for row in range(len(table.rows)):
        record_id(table, row)  # an id that is a list or an object: refused, as for every other task kind
    table = task.flatten(table)
    _check_renamed_texts(task, table)
    examples, _ = task.examples_from_table(table, "predict")
    return examples


def _check_renamed_texts(task: ClassificationTask, table: Table) -> None:
    """A text field read from a column of another name (csv-classification's ``text_field`` 'review' is the
    task's field 'text') must be text: checked here so that the error names the column the input has, not
    the task's internal field."""
    for name, aliases in task.fields.items():
        column = table.find_column(aliases, what=f"the {name} input")
        if column is None or column.lower() == name.lower():
            continue
        for row in range(len(table.rows)):
            value = table.value(row, column)
            if not isinstance(value, str):
                raise DataError(
                    f"{table.where(row)}: field {column!r} should be text, found {type(value).__name__} {value!r}"
                )


def _tagging_example(task: TaggingTask, table: Table, row: int, fmt: str) -> dict[str, Any]:
    record, where = table.rows[row], table.where(row)
    if fmt == "txt" or ("tokens" not in record and isinstance(record.get("text"), str)):
        tokens = record["text"].split()
    else:
        tokens = table.value(row, "tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{where}: 'tokens' should be a non-empty list of words, found {tokens!r}")
    example = {
        "id": record_id(table, row),
        "tokens": tokens,
        "tags": ["O"] * len(tokens),
        "doc_id": None,
    }
    if isinstance(task, SrlTask):
        index = record.get("predicate_index")
        if (
            fmt == "txt"
            or isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < len(tokens)
        ):
            raise DataError(f"{where}: {task.name} needs 'predicate_index', the predicate's word index")
        example.update(predicate_index=index, predicate=tokens[index])
    return example


def record_id(table: Table, row: int) -> Any:
    """The record's own ``idx``/``id``/``index`` with its JSON type (an integer stays an integer), else its
    position: the same rule as the tasks' files (``readers.row_id``)."""
    value = row_id(table.rows[row], row)
    # NaN and infinities would be written as invalid JSON (or null), and a boolean is an int to Python
    finite = not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float) or not finite:
        raise DataError(f"{table.where(row)}: the id should be a string or a finite number, found {value!r}")
    return value


def _qa_example(table: Table, row: int) -> dict[str, Any]:
    record, where = table.rows[row], table.where(row)
    for key in ("question", "context"):
        if not isinstance(table.value(row, key), str) or not record[key].strip():
            raise DataError(f"{where}: {key!r} should be non-empty text")
    return {
        "id": record_id(table, row),
        "title": "",
        "article_index": 0,
        "question": record["question"],
        "context": record["context"],
        "answers": {"text": [], "answer_start": []},
        "is_impossible": True,  # no gold span: windows get no answer label, which prediction ignores
    }


# --- predictions and scores ----------------------------------------------------------------------------------


def predict(
    loaded: LoadedCheckpoint,
    examples: list[dict[str, Any]],
    batch_size: int = 64,
    notes: list[str] | None = None,
) -> list[dict]:
    """One decoded prediction per example, with the example's id first. ``notes``, when given, receives what
    featurizing cut (inputs longer than ``max_length``, with counts), so a caller can say so."""
    features, report = featurize_inputs(loaded, examples)
    if notes is not None:
        notes.extend(report.notes)
    decoded = loaded.task.decode(examples, features, _outputs(loaded, features, batch_size))
    return [
        prediction if "id" in prediction else {"id": example.get("id"), **prediction}
        for example, prediction in zip(examples, decoded, strict=True)
    ]


def featurize_inputs(loaded: LoadedCheckpoint, examples: list[dict[str, Any]]) -> tuple[Features, DataReport]:
    """The task's features at ``loaded.max_length``; a causal LM's prompts are also cut to what its positions
    leave beside max_new_tokens (``generation.task_prompt_room``), so that one long prompt is cut and counted
    instead of failing every input's decoding."""
    room = task_prompt_room(loaded.task, loaded.model)
    limit = {} if room is None else {"prompt_limit": room}
    return loaded.task.featurize(examples, loaded.tokenizer, loaded.max_length, **limit)


HELD_OUT_PREFIX = "dev-from-"  # the dev split a --dev-from-train run held out of its train split


def score_split(
    loaded: LoadedCheckpoint,
    data_dir: str,
    split: str,
    batch_size: int = 64,
    max_samples: int | None = None,
    notes: list[str] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The task's metrics of the checkpoint on one split of ``data_dir``, with the example count and how
    many inputs were cut at ``max_length`` (``notes``, when given, receives what reading and featurizing said).
    ``dev-from-train`` is the share its training run held out (``held_out_dev``). ``max_samples`` keeps the
    first examples in whole groups (``first_whole_groups``: a MultiRC question with all its answer options)."""
    if split.startswith(HELD_OUT_PREFIX) and split not in loaded.task.splits:
        examples, read_report = held_out_dev(loaded.task, data_dir, split, checkpoint_dir)
    else:
        examples, read_report = loaded.task.read(data_dir, split)
    if max_samples is not None and len(examples) > max_samples:  # whole groups, as --max-eval-samples cuts
        total, examples = len(examples), first_whole_groups(loaded.task, examples, max_samples)
        if loaded.task.group_name and notes is not None:
            notes.append(limit_note(split, loaded.task, len(examples), total, max_samples))
    features, report = featurize_inputs(loaded, examples)
    if notes is not None:
        notes.extend(read_report.notes + report.notes)
        if read_report.unlabelled:
            notes.append(
                f"{read_report.unlabelled} of the split's {read_report.examples} examples have no label and are "
                "not scored"
            )
    scores = loaded.task.score(examples, features, _outputs(loaded, features, batch_size))
    return {"split": split, "examples": len(examples), "truncated": report.truncated_when_scored, **scores}


def run_dev_defaults(
    checkpoint_dir: str | Path, task_name: str, chosen_limit: int | None = None
) -> tuple[str, int | None, str | None]:
    """The dev split and sample limit the checkpoint's training run scored (its config.json beside the
    checkpoint), so that ``ptuning eval`` without ``--split`` reproduces the run's dev score: its
    ``--dev-from-train`` share, its ``--task-split`` / ``--dev-split`` dev, else ``dev``; and its
    ``--max-eval-samples``, unless ``chosen_limit`` (the user's ``--max-samples``) is given. The third value
    says what was inherited and from where (None: nothing was)."""
    run = training_run_config(Path(checkpoint_dir))
    train_split, dev_split = "train", None
    own = run.get("task_splits")
    if isinstance(own, dict) and isinstance(own.get(task_name), str):
        named_train, _, named_dev = own[task_name].partition(":")
        train_split, dev_split = named_train or train_split, named_dev or None
    if isinstance(run.get("train_split"), str) and train_split == "train":
        train_split = run["train_split"]
    if dev_split is None and isinstance(run.get("dev_split"), str) and run["dev_split"] != "none":
        dev_split = run["dev_split"]
    if isinstance(run.get("dev_from_train"), float):
        dev_split = HELD_OUT_PREFIX + train_split
    # the run's limit is inherited only when the user chose none (the note must not claim it otherwise)
    recorded = run.get("max_eval_samples")
    inherited = recorded if chosen_limit is None and isinstance(recorded, int) else None
    limit = chosen_limit if chosen_limit is not None else inherited
    if dev_split is None and inherited is None:
        return "dev", limit, None
    said = [f"split {dev_split}"] if dev_split else []
    said += [f"the first {inherited} examples (--max-eval-samples)"] if inherited else []
    source = (
        f"{', '.join(said)}: as the training run scored dev ({Path(checkpoint_dir).parent / 'config.json'})"
    )
    return dev_split or "dev", limit, source


def held_out_dev(
    task: Task, data_dir: str, split: str, checkpoint_dir: str | Path | None
) -> tuple[list[dict[str, Any]], Any]:
    """The dev examples a ``--dev-from-train`` run held out of its train split (``dev-from-TRAIN``): the same
    seeded draw, from the fraction its config.json (beside the checkpoint) records, over the same data."""
    run = training_run_config(Path(checkpoint_dir)) if checkpoint_dir is not None else {}
    fraction = run.get("dev_from_train")
    if not isinstance(fraction, float):
        raise DataError(
            f"--split {split}: the dev share a --dev-from-train run held out of train, but "
            f"{Path(checkpoint_dir or '.').parent / 'config.json'} records no such run; score a split of the data"
        )
    train = read_split(task, data_dir, split.removeprefix(HELD_OUT_PREFIX))
    _, dev, _ = hold_out(train, fraction, DEV_FROM_TRAIN_SEED)
    return dev.examples, dev.report


def _outputs(loaded: LoadedCheckpoint, features: Features, batch_size: int) -> list[Any]:
    if is_generative(loaded.task):  # causal-LM tasks are answered by generated texts (ptuning.generation)
        return generate_task_outputs(loaded.task, loaded.model, loaded.tokenizer, features, batch_size)
    return predict_outputs(loaded.model, loaded.head, features, loaded.tokenizer.pad_token_id, batch_size)


def write_jsonl(records: Iterable[dict[str, Any]], stream: IO[str]) -> int:
    count = 0
    for record in records:
        stream.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
        count += 1
    return count


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays as Python values; inf and nan (not JSON) as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
