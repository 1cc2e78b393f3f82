"""The ``ptuning`` command: train, sweep, eval, predict, export, tasks.

This module only turns arguments into calls of ptuning.training and errors into one line on stderr
(exit code 2); the work lives in training/{engine,presets,sweep,report,predict}.py. Run it as ``ptuning``,
``python -m ptuning.cli`` or under ``torchrun`` / ``accelerate launch`` for several processes.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import io
import json
import os
import sys
import typing
import warnings
from pathlib import Path
from typing import Any

from ptuning.core.config import AUTO_DEVICE, BACKBONE_DTYPE_CHOICES, DEVICE_HELP, ConfigError, Method
from ptuning.core.folders import followed, reason, unwritable, write_text_whole
from ptuning.training.config import (
    MULTITASK_FIELDS,
    TrainConfig,
    add_config_flags,
    build_config,
    flag_options,
    load_config_file,
)
from ptuning.training.presets import PRESETS, get_preset

# Only light modules above: torch, transformers and the task modules load when a command needs them, so that
# --help and usage errors answer at once.

TRAIN_EXAMPLES = """examples:
  ptuning train --preset sst2-minilm --data data/sst2 --output-dir runs/sst2
  ptuning train --task conll2003 --model roberta-large --data data/conll2003 --method ptuning-v2 \\
      --prefix-length 11 --learning-rate 3e-2 --batch-size 16 --epochs 30
  ptuning train --config run.yaml --learning-rate 1e-2        # flags override the file
  ptuning train --preset sst2-minilm --data data/sst2 --seeds 1,2,3 --output-dir runs/sst2-seeds
  ptuning train ... --output-dir runs/x --resume              # continue after a crash
  torchrun --nproc_per_node 2 -m ptuning.cli train ...         # data parallel, same global batch

Options are layered: preset < --config file (YAML or JSON, keys = option names) < flags."""

SWEEP_EXAMPLES = """examples:
  ptuning sweep --preset sst2-minilm --data data/sst2 --prefix-lengths 8,16,32 \\
      --learning-rates 5e-3,1e-2,2e-2 --output-dir runs/sst2-sweep

Each cell trains into OUTPUT_DIR/p{P}-lr{LR}; running the same command again skips finished cells and
resumes an interrupted one. The table (OUTPUT_DIR/sweep.md, sweep.json) marks the best cell by dev score."""

PREDICT_EXAMPLES = """examples:
  echo "a gripping, funny film" | ptuning predict --checkpoint runs/sst2/checkpoint --input -
  ptuning predict --checkpoint runs/ner/checkpoint --input sentences.jsonl --output predictions.jsonl

JSONL lines carry the task's own fields, e.g. {"sentence": "..."} (sst2), {"tokens": ["EU", "rejects"]}
(NER), {"question": "...", "context": "..."} (squad). A txt line is one text (single-text tasks) or one
whitespace-tokenized sentence (NER)."""

EVAL_EXAMPLES = """examples:
  ptuning eval --checkpoint runs/sst2/checkpoint --data data/sst2 --split dev"""


EXPORT_EXAMPLES = """examples:
  # trained for export: PEFT's position numbering, and [CLS] read through the pooler as PEFT's classifier reads it
  ptuning train --preset sst2-minilm --data data/sst2 --position-mode shift --pooling pooler --output-dir runs/sst2
  ptuning export --format peft runs/sst2/checkpoint adapters/sst2      # PEFT PREFIX_TUNING adapter folder
  ptuning export --format peft runs/sst2/checkpoint adapters/sst2-prompt --prefix-only   # the prompt alone

