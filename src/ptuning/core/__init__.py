"""The engine: prefix configuration, prefix encoders, injection into frozen models, heads, checkpoints."""

from ptuning.core.config import Method, PositionMode, PrefixConfig, Reparameterization
from ptuning.core.geometry import PrefixGeometry, UnsupportedModelError

__all__ = [
    "Method",
    "PositionMode",
    "PrefixConfig",
    "PrefixGeometry",
    "Reparameterization",
    "UnsupportedModelError",
]
