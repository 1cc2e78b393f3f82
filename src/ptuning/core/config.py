"""What to train: the method and, for prefix methods, the prefix's shape and reparameterization."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class Method(StrEnum):
    """The methods the paper compares; all share one model and one training loop."""

    PTUNING_V2 = "ptuning-v2"  # deep prefix at every layer, plain embedding table (P-tuning v2 default)
    PREFIX_MLP = "prefix-mlp"  # deep prefix produced by a 2-layer MLP (prefix-tuning, Li & Liang 2021)
    PROMPT_TUNING = "prompt-tuning"  # shallow: trainable vectors at the input embeddings only (Lester et al.)
    LINEAR_PROBE = "linear-probe"  # frozen backbone, head only
    FINETUNE = "finetune"  # everything trains

    @property
    def uses_prefix(self) -> bool:
        return self in (Method.PTUNING_V2, Method.PREFIX_MLP, Method.PROMPT_TUNING)

    @property
    def is_deep(self) -> bool:
        return self in (Method.PTUNING_V2, Method.PREFIX_MLP)

    @property
    def freezes_backbone(self) -> bool:
        return self is not Method.FINETUNE


class Reparameterization(StrEnum):
    EMBEDDING = "embedding"
    MLP = "mlp"


class PositionMode(StrEnum):
    """Which positions real tokens get when a prefix is present.

    ``keep``: 0..T-1, as without a prefix; the prefix has no position and costs none of the model's length.
    ``shift``: P..P+T-1, what the reference code and PEFT do (the prefix is treated as past tokens); it
    wastes P positions of absolute-position models and is offered for faithful reproduction.
    """

    KEEP = "keep"
    SHIFT = "shift"


# The dtypes a frozen backbone can be stored in (``core.precision``); "auto" picks bf16 where the machine
# computes it natively and fp32 elsewhere. Here, without torch, so the CLI's --help stays fast.
AUTO_DTYPE = "auto"
BACKBONE_DTYPE_CHOICES = ("fp32", "bf16", "fp16", AUTO_DTYPE)
# Where eval, predict and serve run the model (core.devices resolves it); here for the same reason.
AUTO_DEVICE = "auto"
DEVICE_HELP = (
    "where the model runs: auto (CUDA when there is a CUDA device, else the CPU), cpu, cuda or cuda:N"
)


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and what was expected."""


@dataclass
class PrefixConfig:
    """The prefix: how long, how produced, where injected.

    Attributes:
        prefix_length: P, the number of virtual key/value positions per layer (or input prompts for
            shallow prompt tuning).
        reparameterization: ``embedding`` (a P x (layers*2*kv_heads*head_dim) table) or ``mlp``
            (Embedding(P, hidden) -> Linear -> Tanh -> Linear, collapsible into a table after training).
        mlp_hidden_size: the MLP's bottleneck width (reference default 512).
        dropout: dropout on the produced prefix key/values (reference default 0.1).
        init_std: standard deviation of the normal initialisation of the table (reference: 1.0, torch's
            Embedding default).
        layers: which layers receive a prefix (None = all, the P-tuning v2 default).
        position_mode: see PositionMode.
    """

    prefix_length: int = 16
    reparameterization: Reparameterization = Reparameterization.EMBEDDING
    mlp_hidden_size: int = 512
    dropout: float = 0.1
    init_std: float = 1.0
    layers: tuple[int, ...] | None = None
    position_mode: PositionMode = PositionMode.KEEP

    def __post_init__(self) -> None:
        self.reparameterization = _enum_field(
            Reparameterization, self.reparameterization, "reparameterization"
        )
        self.position_mode = _enum_field(PositionMode, self.position_mode, "position_mode")
        for name in ("prefix_length", "mlp_hidden_size"):  # True is an int in Python, not a length
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "init_std"):
            if not _is_number(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.init_std <= 0:
            raise ConfigError(f"init_std must be positive, got {self.init_std!r}")
        if self.layers is not None:
            self.layers = _layer_indices(self.layers)

    def resolved_layers(self, num_layers: int) -> tuple[int, ...]:
        """The layer indices that get a prefix, checked against the model's depth."""
        if self.layers is None:
            return tuple(range(num_layers))
        if self.layers[-1] >= num_layers:
            raise ConfigError(
                f"prefix layers {list(self.layers)} include {self.layers[-1]}, but the model has {num_layers} "
                f"layers (indices 0-{num_layers - 1})"
            )
        return self.layers

    def positions_taken(self, method: Method) -> int:
        """Positions the prefix takes before the real tokens in the position table: prompt tuning's input
        slots, or a deep prefix under position_mode 'shift' (PEFT's numbering); 0 where tokens keep 0..T-1."""
        shifted = method.is_deep and self.position_mode == PositionMode.SHIFT
        return self.prefix_length if shifted or method is Method.PROMPT_TUNING else 0

    def unread_fields(self, method: Method) -> list[str]:
        """The form fields (``reparameterization``, ``layers``) set away from their defaults where ``method``
        never reads them: shallow prompts have no MLP and sit at the input, not on layers; linear probing and
        fine-tuning have no prefix. A run that sets them would silently train something else than it asked."""
        if method.is_deep:
            return []
        unread = []
        if self.reparameterization is not Reparameterization.EMBEDDING:
            unread.append("reparameterization")
        if self.layers is not None:
            unread.append("layers")
        return unread

    def copy(self) -> PrefixConfig:
        """An independent, re-validated copy: a model keeps its own, so a caller reusing one config object
        (a sweep loop) cannot change a built model's prefix."""
        return PrefixConfig.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reparameterization"] = str(self.reparameterization)
        data["position_mode"] = str(self.position_mode)
        data["layers"] = list(self.layers) if self.layers is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrefixConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown prefix config keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)


def _enum_field(enum_type: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum_type)
        raise ConfigError(f"{name} must be one of {allowed}; got {value!r}") from None


def _layer_indices(value: Any) -> tuple[int, ...]:
    """``layers`` as sorted distinct indices. Only integers: ``int()`` turned 1.4 into 1 and "01" into
    (0, 1), so a damaged config put the prefix on layers nobody chose."""
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    ):
        raise ConfigError(
            f"layers must be None (all layers) or a non-empty list of integer layer indices >= 0, got {value!r}"
        )
    return tuple(sorted(set(value)))


def _is_number(value: Any) -> bool:
    """A finite int or float (not a truth value, a string or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
