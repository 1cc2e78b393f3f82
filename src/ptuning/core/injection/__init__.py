"""Getting per-layer prefixes into a frozen Hugging Face model's attention.

Two mechanisms, chosen per architecture family (see docs/ARCHITECTURE.md):

* ``attention_interface``: BERT-like encoders and decoders route attention through transformers'
  attention-function registry. We register prefix-aware wrappers of ``sdpa`` and ``eager`` and pass the
  prefix as a forward keyword argument, which transformers threads down to every attention call.
* ``deberta``: DeBERTa-v2/v3's disentangled attention has no registry, cache or kwargs path, so its
  attention modules get a patched forward that prepends prefix keys/values (with zero relative terms).

Both expose the same ``Injector`` interface so the model never knows which one is in use.
"""

from __future__ import annotations

from torch import nn

from ptuning.core.geometry import DEBERTA_MODEL_TYPES, PrefixGeometry
from ptuning.core.injection.attention_interface import AttentionInterfaceInjector
from ptuning.core.injection.base import Injector
from ptuning.core.injection.deberta import DebertaInjector


def injector_for(backbone: nn.Module, geometry: PrefixGeometry) -> Injector:
    """Install prefix injection on ``backbone`` (in place) and return its handle."""
    if geometry.model_type in DEBERTA_MODEL_TYPES:
        return DebertaInjector(backbone)
    return AttentionInterfaceInjector(backbone)


__all__ = ["Injector", "injector_for"]