A prefix trained with position_mode keep (the default) is refused unless --allow-position-change accepts that
PEFT numbers positions otherwise; a head of one linear layer is refused (PEFT's classifier reads the pooler):
export its prompt with --prefix-only. See docs/INTEROP.md."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 2, like every other input error of the CLI."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    _quiet_transformers()
    python_format, warnings.formatwarning = warnings.formatwarning, _format_warning  # while the command runs
    inherited_group = _process_group_open()
    try:
        return args.handler(args)
    except _user_errors() as error:  # evaluated only when an exception arrives here
        print(f"ptuning {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = python_format
        if not inherited_group and _process_group_open():
            _close_process_group()


def _process_group_open() -> bool:
    """Whether a torch.distributed default group exists; never imports torch for a command that did not."""
    if "torch" not in sys.modules:
        return False
    import torch.distributed

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _close_process_group() -> None:
    """Destroy the group a torchrun command opened (through accelerate) before the interpreter exits.

    Left to the interpreter's teardown, gloo's threads can abort a rank after its work is done ("terminate
    called without an active exception", exit code -6), failing a run that trained correctly; PyTorch asks
    every script to call ``destroy_process_group`` at its end. A group the caller opened is left alone.
    """
    import torch.distributed

    torch.distributed.destroy_process_group()


def _user_errors() -> tuple[type[Exception], ...]:
    """The project's errors that mean bad input (not a bug): one line on stderr, exit code 2."""
    from ptuning.core.backbones import BackboneNotFoundError
    from ptuning.core.checkpoint import CheckpointError
    from ptuning.core.geometry import UnsupportedModelError
    from ptuning.core.injection.attention_interface import UnsupportedAttentionError
    from ptuning.core.model import UnknownNameError
    from ptuning.tasks.base import DataError
    from ptuning.tasks.tag_schemes import TagError
    from ptuning.training.engine import TrainingDivergedError

    return (
        ConfigError,
        DataError,
        CheckpointError,
        BackboneNotFoundError,
        UnsupportedModelError,
        UnsupportedAttentionError,
        TagError,
        TrainingDivergedError,
        UnknownNameError,
    )


_PYTHON_FORMATWARNING = warnings.formatwarning


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line=None
) -> str:
    """ptuning's own notes (its warning classes: a PEFT adapter's position numbering, a bf16 backbone that
    this CPU emulates...) as one ``note:`` line, like the CLI's other notes, not Python's two lines pointing
    into ptuning's source; every other warning as Python shows it."""
    if category.__module__.partition(".")[0] == "ptuning":
        return f"note: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def _quiet_transformers() -> None:
    """No load reports, weight-loading bars or hub retry chatter: the CLI prints what matters itself."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    hub_logging.set_verbosity_error()


def build_parser() -> argparse.ArgumentParser:
    """The full parser (light: no torch import)."""
    parser = _Parser(prog="ptuning", description="P-tuning v2 (deep prompt tuning) on a frozen backbone.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = _command(commands, "train", "train a prompt (or a baseline method) on one task", TRAIN_EXAMPLES)
    train.add_argument(
        "--seeds", type=_int_list, help="comma-separated seeds: one run each in OUTPUT_DIR/seed-N"
    )
    _add_config_options(train, multitask=True)  # --tasks a,b,c: one prefix pre-trained on several tasks
    train.set_defaults(handler=cmd_train)

    sweep = _command(commands, "sweep", "grid of prefix length x learning rate", SWEEP_EXAMPLES)
    _add_config_options(sweep)
    sweep.add_argument("--prefix-lengths", type=_int_list, required=True, help="e.g. 8,16,32")
    sweep.add_argument("--learning-rates", type=_float_list, required=True, help="e.g. 5e-3,1e-2")
    sweep.set_defaults(handler=cmd_sweep)

    evaluate = _command(commands, "eval", "score a prompt checkpoint on a data split", EVAL_EXAMPLES)
    _add_checkpoint_options(evaluate)
    evaluate.add_argument("--data", required=True, help="the task's data folder (or one data file)")
    evaluate.add_argument(
        "--split",
        help="split name (default: the dev split the training run scored, else dev); dev-from-train: the dev "
        "share a --dev-from-train run held out",
    )
    evaluate.add_argument(
        "--max-samples",
        type=_positive_int,
        help="score only the first N examples (default with no --split: the run's --max-eval-samples)",
    )
    evaluate.add_argument("--output", help="also write the scores to this JSON file")
    evaluate.set_defaults(handler=cmd_eval)

    predict = _command(commands, "predict", "predictions of a prompt checkpoint as JSONL", PREDICT_EXAMPLES)
    _add_checkpoint_options(predict)
    predict.add_argument("--input", required=True, help="input file, or - for stdin")
    predict.add_argument(
        "--format",
        choices=("jsonl", "txt", "csv", "tsv"),
        help="default: by extension (.jsonl/.json/.ndjson, .csv, .tsv; others txt); stdin: txt",
    )
    predict.add_argument("--output", help="output JSONL file (default: stdout)")
    predict.set_defaults(handler=cmd_predict)

    export = _command(commands, "export", "write a prompt checkpoint in another format", EXPORT_EXAMPLES)
    export.add_argument("--format", required=True, choices=("peft",), help="peft: a PEFT adapter folder")
    export.add_argument("checkpoint", help="prompt checkpoint folder (OUTPUT_DIR/checkpoint)")
    export.add_argument(
        "out", help="adapter folder to write: new, empty, or an adapter to replace (atomically)"
    )
    export.add_argument("--task", help="which task of a multi-task checkpoint")
    export.add_argument("--prefix-only", action="store_true", help="the prefix alone (FEATURE_EXTRACTION)")
    export.add_argument(
        "--allow-position-change",
        action="store_true",
        help="export a keep-mode prefix although PEFT will number positions after it (outputs differ)",
    )
    export.set_defaults(handler=cmd_export)

    tasks = _command(commands, "tasks", "list tasks and presets", None)
    tasks.set_defaults(handler=cmd_tasks)

    if _module_exists("ptuning.serve.command"):
        from ptuning.serve.command import add_serve_arguments

        serve = _command(commands, "serve", "serve prompt checkpoints over HTTP", None)
        add_serve_arguments(serve)
        serve.set_defaults(handler=cmd_serve)
    return parser


def _module_exists(name: str) -> bool:
    """Commands of optional parts (serving, multi-task) appear only where those modules are installed."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package itself is absent
        return False


def _command(commands: Any, name: str, summary: str, epilog: str | None) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# --- training options: every TrainConfig field is a flag ----------------------------------------------------


def _add_config_options(parser: argparse.ArgumentParser, multitask: bool = False) -> None:
    """--preset, --config, and one flag per TrainConfig field; unset flags stay out of the namespace."""
    parser.add_argument(
        "--preset", default=argparse.SUPPRESS, help="named option set (`ptuning tasks` lists them)"
    )
    parser.add_argument("--config", default=argparse.SUPPRESS, help="YAML or JSON file of options")
    group = parser.add_argument_group("training options (TrainConfig fields; also valid config-file keys)")
    add_config_flags(group, [name for name in TrainConfig.model_fields if name not in MULTITASK_FIELDS])
    if multitask:
        group = parser.add_argument_group("multi-task prompt pre-training (MPT-2; docs/MULTITASK.md)")
        add_config_flags(group, MULTITASK_FIELDS)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values:  # ',' alone would run nothing (or one default run) without a word
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: preset, then the config file, then the flags that were given, validated once."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if "preset" in args:
        layers.append((f"preset {args.preset}", get_preset(args.preset).options))
    if "config" in args:
        layers.append((args.config, load_config_file(args.config)))
    layers.append(("flags", flag_options(args)))
    config = build_config(layers)
    if config.is_multitask:
        if "preset" in args or getattr(args, "seeds", None):
            raise ConfigError("--tasks (multi-task pre-training) takes neither --preset nor --seeds")
        if config.task:  # one of them would be ignored, whichever the user meant
            raise ConfigError(
                f"--task {config.task} and --tasks {','.join(config.tasks or [])} both given: --task trains one "
                "task, --tasks several sharing one prefix; drop one (a config file may hold either)"
            )
    else:
        _check_task(config.task, config.task_options)
        if not config.data_dir:
            raise ConfigError("no data: pass --data DIR (the folder holding the task's files)")
    _check_model(config.model)
    return config


def _check_task(name: str | None, task_options: dict[str, Any]) -> None:
    """The task exists and accepts ``task_options`` (its constructor keywords), before any model loads."""
    from ptuning.tasks.registry import get_task, list_tasks

    if not name:
        raise ConfigError("no task: pass --task NAME or --preset NAME (`ptuning tasks` lists both)")
    known = list_tasks()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint} (`ptuning tasks` lists the tasks)")
    try:
        get_task(name, **task_options)
    except (TypeError, ValueError) as error:  # an unknown keyword, or a value the task refuses
        raise ConfigError(f"task_options {task_options}: {error}") from None


