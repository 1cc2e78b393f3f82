"""Getting per-layer prefixes into a frozen Hugging Face model's attention: capability detection + registry.

* A family whose attention modules call transformers' attention-function registry gets the interface
  injector (``attention_interface.py``): prefix-aware twins of ``sdpa`` and ``eager``, the prefix passed as a
  forward keyword that transformers threads down to every attention call. No list of model types: the
  modules are inspected (``capability.py``).
* Families with their own attention register an injector here, one file each with their quirks:
  DeBERTa-v2/v3 (disentangled relative terms) and MPNet (relative position bias), both zero for prefix keys.
* Encoder-decoders (T5, mT5, BART, mBART) go through the interface too, with one prefix slot per attention
  module: encoder self-, decoder self- and cross-attention (``encoder_decoder.py``).
* Everything else is refused with the module that blocks injection and why.

Every injector installs once per backbone (installing again changes nothing) and keeps no per-call state.
"""

from __future__ import annotations

from torch import nn

from ptuning.core.geometry import PrefixGeometry, UnsupportedModelError
from ptuning.core.injection import attention_interface, patched, scoping
from ptuning.core.injection.attention_interface import AttentionInterfaceInjector
from ptuning.core.injection.base import Injector
from ptuning.core.injection.capability import survey_attention
from ptuning.core.injection.deberta import DebertaInjector
from ptuning.core.injection.encoder_decoder import EncoderDecoderInjector
from ptuning.core.injection.mpnet import MpnetInjector

# Every instance attribute an injector sets on the backbone's modules (patched or call-scoped forwards, layer
# indices, install marks): what ``detach_backbone()`` removes to give the backbone back as found.
INSTANCE_ATTRIBUTES = frozenset(
    {
        "forward",
        attention_interface.LAYER_INDEX_ATTRIBUTE,
        attention_interface.PROBED_ATTRIBUTE,
        patched.LAYER_INDEX_ATTRIBUTE,
        patched.PATCHED_ATTRIBUTE,
        scoping.SCOPED_ATTRIBUTE,
    }
)

# model_type -> injector for families whose attention does not go through the interface.
REGISTERED_INJECTORS: dict[str, type] = {
    "deberta-v2": DebertaInjector,
    "mpnet": MpnetInjector,
}
# Interface families the conformance suite (tests/core/test_conformance.py) proves; it checks this list.
TESTED_INTERFACE_FAMILIES = (
    "bert", "roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "xlm-roberta-xl", "data2vec-text",
    "electra", "ernie", "distilbert", "albert", "modernbert", "nomic_bert", "jina_embeddings_v3",
    "gpt2", "llama", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "phi", "glm",
    "glm4", "smollm3", "olmo", "olmo2", "gpt_neox", "opt", "mixtral", "qwen2_moe", "qwen3_moe", "stablelm",
    "starcoder2", "cohere", "granite", "helium", "gptj", "codegen", "gpt_bigcode", "persimmon", "nemotron",
    "seed_oss", "olmo3", "granitemoe",
)  # fmt: skip
# Encoder-decoders (prefixes on encoder self-, decoder self- and cross-attention; encoder_decoder.py).
TESTED_ENCODER_DECODER_FAMILIES = ("t5", "mt5", "bart", "mbart")
SUPPORTED_DESCRIPTION = (
    "models whose attention modules call transformers' attention interface (ALL_ATTENTION_FUNCTIONS; tested: "
    + ", ".join(TESTED_INTERFACE_FAMILIES)
    + "; encoder-decoders: "
    + ", ".join(TESTED_ENCODER_DECODER_FAMILIES)
    + "), and the registered families "
    + ", ".join(REGISTERED_INJECTORS)
    + " (docs/ARCHITECTURES.md)"
)


def injector_for(backbone: nn.Module, geometry: PrefixGeometry) -> Injector:
    """Install prefix injection on ``backbone`` (in place, once) and return its handle."""
    where = f"model type {geometry.model_type!r} ({type(backbone).__name__})"
    registered = REGISTERED_INJECTORS.get(geometry.model_type)
    if registered is not None:
        return registered(backbone)
    survey = survey_attention(backbone)
    if survey.blocking or not survey.interface:
        if survey.blocking:
            name, module = survey.blocking[0]
            reason = (
                f"its attention module {type(module).__name__} ({name or 'the model'}) computes attention "
                f"itself instead of calling transformers' attention interface, so a prefix cannot reach its "
                f"keys and values"
            )
        else:
            reason = "no module of it calls transformers' attention interface"
        raise UnsupportedModelError(
            f"{where} has no prefix injection: {reason}; supported: {SUPPORTED_DESCRIPTION}"
        )
    if geometry.is_encoder_decoder:
        return EncoderDecoderInjector(backbone, survey.interface)
    return AttentionInterfaceInjector(backbone, [module for _, module in survey.interface])


__all__ = ["Injector", "REGISTERED_INJECTORS", "UnsupportedModelError", "injector_for"]
