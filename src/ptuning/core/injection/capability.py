"""Which attention modules of a backbone a prefix can reach through transformers' attention interface.

Decision (docs/ARCHITECTURES.md): a module qualifies when its class's ``forward`` calls the attention-function
registry (``ALL_ATTENTION_FUNCTIONS``) -- read from the source, once per class. That is the exact property the
interface injector relies on (the registry call receives keys/values after caches and rotary embeddings), and
it holds per module, whereas the model-level ``_supports_attention_backend`` flag says nothing about each
module (and is missing on some families that do route through the registry). The conformance suite then
proves each family by running it. A module that looks like attention (``Attention`` in its class name) but
neither calls the registry nor contains a module that does blocks injection, and is named in the refusal.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache

from torch import nn

INTERFACE_MARKER = "ALL_ATTENTION_FUNCTIONS"


@dataclass(frozen=True)
class AttentionSurvey:
    """The backbone's attention modules, split by whether the interface reaches them (in module order);
    ``blocking`` holds the innermost modules that compute attention some other way."""

    interface: list[tuple[str, nn.Module]]
    blocking: list[tuple[str, nn.Module]]


@cache
def calls_attention_interface(module_class: type) -> bool:
    """True when ``module_class.forward`` dispatches through ``ALL_ATTENTION_FUNCTIONS``."""
    try:
        source = inspect.getsource(module_class.forward)
    except (OSError, TypeError):
        return False
    return INTERFACE_MARKER in source


def survey_attention(backbone: nn.Module) -> AttentionSurvey:
    modules = list(backbone.named_modules())
    interface = [(name, m) for name, m in modules if calls_attention_interface(type(m))]
    interface_names = [name for name, _ in interface]
    blocking = [
        (name, m)
        for name, m in modules
        if "attention" in type(m).__name__.lower()
        and not calls_attention_interface(type(m))
        and next(m.parameters(), None) is not None  # has weights: not a mask or rotary helper
        and not any(other.startswith(f"{name}.") or name.startswith(f"{other}.") for other in interface_names)
    ]
    # Name the module that computes attention, not the wrappers around it.
    blocking_names = [name for name, _ in blocking]
    innermost = [(n, m) for n, m in blocking if not any(o.startswith(f"{n}.") for o in blocking_names)]
    return AttentionSurvey(interface, innermost)