def _check_model(name: str | None) -> None:
    """Fail in seconds, not after minutes of hub retries: a folder must hold a model, a path must exist, and
    a hub id needs the hub or the local Hugging Face cache."""
    from ptuning.core.backbones import PACKAGED_MINILM, PACKAGED_MODELS, BackboneNotFoundError
    from ptuning.tasks.readers import hub_offline, hub_reachable

    if not name or name in PACKAGED_MODELS:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model folder {path} holds no config.json; expected a Hugging Face model folder"
            )
        return
    if path.exists():
        raise ConfigError(
            f"model {name!r} is a file; expected a model folder (config.json, tokenizer files, *.safetensors)"
        )
    if name.startswith(("/", ".", "~")):
        raise ConfigError(f"model {name!r} is not a model folder (no such folder)")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub id either
        cached = False
    if not cached and (hub_offline() or not hub_reachable()):
        raise BackboneNotFoundError(
            f"model {name!r} is not a local folder nor in the Hugging Face cache, and the hub cannot be reached; "
            f"pass a local model folder, or '{PACKAGED_MINILM}' for the packaged all-MiniLM-L6-v2"
        )


# --- commands ------------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from ptuning.training.engine import train
    from ptuning.training.report import aggregate_seeds, format_mean_std, write_run_report, write_seed_report
    from ptuning.training.sweep import run_variants, seed_variants

    config = config_from_args(args)
    if config.is_multitask:
        summary = train(config).summary
        if _is_main_process():
            print(f"multi-task run finished: {summary.get('tasks')}; checkpoint {summary.get('checkpoint')}")
        return 0
    if not args.seeds:
        summary = train(config).summary
        if _is_main_process():
            write_run_report(config.output_dir, summary)
            _print_result(summary, config.output_dir)
        return 0
    runs = run_variants(seed_variants(config, args.seeds), train, _log, _is_main_process())
    if _is_main_process():
        aggregate = aggregate_seeds({run.config.seed: run.summary for run in runs})
        paths = write_seed_report(config.output_dir, aggregate)
        metric = aggregate["primary_metric"]
        for split in ("dev", "test"):
            if metric in aggregate[split]:
                print(
                    f"{split} {metric}: {format_mean_std(aggregate[split][metric])} over seeds {args.seeds}"
                )
        print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ptuning.training.engine import train
    from ptuning.training.sweep import (
        grid_variants,
        run_variants,
        sweep_markdown,
        sweep_table,
        write_sweep_report,
    )

    config = config_from_args(args)
    if config.is_multitask:
        raise ConfigError("sweep trains one task; --tasks is for ptuning train")
    if len(args.prefix_lengths) > 1 and not Method(config.method).uses_prefix:  # its cells would be one run
        raise ConfigError(
            f"--prefix-lengths {','.join(map(str, args.prefix_lengths))}: method {config.method} has no prefix, "
            "so every length trains the same model; sweep --learning-rates alone"
        )
    for length in args.prefix_lengths:
        config.replace(prefix_length=length)  # validates every cell before any training
    for rate in args.learning_rates:
        config.replace(learning_rate=rate)
    variants = grid_variants(config, args.prefix_lengths, args.learning_rates)
    runs = run_variants(variants, train, _log, _is_main_process(), record_divergence=True)
    if _is_main_process():
        table = sweep_table(runs)
        paths = write_sweep_report(config.output_dir, table)
        print(sweep_markdown(table), end="")
        print(f"best: {table['best']}; wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ptuning.tasks.base import DataError
    from ptuning.tasks.readers import is_hub_id
    from ptuning.training.predict import jsonable, run_dev_defaults, score_split

    if not Path(args.data).expanduser().exists() and not is_hub_id(args.data):  # a hub id: the task reads it
        raise DataError(f"{args.data}: no such data folder or file")
    _check_output_file(args.output, {"--data": args.data, "--checkpoint": args.checkpoint})
    loaded = _load_checkpoint(args)
    if args.split is None:  # the run's dev, so that eval reproduces the dev score the run reported
        args.split, args.max_samples, source = run_dev_defaults(
            args.checkpoint, loaded.task.name, args.max_samples
        )
        if source:
            print(f"note: scoring {source}; --split names another", file=sys.stderr)
    notes: list[str] = []
    with _compile_cost(args):
        scores = score_split(
            loaded, args.data, args.split, args.batch_size, args.max_samples, notes, args.checkpoint
        )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    text = json.dumps(jsonable(scores), indent=2)  # a metric of nan (one-class stsb) prints as null
    print(text)
    if args.output:
        _write_output(args.output, text + "\n")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ptuning.tasks.base import DataError
    from ptuning.training.predict import (
        examples_from_records,
        input_format,
        predict,
        read_records,
        write_jsonl,
    )

    fmt = input_format(args.input, args.format)
    if args.input != "-" and not Path(args.input).is_file():
        raise DataError(f"{args.input}: input file not found")
    _check_output_file(args.output, {"--input": args.input, "--checkpoint": args.checkpoint})
    loaded = _load_checkpoint(args)
    records = read_records(args.input, fmt)
    examples = examples_from_records(loaded.task, records, fmt)
    notes: list[str] = [f"{records.blank_lines} blank line(s) skipped"] if records.blank_lines else []
    with _compile_cost(args):
        predictions = predict(loaded, examples, args.batch_size, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output:
        stream = io.StringIO()
        count = write_jsonl(predictions, stream)
        _write_output(args.output, stream.getvalue())
        print(f"wrote {count} predictions to {args.output}", file=sys.stderr)
    else:
        write_jsonl(predictions, sys.stdout)
    return 0


def _write_output(output: str, text: str) -> None:
    """--output, whole; a write that fails after the work (a full disk) is one line naming the file, and a
    file that was there before is left as it was (``write_text_whole`` swaps in only a whole file)."""
    from ptuning.tasks.base import DataError

    try:
        write_text_whole(output, text)
    except OSError as error:
        raise DataError(
            f"--output {output}: not written ({reason(error)}); a file there is left as it was"
        ) from None


def _check_output_file(output: str | None, keep: dict[str, str]) -> None:
    """An --output path that can be written (not a folder, in a folder that exists and takes a new file) and
    that overwrites nothing in ``keep`` (flag -> the input file, data or checkpoint it names): checked before
    the work, which a bad path would throw away, or which would replace its own input."""
    from ptuning.tasks.base import DataError

    if output is None:
        return
    path = Path(output)
    if path.is_dir():
        raise DataError(f"--output {output} is a folder; give a file path")
    if not path.parent.is_dir():
        raise DataError(f"--output {output}: folder {path.parent} does not exist")
    target = path.resolve()
    for flag, value in keep.items():
        kept = Path(value).expanduser().resolve()
        inside = kept.is_dir() and target.is_relative_to(kept)  # a checkpoint's files, or a data file
        if target == kept or (inside and (flag == "--checkpoint" or target.exists())):
            raise DataError(f"--output {output} would overwrite {flag} {value}; write the results elsewhere")
    folder = followed(path).parent  # write_text_whole writes beside the file a link names
    if (why := unwritable(folder)) is not None:
        raise DataError(f"--output {output}: cannot write in {folder} ({why})")


def cmd_export(args: argparse.Namespace) -> int:
    from ptuning.interop.peft_export import export_peft

    path = export_peft(args.checkpoint, args.out, args.task, args.prefix_only, args.allow_position_change)
    print(f"wrote a PEFT prefix-tuning adapter to {path}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from ptuning.tasks.registry import get_task, list_tasks

    print("tasks:")
    for name in list_tasks():
        task = get_task(name)
        print(f"  {name:<20} {str(task.head):<22} {task.primary_metric:<12} {task.description}")
    print("\npresets (`--preset NAME`; flags and --config override them):")
    for preset in PRESETS.values():
        options = preset.options
        print(
            f"  {preset.name:<30} {preset.task:<14} {options['model']:<19} P={options.get('prefix_length', '-'):<4}"
            f" lr={options.get('learning_rate', '-'):<7g} bs={options.get('batch_size', '-'):<3}"
            f" epochs={options.get('epochs', '-'):g}  [{preset.kind}]"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ptuning.serve.command import run_serve

    run_serve(args)
    return 0


def _add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="prompt checkpoint folder (OUTPUT_DIR/checkpoint)"
    )
    parser.add_argument("--task", help="which task of a multi-task checkpoint")
    parser.add_argument("--model", help="the base model's folder, when it moved since training")
    parser.add_argument("--max-length", type=_positive_int, help="default: the training run's max_length")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        help="default: the training run's eval batch size (its config.json beside the checkpoint), else 64",
    )
    parser.add_argument(
        "--backbone-dtype",
        choices=BACKBONE_DTYPE_CHOICES,
        help="store the frozen backbone in this dtype (auto: bf16 where the machine computes it natively)",
    )
    parser.add_argument(
        "--backbone-quantization",
        choices=("int8", "int8-dynamic", "nf4"),
        help="int8: weight-only int8 linear layers on CPU (bitsandbytes on CUDA); int8-dynamic: torch dynamic "
        "quantization (CPU, int8 activations with one scale per batch: an answer depends on its batch); nf4: CUDA + bitsandbytes",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the frozen backbone (start-up cost printed; docs/BENCHMARKS.md says when it pays)",
    )
    parser.add_argument("--device", default=AUTO_DEVICE, help=DEVICE_HELP)


def _load_checkpoint(args: argparse.Namespace) -> Any:
    """The checkpoint named by ``_add_checkpoint_options``' flags, loaded for eval or predict."""
    from ptuning.core.backbones import BackboneNotFoundError
    from ptuning.tasks.rebuild import training_run_config
    from ptuning.training.predict import load_for_inference

    if args.batch_size is None:  # the run's batches: its dev scores are reproduced to the last digit
        run = training_run_config(Path(args.checkpoint))
        args.batch_size = run.get("eval_batch_size") if isinstance(run.get("eval_batch_size"), int) else 64

    try:
        loaded = load_for_inference(
            args.checkpoint,
            args.task,
            args.model,
            args.max_length,
            args.backbone_dtype,
            args.backbone_quantization,
            args.device,
        )
    except BackboneNotFoundError as error:
        if args.model:
            raise
        # the model came from the checkpoint: a folder that moved since training is the usual cause
        raise BackboneNotFoundError(
            f"{error} (named by the checkpoint's base_model.name_or_path; pass --model FOLDER if it moved)"
        ) from error
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.compile:
        from ptuning.core.compilation import compile_backbone
        from ptuning.core.kinds import HeadKind

        if loaded.model.head_specs[loaded.head].kind in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM):
            # decoding runs eager (generation/texts.py): the flag would cost nothing and change nothing
            raise ConfigError(
                f"--compile runs encoder heads (classification, tagging, QA); {loaded.head!r} generates, and "
                "decoding runs eager through its growing cache: drop --compile"
            )
        compile_backbone(loaded.model)
    return loaded


@contextlib.contextmanager
def _compile_cost(args: argparse.Namespace) -> typing.Iterator[None]:
    """With --compile, print what compiling cost inside the block, once, on stderr (stdout may carry the
    predictions); compiling happens lazily in the first batches."""
    if not args.compile:
        yield
        return
    from ptuning.core.compilation import CompileStats

    before = CompileStats.now()
    yield
    print(CompileStats.now().since(before), file=sys.stderr)


def _print_result(summary: dict[str, Any], output_dir: str) -> None:
    metric = summary.get("primary_metric")
    scores = "  ".join(
        f"{split} {metric} {_score(summary[split][metric])}"
        for split in ("dev", "test")
        if summary.get(split) and metric in summary[split]
    )
    from accelerate import PartialState  # set up by the run: how many processes trained together

    processes = PartialState().num_processes
    together = f", {processes} processes" if processes > 1 else ""
    print(
        f"{scores or 'no dev/test scores'}  (best epoch {summary.get('best_epoch')}{together}); "
        f"reports in {output_dir}"
    )
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}")


def _score(value: float | None) -> str:
    """A metric as printed; summary.json holds an undefined one (nan: a constant side's correlation) as null."""
    return "nan" if value is None else f"{value:.4f}"


def _log(message: str) -> None:
    if _is_main_process():
        print(message, flush=True)


def _is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (they set RANK), or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
