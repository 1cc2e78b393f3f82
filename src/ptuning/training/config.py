"""Every training option in one validated dataclass, settable from a YAML/JSON file and the CLI."""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ptuning.core.config import ConfigError, Method, PositionMode, PrefixConfig, Reparameterization


@dataclass
class TrainConfig:
    """Options of ``ptuning train``. Field docs are the CLI's help texts."""

    task: str = ""  # registry task name, e.g. sst2, conll2003, squad
    model: str = "minilm"  # local folder, hub id (online), or a packaged short name: minilm, smollm2
    data_dir: str = ""  # folder holding the task's files
    method: str = "ptuning-v2"  # ptuning-v2 | prefix-mlp | prompt-tuning | linear-probe | finetune
    output_dir: str = "outputs/run"
    prefix_length: int = 16
    mlp_hidden_size: int = 512
    prefix_dropout: float = 0.1
    prefix_init_std: float = 1.0
    prefix_layers: list[int] | None = None  # None = every layer
    position_mode: str = "keep"  # keep: tokens at 0..T-1; shift: P..P+T-1 (reference / PEFT)
    head_dropout: float = 0.1
    learning_rate: float = 1e-2
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    epochs: float = 3.0
    max_steps: int | None = None  # stops early; also bounds the schedule
    batch_size: int = 32  # global batch (split across processes under accelerate/torchrun)
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # no | bf16 | fp16 (where the device supports it)
    attn_implementation: str = "sdpa"  # sdpa | eager
    seed: int = 42
    eval_every_steps: int | None = None  # None: evaluate at the end of every epoch
    save_every_steps: int | None = 200  # resumable training state every N optimizer steps
    train_split: str | None = None  # default: the task's train split
    dev_split: str | None = None  # default: the task's dev file; none: no dev (the last checkpoint is kept)
    test_split: str | None = None  # default: the task's test file if present; none: no test
    dev_from_train: float | None = None  # hold out this fraction of train as dev (seeded; see summary.json)
    resume: bool = False
    init_prefix_from: str | None = None  # a prompt checkpoint whose prefix starts this run
    task_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"doc_stride": 128}
    log_tensorboard: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.method not in {m.value for m in Method}:
            raise ConfigError(
                f"method must be one of {', '.join(m.value for m in Method)}; got {self.method!r}"
            )
        _positive("learning_rate", self.learning_rate)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("eval_batch_size", self.eval_batch_size)
        _positive("gradient_accumulation_steps", self.gradient_accumulation_steps)
        _positive("max_length", self.max_length)
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no, bf16 or fp16; got {self.mixed_precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio!r}")
        for name in (
            "max_steps",
            "max_train_samples",
            "max_eval_samples",
            "eval_every_steps",
            "save_every_steps",
        ):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        if self.dev_from_train is not None and not 0 < self.dev_from_train < 1:
            raise ConfigError(f"dev_from_train must be a fraction in (0, 1); got {self.dev_from_train!r}")
        self.prefix_config()  # validates prefix fields

    def prefix_config(self) -> PrefixConfig:
        reparam = Reparameterization.MLP if self.method == Method.PREFIX_MLP else Reparameterization.EMBEDDING
        return PrefixConfig(
            prefix_length=self.prefix_length,
            reparameterization=reparam,
            mlp_hidden_size=self.mlp_hidden_size,
            dropout=self.prefix_dropout,
            init_std=self.prefix_init_std,
            layers=tuple(self.prefix_layers) if self.prefix_layers else None,
            position_mode=PositionMode(self.position_mode)
            if self.position_mode in ("keep", "shift")
            else _bad("position_mode", self.position_mode, "keep or shift"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_sources(
        cls, file: str | Path | None = None, overrides: dict[str, Any] | None = None
    ) -> TrainConfig:
        """Options from a YAML/JSON file, then ``overrides`` (the CLI) on top; unknown keys are errors."""
        data: dict[str, Any] = {}
        if file is not None:
            data.update(load_config_file(file))
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        check_keys(data, str(file) if file else "options")
        return cls(**data)


def check_keys(data: dict[str, Any], where: str) -> None:
    known = [f.name for f in fields(TrainConfig)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown option {key!r}{hint}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _positive(name: str, value: float) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{name} must be > 0; got {value!r}")


def _bad(name: str, value: Any, expected: str) -> Any:
    raise ConfigError(f"{name} must be {expected}; got {value!r}")
