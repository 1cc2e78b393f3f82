"""Every training option in one typed model (pydantic), used alike by flags, YAML/JSON files, presets, sweeps
and multi-task runs.

Why one model: the options used to pass through two hand-written converters (one per training loop), and the
multi-task one skipped the type conversion, so a YAML ``learning_rate: 5e-3`` (text to YAML) crashed there.
Now every source is a plain mapping of option -> value, layered (preset < file < flags) and validated once by
``TrainConfig``; a bad value is a ``ConfigError`` that names where it came from, the field and what was
expected. Each field's docstring is its ``--help`` text.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ptuning.core.config import (
    AUTO_DTYPE,
    ConfigError,
    Method,
    PositionMode,
    PrefixConfig,
    Reparameterization,
)
from ptuning.tasks.readers import decode_utf8

MethodName = Literal["ptuning-v2", "prefix-mlp", "prompt-tuning", "linear-probe", "finetune"]
# config-file keys spelled as their flags where a flag is not the field's name
FILE_KEY_ALIASES = {"data": "data_dir", "task_split": "task_splits"}
PER_TASK_MAPS = ("task_data", "task_splits")  # TASK -> value: layered sources merge them task by task
FLAGS = "flags"  # the source name of the command line's layer (``build_config``)
PRESET = "preset"  # the first word of a preset layer's source name ("preset sst2-minilm")


class TrainConfig(BaseModel):
    """Options of ``ptuning train`` (and ``sweep``); also the keys of a ``--config`` file."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, validate_assignment=True, use_attribute_docstrings=True
    )
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)  # field -> the layer that gave it

    task: str = ""
    """registry task name, e.g. sst2, conll2003, squad (`ptuning tasks` lists them)"""
    model: str = "minilm"
    """local folder, hub id (online), or a packaged short name: minilm, smollm2, mpnet"""
    data_dir: str = ""
    """folder holding the task's files (or one data file); with --tasks, the folder holding one sub-folder
    per task"""
    method: MethodName = "ptuning-v2"
    """ptuning-v2 | prefix-mlp | prompt-tuning | linear-probe | finetune"""
    output_dir: str = "outputs/run"
    """where the checkpoint, summaries and training state go"""
    prefix_length: int = Field(16, gt=0)
    """P, virtual key/value positions per layer (prompt-tuning: input prompts)"""
    mlp_hidden_size: int = Field(512, gt=0)
    """width of prefix-mlp's bottleneck"""
    prefix_dropout: float = Field(0.1, ge=0, lt=1)
    """dropout on the prefix keys/values"""
    prefix_init: Literal["normal", "activations"] = "normal"
    """how ptuning-v2's prefix table starts: normal (N(0, prefix-init-std), the reference's) or activations
    (the frozen backbone's own keys and values for the first P tokens of the training data, prefix-tuning's
    initialisation from real words; measured here it did not help RTE or SST-2: docs/RESULTS.md)"""
    prefix_init_std: float = Field(1.0, gt=0)
    """standard deviation of the prefix table's normal initialisation"""
    prefix_layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    """layers that get a prefix, e.g. 0,1,2 (default: every layer)"""
    position_mode: Literal["keep", "shift"] = "keep"
    """keep: tokens at 0..T-1; shift: P..P+T-1 (reference / PEFT; refused on BART/T5-like backbones, which
    number their own positions)"""
    pooling: Literal["first", "last", "mean", "pooler"] | None = None
    """how classification, regression and multiple-choice heads pool the tokens: first, last (real token),
    mean, or pooler: [CLS] through the checkpoint's own pooler (dense + tanh, frozen, as transformers' BERT
    classifiers and PEFT read it) (default: first for encoders, last for decoders, mean for
    encoder-decoders such as T5 and BART, whose encoders have no [CLS])"""
    head_dropout: float = Field(0.1, ge=0, lt=1)
    """dropout before each task head"""
    backbone_dropout: float | None = Field(None, ge=0, lt=1)
    """dropout inside the backbone while training, on hidden states and attention probabilities (default: the
    model's own rates, BERT's 0.1); 0 turns it off for faster steps (docs/BENCHMARKS.md)"""
    learning_rate: float = Field(1e-2, gt=0)
    """AdamW learning rate, linear decay"""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (not on biases and norm weights, as HF Trainer decays)"""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """share of the updates with a linear warm-up from lr 0, rounded up to whole updates (HF Trainer's rule); a
    warm-up that covers the whole run (e.g. 0.1 of one update) is warned about: it never reaches the lr"""
    max_grad_norm: float | None = Field(1.0, ge=0)
    """clip the trainable parameters' gradient norm to this before each update, as the HF Trainer and the
    reference code do; 0 (or null in a file) turns clipping off"""
    epochs: float = Field(3.0, gt=0)
    """training length in (nominal) epochs; may be fractional"""
    max_steps: int | None = Field(None, gt=0)
    """stop after N optimizer updates; also bounds the schedule"""
    batch_size: int = Field(32, gt=0)
    """global batch (split across processes under accelerate/torchrun)"""
    eval_batch_size: int = Field(64, gt=0)
    """batch size for evaluation (heads on CPU: a budget of this many 32-token rows, short inputs fill up to 4x more)"""
    gradient_accumulation_steps: int = Field(1, gt=0)
    """micro-batches per optimizer update"""
    max_length: int = Field(128, gt=0)
    """tokens per input (longer inputs are cut and counted)"""
    max_train_samples: int | None = Field(None, gt=0)
    """keep only the first N training examples"""
    max_eval_samples: int | None = Field(None, gt=0)
    """keep only the first N dev/test examples"""
    group_by_length: bool = True
    """batches of similar length (less padding)"""
    pack_sequences: bool = False
    """pack several inputs of a batch into each training row (block-diagonal attention, positions restarting per
    input; dev and test are scored unpacked); encoder classification, regression and tagging tasks
    (docs/ARCHITECTURE.md)"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass (less memory, more time)"""
    compile: bool = False
    """torch.compile the frozen backbone (dynamic shapes; needs a C++ compiler on CPU): costs start-up,
    printed once; whether it pays is measured in docs/BENCHMARKS.md"""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """autocast precision: bf16 (CPU or GPU) or fp16 (GPU only: accelerate leaves it off on the CPU, so it is
    refused there); the prefix stays fp32"""
    backbone_dtype: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """dtype the frozen backbone is stored in; prefixes, heads and the loss stay fp32. auto: bf16 where the
    machine computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16), fp32 elsewhere and
    with method finetune (a trained backbone stays fp32; bf16/fp16 are refused there)"""
    backbone_quantization: Literal["int8", "nf4"] | None = None
    """quantize the frozen backbone through bitsandbytes (CUDA only; nf4 = QLoRA's 4-bit, bf16 compute)"""
    shard_backbone: bool = False
    """shard the frozen backbone over the processes, layer by layer (FSDP2), for a backbone larger than one
    device; prefixes and heads stay whole on every process. Needs several processes (torchrun / accelerate
    launch) and a frozen-backbone method"""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """attention kernel the backbone is loaded with"""
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's seed range (accelerate seeds numpy too)
    """seed of every random draw (initialisation, data order, dropout)"""
    eval_every_steps: int | None = Field(None, gt=0)
    """evaluate every N updates (default: at the end of every epoch)"""
    save_every_steps: int | None = Field(200, gt=0)
    """resumable training state every N optimizer updates (and at every epoch end)"""
    train_split: str | None = None
    """train split name (default: the task's train split)"""
    dev_split: str | None = None
    """dev split name (default: the dev file, also named validation / val); none: no dev (the last evaluation's
    checkpoint is kept)"""
    test_split: str | None = None
    """test split name (default: the test file if present; with --tasks: none); none: no test scoring"""
    dev_from_train: float | None = Field(None, gt=0, lt=1)
    """hold out this fraction of train as dev (seed 0, see summary.json data_plan), for data without a dev file"""
    resume: bool = False
    """continue from OUTPUT_DIR/training_state"""
    init_prefix_from: str | None = None
    """a prompt checkpoint whose prefix starts this run"""
    task_options: dict[str, Any] = Field(default_factory=dict)
    """the task's constructor options as JSON, e.g. '{"doc_stride": 128}'; with --tasks, may be keyed by task"""
    log_tensorboard: bool = True
    """write tensorboard scalars to OUTPUT_DIR/tensorboard"""
    # --- multi-task prompt pre-training (MPT-2): one prefix shared by several tasks --------------------------
    tasks: list[str] | None = None
    """comma-separated registry tasks sharing one prefix (MPT-2), e.g. superglue-rte,boolq,copa"""
    task_data: dict[str, str] = Field(default_factory=dict, json_schema_extra={"append": True})
    """data folder of one task, TASK=DIR (repeat per task); default: <--data-dir>/<TASK>"""
    task_splits: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"append": True, "flag": "--task-split"}
    )
    """train (and dev) split of one task, TASK=TRAIN[:DEV], e.g. boolq=train-from-val:eval-from-val"""
    sampling: Literal["proportional", "temperature"] = "proportional"
    """MPT-2 batch mixing: proportional to dataset size, or p_i ∝ n_i^(1/T)"""
    temperature: float = Field(2.0, gt=0)
    """T of --sampling temperature"""

    # --- conversions shared by every source (flags arrive as text) ---------------------------------------------
    @field_validator("prefix_layers", mode="before")
    @classmethod
    def _comma_integers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_value_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """``prefix_length: true`` (or ``yes`` in YAML) was read as 1: a truth value is not a number."""
        if isinstance(value, bool) and _base_type(info.field_name) in (int, float):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value

    @field_validator("output_dir", "data_dir", "init_prefix_from")
    @classmethod
    def _home(cls, value: str | None) -> str | None:
        """``~/runs`` in a config file (a shell expands it only in a flag) was a folder named ``~`` in the
        current one."""
        return os.path.expanduser(value) if value else value

    @field_validator("max_grad_norm")
    @classmethod
    def _zero_is_no_clipping(cls, value: float | None) -> float | None:
        """One spelling of "off" downstream: 0 (the CLI's) becomes None (a file's null)."""
        return value or None

    @field_validator("tasks", mode="before")
    @classmethod
    def _comma_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("task_options", mode="before")
    @classmethod
    def _task_options(cls, value: Any) -> Any:
        return _json_object(value)

    @field_validator(*PER_TASK_MAPS, mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return task_pairs(value)

    @model_validator(mode="after")
    def _auto_keeps_a_trained_backbone_fp32(self) -> TrainConfig:
        """auto picks the fastest storage for a *frozen* backbone; finetune trains it, and a trained weight
        stays an fp32 master (in bf16 most AdamW updates round away), so auto is fp32 there, on every
        machine, and config.json records the dtype the run used."""
        if self.backbone_dtype == AUTO_DTYPE and not Method(self.method).freezes_backbone:
            self.backbone_dtype = "fp32"
        return self

    @model_validator(mode="after")
    def _prefix_fields_fit(self) -> TrainConfig:
        self.prefix_config()  # PrefixConfig checks what the fields above cannot (e.g. layer indices)
        unread = unread_prefix_options(self.model_dump())
        if unread:  # accepted and ignored, the run would not be the one config.json says it was
            one = len(unread) == 1
            whys = "; ".join(why if one else f"{name}: {why}" for name, why in unread.items())
            raise ValueError(
                f"{', '.join(unread)} {'is' if one else 'are'} not used by method {self.method} ({whys}); "
                f"leave {'it' if one else 'them'} at the default"
            )
        if self.tasks is not None and not self.tasks:
            raise ValueError("tasks needs at least one task")
        return self

    def given_as_flag(self, field: str) -> bool:
        """Whether ``field`` came from a command-line flag (``build_config``'s flags layer), not from a preset,
        a file or the default: a flag that another flag would override (``--seed`` under ``--seeds``) is refused
        rather than dropped."""
        return self._sources.get(field) == FLAGS

    # --- derived values ---------------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        """The tasks this run trains: ``tasks`` for a multi-task run, else ``[task]``."""
        return list(self.tasks) if self.tasks else [self.task]

    @property
    def is_multitask(self) -> bool:
        return self.tasks is not None

    def prefix_config(self) -> PrefixConfig:
        reparam = Reparameterization.MLP if self.method == Method.PREFIX_MLP else Reparameterization.EMBEDDING
        return PrefixConfig(
            prefix_length=self.prefix_length,
            reparameterization=reparam,
            mlp_hidden_size=self.mlp_hidden_size,
            dropout=self.prefix_dropout,
            init_std=self.prefix_init_std,
            layers=tuple(self.prefix_layers) if self.prefix_layers else None,
            position_mode=PositionMode(self.position_mode),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` (a bad value is a ConfigError, as from any other source)."""
        return build_config([("options", changes)], base=self.to_dict())


# --- prefix options a method never reads ------------------------------------------------------------------------

_DEEP = "only deep prefixes (ptuning-v2, prefix-mlp) read it"


def unread_prefix_options(options: dict[str, Any]) -> dict[str, str]:
    """The prefix options in ``options`` set away from their defaults that its method never reads, each with
    why. Accepted, they were recorded in config.json and the checkpoint as if they had shaped the run.
    prefix_length is not among them: presets set it for every method (``--preset sst2-minilm --method
    finetune``), and the sweep refuses several lengths for a method without a prefix. Nor is a prefix dropout
    of 0 without a prefix: it says what the run does."""
    try:
        method = Method(options.get("method", Method.PTUNING_V2))
    except (ValueError, TypeError):  # validation names the bad method
        return {}
    readers = {
        "prefix_layers": (method.is_deep, _DEEP),
        "position_mode": (method.is_deep, _DEEP),
        "prefix_init_std": (method.is_deep, _DEEP),
        "mlp_hidden_size": (method is Method.PREFIX_MLP, "only prefix-mlp reads it"),
        "prefix_dropout": (
            method.uses_prefix,
            "only methods with a prefix (ptuning-v2, prefix-mlp, prompt-tuning) read it",
        ),
    }
    defaults = {name: TrainConfig.model_fields[name].default for name in readers}
    unread = {}
    for name, (read, why) in readers.items():
        if not read and options.get(name, defaults[name]) != defaults[name]:
            unread[name] = why
    if "prefix_dropout" in unread and options["prefix_dropout"] == 0:  # true of a run without a prefix
        del unread["prefix_dropout"]
    std = options.get("prefix_init_std", defaults["prefix_init_std"])
    if method.is_deep and options.get("prefix_init") == "activations" and std != defaults["prefix_init_std"]:
        unread["prefix_init_std"] = (
            "prefix_init activations starts the table from the backbone's keys and values"
        )
    return unread


# --- building a config from layered sources ---------------------------------------------------------------------


_NEXT_PAIR = re.compile(r",(?=\s*[\w.-]+=)")


def task_pairs(value: Any) -> Any:
    """TASK=VALUE items (a list of them from repeated flags, or comma-separated) into a mapping; a mapping (a
    config file's) as it is."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return value
    pairs: dict[str, str] = {}
    for text in value:
        # a comma starts a new pair only where TASK= follows it: a path may hold commas ("/data/a,b")
        for item in _NEXT_PAIR.split(str(text)):
            name, sep, rest = item.strip().partition("=")
            if item.strip() and (not sep or not name or not rest):
                raise ValueError(f"expected TASK=VALUE, got {item.strip()!r}")
            if sep:
                pairs[name.strip()] = rest.strip()
    return pairs


def _json_object(value: Any) -> Any:
    """A flag's JSON text as its object (other values unchanged)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                f"expected a JSON object such as '{{\"doc_stride\": 64}}', got {value!r}"
            ) from None
    return value


def build_config(layers: list[tuple[str, dict[str, Any]]], base: dict[str, Any] | None = None) -> TrainConfig:
    """``TrainConfig`` from (source name, options) layers, later layers winning.

    A validation error names the layer the offending value came from (a file, a preset, a flag), the field,
    what was expected and what was given, in one line. The per-task maps (``task_data``, ``task_splits``)
    merge task by task: ``--task-data sst2=DIR`` over a file's map changes sst2's folder, not the others';
    ``task_options`` merges key by key the same way (a task's entry, or one option of a single task).
    """
    merged: dict[str, Any] = dict(base or {})
    origin: dict[str, str] = {}
    for where, options in layers:
        for key, value in options.items():
            key = str(key).replace("-", "_")
            if key in PER_TASK_MAPS and key in origin:
                with contextlib.suppress(ValueError):  # a bad item is reported by validation, named
                    earlier, later = task_pairs(merged[key]), task_pairs(value)
                    if isinstance(earlier, dict) and isinstance(later, dict):
                        value = {**earlier, **later}
            elif key == "task_options" and key in origin:  # by task (or by option): a flag changes its keys
                with contextlib.suppress(ValueError):
                    earlier, later = _json_object(merged[key]), _json_object(value)
                    if isinstance(earlier, dict) and isinstance(later, dict):
                        value = {**earlier, **later}
            merged[key] = value
            origin[key] = where
    for name in unread_prefix_options(merged):  # a preset's, for its own method, which another replaced
        if origin.get(name, "").split(" ")[0] == PRESET:
            del merged[name]
    try:
        config = TrainConfig(**merged)
    except ValidationError as error:
        raise ConfigError(_describe(error.errors()[0], origin)) from None
    config._sources = origin
    return config


class _RepeatedOption(Exception):
    """A key given twice in one mapping of a config file."""


def _once(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    keys = [key for key, _ in pairs]
    if repeated := next((key for key in keys if keys.count(key) > 1), None):
        raise _RepeatedOption(repeated)
    return dict(pairs)


class _OnceLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only, never code), refusing a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        if repeated := next((key for key in keys if keys.count(key) > 1), None):
            raise _RepeatedOption(repeated)
        return super().construct_mapping(node, deep=deep)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or .json) file's mapping of option -> value, keys with dashes or underscores."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = decode_utf8(path)  # bytes that are not UTF-8: an error naming the line, not a traceback
    try:
        data = (
            json.loads(text, object_pairs_hook=_once)
            if path.suffix == ".json"
            else yaml.load(text, _OnceLoader)
        )
    except _RepeatedOption as error:  # the last would win silently: which one did the user mean?
        raise ConfigError(
            f"config file {path}: {error.args[0]!r} is given more than once; give it once"
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
    except yaml.YAMLError as error:  # one line: the place and the problem, not PyYAML's four-line excerpt
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"config file {path}{where} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    options: dict[str, Any] = {}
    spelled: dict[str, Any] = {}  # option -> the key the file gave it under
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = FILE_KEY_ALIASES.get(name, name)  # the flag's own name (--data, --task-split) works too
        if name in options:  # batch-size and batch_size: one option, and the last would win silently
            raise ConfigError(
                f"config file {path}: {spelled[name]!r} and {key!r} are the same option ({name}); give it once"
            )
        options[name], spelled[name] = value, key
    return options


# Options of ``ptuning train`` / ``sweep`` that are flags only, not TrainConfig fields (cli.py defines them):
# a config file naming one gets where it belongs, not a near-miss field name.
COMMAND_LINE_ONLY = {
    "preset": "--preset NAME",
    "config": "--config FILE",
    "seeds": "--seeds A,B,... (ptuning train)",
    "prefix_lengths": "--prefix-lengths A,B,... (ptuning sweep)",
    "learning_rates": "--learning-rates A,B,... (ptuning sweep)",
}


def _unknown(key: str, where: str) -> str:
    if key in COMMAND_LINE_ONLY:
        return (
            f"{where}: {key!r} is a command-line option, not a config-file key; use {COMMAND_LINE_ONLY[key]}"
        )
    close = difflib.get_close_matches(key, list(TrainConfig.model_fields), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown option {key!r}{hint}"


def _describe(error: dict[str, Any], origin: dict[str, str]) -> str:
    """One pydantic error as 'SOURCE: FIELD must be EXPECTED; got VALUE' ('--flag must be ...' for a flag)."""
    location = error.get("loc") or ()
    field = str(location[0]) if location else ""
    where = origin.get(field, "options")
    kind, context, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return _unknown(field, where)
    if not field:  # a check across fields: its message names them
        return str(context.get("error", error["msg"]))
    subject = flag_name(field) if where == FLAGS else f"{where}: {field}"
    if kind == "value_error":
        return f"{subject}: {context.get('error', error['msg'])}"
    bounds = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt")}
    bounds["less_than_equal"] = ("<=", "le")
    if kind in bounds:
        operator, key = bounds[kind]
        limit = context[key]
        expected = f"{operator} {limit}" if isinstance(limit, int) else f"{operator} {limit:g}"
        if expected == "> 0" and _base_type(field) is int:
            expected = "a positive integer"
    elif kind == "literal_error":
        expected = "one of " + ", ".join(str(v) for v in _literal_values(field))
    elif kind == "finite_number":
        expected = "a finite number"
    else:
        expected = _type_text(field)
    return f"{subject} must be {expected}; got {given!r}"


def _annotation(field: str) -> Any:
    info = TrainConfig.model_fields.get(field)
    return info.annotation if info is not None else None


def _without_none(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        return members[0] if len(members) == 1 else hint
    return hint


def _base_type(field: str) -> Any:
    hint = _without_none(_annotation(field))
    return typing.get_origin(hint) or hint


def _literal_values(field: str) -> tuple[Any, ...]:
    hint = _without_none(_annotation(field))
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def _type_text(field: str) -> str:
    kind = _base_type(field)
    if kind is list:
        item = (typing.get_args(_without_none(_annotation(field))) or (str,))[0]
        item = typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item
        return "comma-separated integers (e.g. 0,1,2)" if item is int else "comma-separated names (e.g. a,b)"
    return {
        float: "a number (float)",
        int: "an integer (int)",
        bool: "true or false (bool)",
        str: "text (str)",
        dict: "a mapping (JSON object)",
    }.get(kind, str(_annotation(field)))


# --- command-line flags: one per field ------------------------------------------------------------------------


def flag_name(field: str) -> str:
    extra = TrainConfig.model_fields[field].json_schema_extra if field in TrainConfig.model_fields else None
    if isinstance(extra, dict) and "flag" in extra:
        return str(extra["flag"])
    return "--" + field.replace("_", "-")


MULTITASK_FIELDS = ("tasks", "task_data", "task_splits", "sampling", "temperature")
_METAVARS = {str: "TEXT", int: "N", float: "X", list: "A,B,...", dict: "JSON"}


def add_config_flags(parser: argparse.ArgumentParser | Any, names: typing.Iterable[str]) -> None:
    """One flag per named field; help is the field's docstring. Values stay text: TrainConfig converts them,
    exactly as it converts a file's values. Unset flags are absent from the namespace."""
    for name in names:
        info = TrainConfig.model_fields[name]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flags = [flag_name(name)]
        if name == "data_dir":
            flags.append("--data")
        default = info.get_default(call_default_factory=True)
        help_text = " ".join((info.description or "").split())
        if default not in (None, {}, []):
            help_text += f" (default: {default!r})"
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        kind = _base_type(name)
        choices = _literal_values(name)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif extra.get("append"):
            options.update(action="append", metavar="TASK=VALUE")
        elif choices:  # checked by TrainConfig like any other value, not by argparse
            options["metavar"] = "{" + ",".join(str(c) for c in choices) + "}"
        else:
            options["metavar"] = _METAVARS.get(kind, "VALUE")
        parser.add_argument(*flags, **options)


def flag_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given as flags (present and not None) in ``args``."""
    return {
        name: getattr(args, name)
        for name in TrainConfig.model_fields
        if getattr(args, name, None) is not None
    }
