"""What a ``PromptModel`` changes on the backbone it is given, recorded so that it can be undone.

Why: for speed and for the prefix, a ``PromptModel`` swaps the backbone's dropout modules for
``FastDropout`` (a cheaper CPU mask), switches its attention to the prefix-aware wrapper (or patches
DeBERTa's attention modules), freezes it, and may turn on gradient checkpointing. The user's backbone must
come back as it was found (``PromptModel.detach_backbone``).

The record lives on the backbone itself, so several ``PromptModel``s built on one backbone share it: the
first records the backbone as found, later ones join, and the backbone is restored when the last one
detaches. They also share one injector, and every pass of every model sets the injector's state (a model
without a per-layer prefix clears it), so a model's outputs never depend on which other model was built or
run last.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

from ptuning.core.config import ConfigError
from ptuning.core.dropout import swap_in_fast_dropout
from ptuning.core.geometry import PrefixGeometry
from ptuning.core.injection import INSTANCE_ATTRIBUTES, Injector, injector_for
from ptuning.core.readout import READOUT_ATTRIBUTE, install_first_token_readout

_RECORD = "_ptuning_attachment"


def _configs(backbone: nn.Module) -> list:
    """Every config that carries an attention implementation: the model's, its sub-configs, and the copies
    some families give their inner stacks (T5's and BART's encoder and decoder)."""
    found = {}
    for module in [backbone, *backbone.modules()]:
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            subs = [getattr(config, name, None) for name in getattr(config, "sub_configs", {})]
            for each in (config, *subs):
                if each is not None:
                    found.setdefault(id(each), each)
    return list(found.values())


def _is_checkpointing(backbone: nn.Module) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # the newer name first
        if hasattr(type(backbone), name):
            return bool(getattr(backbone, name))
    return False


def _is_injection_attribute(name: str) -> bool:
    """Set by an injector (``core/injection``). Other ``ptuning_*`` attributes (``ptuning_source``,
    ``ptuning_quantization``) describe the backbone itself and stay. The first-token readout's patch of the
    last layer (``core/readout.py``) goes the same way."""
    return name in INSTANCE_ATTRIBUTES or name == READOUT_ATTRIBUTE


class BackboneAttachment:
    """The backbone as found (taken once, by the first ``PromptModel``) and who is holding it now."""

    def __init__(self, backbone: nn.Module, freezes: bool) -> None:
        self.backbone = backbone
        self.freezes = freezes
        self.holders = 0
        self.injector: Injector | None = None
        self.reads_first_token = False  # the last layer can run for position 0 alone (core/readout.py)
        self.training = backbone.training
        self.requires_grad = {name: p.requires_grad for name, p in backbone.named_parameters()}
        self.attention = [(config, config._attn_implementation) for config in _configs(backbone)]
        self.module_attributes = {
            module: {name for name in vars(module) if _is_injection_attribute(name)}
            for module in backbone.modules()
        }
        self.was_checkpointing = _is_checkpointing(backbone)
        self.had_input_grad_hooks = bool(getattr(backbone, "_require_grads_hooks", None))
        self.dropouts = swap_in_fast_dropout(backbone)  # same rates, a cheaper CPU mask (core/dropout.py)

    def install_injector(self, geometry: PrefixGeometry) -> Injector:
        if self.injector is None:
            self.injector = injector_for(self.backbone, geometry)
            self.reads_first_token = install_first_token_readout(self.backbone, geometry.model_type)
        return self.injector

    def restore(self) -> None:
        """Put back everything recorded: dropout modules, attention, frozen flags, checkpointing, mode."""
        backbone = self.backbone
        for parent, name, original in self.dropouts:
            setattr(parent, name, original)
        for config, implementation in self.attention:
            config._attn_implementation = implementation
        for module, found in self.module_attributes.items():
            for name in [n for n in vars(module) if _is_injection_attribute(n) and n not in found]:
                delattr(module, name)
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_(self.requires_grad[name])
        if not self.was_checkpointing and _is_checkpointing(backbone):
            if hasattr(backbone, "activation_checkpointing_disable"):
                backbone.activation_checkpointing_disable()
            else:
                backbone.gradient_checkpointing_disable()
        # enabling checkpointing hooked the input embeddings to require grad, and disabling it leaves the hook
        # (transformers): a frozen backbone's outputs would still build a graph through every layer
        if not self.had_input_grad_hooks and getattr(backbone, "_require_grads_hooks", None):
            backbone.disable_input_require_grads()
        backbone.train(self.training)


def attach(backbone: nn.Module, freezes: bool) -> BackboneAttachment:
    """Join (or start) the record of ``backbone``; a fine-tuning model cannot share a frozen backbone."""
    record: BackboneAttachment | None = vars(backbone).get(_RECORD)
    if record is None:
        record = BackboneAttachment(backbone, freezes)
        vars(backbone)[_RECORD] = record  # a plain attribute: not a submodule, not in the state dict
    elif record.freezes != freezes:
        raise ConfigError(
            "this backbone is already used by a PromptModel that "
            f"{'freezes' if record.freezes else 'fine-tunes'} it; a model that "
            f"{'freezes' if freezes else 'fine-tunes'} it cannot share it (load a second copy)"
        )
    if freezes:
        backbone.requires_grad_(False)
    record.holders += 1
    return record


def release(record: BackboneAttachment) -> nn.Module:
    """One model lets go; the last one restores the backbone as found. Returns the backbone."""
    record.holders -= 1
    if record.holders == 0:
        record.restore()
        del vars(record.backbone)[_RECORD]
    return record.backbone
