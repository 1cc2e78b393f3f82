"""PromptModel: a frozen Hugging Face backbone + one prefix per task (or a shared one) + one head per task.

The prefix reaches attention through an injector (see ``core.injection``); heads only see hidden states.
A batch may mix tasks: each row names its prefix, which is how one backbone serves many tasks at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import torch
from torch import nn
from transformers.utils import ModelOutput

from ptuning.core.attachment import attach, release
from ptuning.core.config import ConfigError, Method, PositionMode, PrefixConfig, Reparameterization
from ptuning.core.fingerprint import base_fingerprint
from ptuning.core.geometry import PrefixGeometry, prompt_room
from ptuning.core.heads import Head, Pooling
from ptuning.core.injection import Injector
from ptuning.core.injection.attention_interface import active_prefix
from ptuning.core.kinds import HeadKind
from ptuning.core.packing import PackedRows, check_packable, mask_dtype_for
from ptuning.core.precision import dtype_name, floating_dtype
from ptuning.core.prefix import PrefixEncoder, PrefixKV, PromptEmbedding, split_table
from ptuning.core.quantization import has_no_backward

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
# Heads that read one pooled vector per row: with first-token pooling, the last layer's position 0 alone.
FIRST_TOKEN_KINDS = (HeadKind.CLASSIFICATION, HeadKind.REGRESSION, HeadKind.MULTIPLE_CHOICE)


class UnknownNameError(KeyError):
    """A task or prefix name the model does not have (a KeyError, as a dict lookup would raise; its own class so
    that the CLI reports it in one line without taking every KeyError, a bug's too, for bad input)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class HeadSpec:
    """What the model must know about a task to build its head."""

    kind: HeadKind
    label_names: list[str] | None = None
    # None: the backbone's default (``PromptModel.default_pooling``), which ``add_task`` records in its copy
    pooling: Pooling | None = None
    dense_activation: str | None = None  # dense + this activation before the linear layer (see heads.Head)
    # The dense layer is a base-model weight (the checkpoint's pooler): frozen with a frozen backbone, and
    # recorded so that a saved head loads frozen again (ptuning.core.pooler).
    frozen_dense: bool = False

    def __post_init__(self) -> None:
        self.kind = _head_field(HeadKind, self.kind, "kind")
        self.pooling = _head_field(Pooling, self.pooling, "pooling") if self.pooling else None
        if not isinstance(self.frozen_dense, bool):
            raise ConfigError(f"frozen_dense must be true or false, got {self.frozen_dense!r}")
        if self.frozen_dense and self.dense_activation is None:
            raise ConfigError("frozen_dense needs a dense layer (dense_activation)")
        if self.label_names is not None:  # "pos" would be three labels, one per character
            if isinstance(self.label_names, str) or not all(isinstance(n, str) for n in self.label_names):
                raise ConfigError(f"label_names must be a list of names, got {self.label_names!r}")
            if len(set(self.label_names)) != len(self.label_names):
                raise ConfigError(f"label_names must be distinct, got {self.label_names!r}")

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 0

    def to_dict(self) -> dict:
        data = {
            "kind": str(self.kind),
            "label_names": self.label_names,
            "pooling": self.pooling and str(self.pooling),
        }
        if self.dense_activation is not None:
            data["dense_activation"] = self.dense_activation
        if self.frozen_dense:  # written only when set: checkpoints without it load as before (trainable)
            data["frozen_dense"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict) -> HeadSpec:
        return cls(
            data["kind"],
            data.get("label_names"),
            data.get("pooling"),
            data.get("dense_activation"),
            data.get("frozen_dense", False),
        )


def _head_field(enum_type: type[StrEnum], value: object, name: str) -> StrEnum:
    """``value`` as ``enum_type``, or a ConfigError naming the field and what it accepts."""
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum_type)
        hint = (
            "; the checkpoint's own pooler is a first-token head with a dense layer: build it with "
            "ptuning.core.pooler.head_spec(kind, labels, 'pooler'), then attach_pretrained_pooler"
            if name == "pooling" and value == "pooler"
            else ""
        )
        raise ConfigError(f"HeadSpec {name} must be one of {allowed}; got {value!r}{hint}") from None


@dataclass
class PromptModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None


@dataclass
class TrainableReport:
    trainable: int
    total: int
    by_part: dict[str, int] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} / {self.total:,} ({self.percent:.3f} %)"


def prompt_then_tokens(full_mask: torch.Tensor, prompt_length: int) -> torch.Tensor | None:
    """How to reorder ``[prompt slots][tokens]`` so that each row's real prompt slots sit right before its real
    tokens: padding between them (a left-padded row, or a shorter prompt in a mixed batch) moves in front.
    Positions come from the mask either way, but sliding windows and index-based relative positions
    (DeBERTa, MPNet) count the slots in between, so a padded row would not equal the row alone. Returns the
    gather index (B, P + T), or None when every row is already contiguous. Positions from the first real token
    on keep their places, so the last T columns still hold the real tokens where the input had them."""
    batch, total = full_mask.shape
    leading_pads = (full_mask[:, prompt_length:].cumsum(-1) == 0).sum(-1)  # token padding before the text
    index = torch.arange(total, device=full_mask.device).expand(batch, total)
    before_text = index < (prompt_length + leading_pads)[:, None]
    if bool(full_mask[before_text].all()):
        return None
    # before the first real token: padding first, then the real slots, each in their order; the rest stays
    key = torch.where(before_text, full_mask.long() * total + index, 2 * total + index)
    return key.argsort(dim=-1)


def _check_targets(
    task: str,
    kind: HeadKind,
    labels: torch.Tensor | None,
    start_positions: torch.Tensor | None,
    end_positions: torch.Tensor | None,
) -> None:
    """Refuse targets the task's head does not read: ignored, they would leave the loss None without a word."""
    if kind is HeadKind.QUESTION_ANSWERING:
        if labels is not None:
            raise ConfigError(
                f"task {task!r} (question answering) takes start_positions and end_positions, not labels"
            )
        if (start_positions is None) != (end_positions is None):
            raise ConfigError(
                f"task {task!r} (question answering) takes start_positions and end_positions together; "
                "got only one of them"
            )
    elif start_positions is not None or end_positions is not None:
        raise ConfigError(
            f"task {task!r} ({kind}) takes labels, not start_positions/end_positions (question answering only)"
        )


def _new_tokens(output: torch.Tensor | ModelOutput, start: int) -> torch.Tensor | ModelOutput:
    """Generated ids from column ``start`` on, as a tensor or (``return_dict_in_generate``) the output with its
    ``sequences`` cut; its scores, logits and beam indices hold one entry per generated step already."""
    if isinstance(output, ModelOutput):
        output.sequences = output.sequences[:, start:]
        return output
    return output[:, start:]


def reorder(values: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """``values`` (B, L, ...) gathered along dim 1 by ``order`` (``prompt_then_tokens``)."""
    if order is None:
        return values
    index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand(*order.shape, *values.shape[2:])
    return values.gather(1, index)


def check_shift_numbering(geometry: PrefixGeometry) -> None:
    """position_mode 'shift' numbers real tokens after the prefix through ``position_ids``; a backbone whose
    forward takes none (BART, mBART, T5) numbers its own, so 'shift' would change nothing while being recorded
    (and exported) as PEFT's numbering and counted against the position table."""
    if not geometry.takes_position_ids:
        raise ConfigError(
            f"position_mode 'shift' numbers real tokens after the prefix, but {geometry.model_type} numbers its "
            "positions itself (its forward takes no position_ids), so it would change nothing; use "
            "position_mode 'keep' (--position-mode keep)"
        )


class PromptModel(nn.Module):
    """Frozen backbone + prefixes + heads, for every method in ``Method``.

    ``backbone`` is a base model (``AutoModel``) for encoder tasks, or a ``*ForCausalLM`` for causal LM,
    whose own LM head then serves as the (frozen) head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        method: Method | str,
        prefix_config: PrefixConfig | None = None,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.method = Method(method)
        # A checkpoint's loader requires [0, 1): refused here, a model saved with it could not be loaded.
        if (
            isinstance(head_dropout, bool)
            or not isinstance(head_dropout, int | float)
            or not 0 <= head_dropout < 1
        ):
            raise ConfigError(f"head_dropout must be a number in [0, 1), got {head_dropout!r}")
        # A copy: the caller's config object (reused across a sweep) must not change this model's prefix.
        self.prefix_config = (prefix_config or PrefixConfig()).copy()
        unread = self.prefix_config.unread_fields(self.method)
        if unread:
            raise ConfigError(
                f"prefix config {', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not used by method "
                f"{self.method} (deep prefixes only: ptuning-v2, prefix-mlp); leave "
                f"{'it' if len(unread) == 1 else 'them'} at the default"
            )
        if (
            self.method is Method.PREFIX_MLP
            and self.prefix_config.reparameterization is not Reparameterization.MLP
        ):
            self.prefix_config = PrefixConfig.from_dict(
                {**self.prefix_config.to_dict(), "reparameterization": "mlp"}
            )
        self.geometry = PrefixGeometry.from_model(backbone)
        if self.method.is_deep and self.prefix_config.position_mode is PositionMode.SHIFT:
            check_shift_numbering(self.geometry)
        # Taken before any training: a fine-tuned backbone is still "the same base" for its checkpoint.
        self.base_fingerprint = base_fingerprint(backbone)
        # The dtype the fingerprint was taken on, which a checkpoint records where a later model.half() or
        # .float() crossed fp16 (an fp16 copy is another base): a loader loading the base in it finds it again.
        self.base_dtype = dtype_name(floating_dtype(backbone))
        self.backbone = backbone
        # FastDropout, the prefix-aware attention, frozen weights: recorded, undone by detach_backbone().
        self._attachment = attach(backbone, freezes=self.method.freezes_backbone)
        if self.method.is_deep:
            try:
                self._attachment.install_injector(self.geometry)
            except Exception:
                release(self._attachment)  # a model that could not be built leaves the backbone as found
                raise
        self.head_dropout = head_dropout
        self.prefixes = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.head_specs: dict[str, HeadSpec] = {}
        self.task_prefix: dict[str, str] = {}  # task -> name of the prefix it uses
        # The model takes the backbone's mode (eval from from_pretrained): a module starts in training mode, so
        # the new parts would otherwise run dropout around an eval backbone, and two identical calls differ.
        # Set on the new parts only: the backbone's modules keep the modes they were given.
        for part in (self, self.prefixes, self.heads):
            part.training = backbone.training

    @property
    def injector(self) -> Injector | None:
        """How this model's per-layer prefix reaches attention (None for methods without one)."""
        return self._attachment.injector if self.method.is_deep and self._attachment else None

    def detach_backbone(self) -> nn.Module:
        """Give the backbone back as it was found and retire this model; returns the backbone.

        Undoes what building the model did to it (FastDropout swapped in, the prefix-aware attention, frozen
        weights) and gradient checkpointing turned on through this model. A backbone shared by several
        ``PromptModel``s is restored when the last of them detaches; until then it stays as they need it.
        """
        self._ensure_attached()
        backbone = release(self._attachment)
        self._attachment = None
        return backbone

    def _ensure_attached(self) -> None:
        if self._attachment is None:
            raise RuntimeError(
                "this PromptModel's backbone was detached (detach_backbone()); build a new one"
            )

    # ----------------------------------------------------------------- building
    def add_task(
        self, task: str, spec: HeadSpec, prefix_name: str | None = None, *, check_head: bool = True
    ) -> None:
        """Add a head for ``task`` and the prefix it uses (its own unless ``prefix_name`` names a shared one).
        ``check_head=False`` skips refusing a head this backbone cannot feed: a checkpoint loaded only for its
        prefix (``load_checkpoint(prefix_only=True)``), whose head never runs here."""
        for name in (task, prefix_name or task):
            if not _NAME.match(name):
                raise ConfigError(f"task/prefix name {name!r} must be letters, digits, '_' or '-'")
        if task in self.head_specs:
            raise ConfigError(f"task {task!r} already exists in this model")
        prefix_name = prefix_name or task
        if check_head:  # before anything is added: a refused task leaves no prefix behind
            self._check_head_fits(task, spec)
        if spec.kind in FIRST_TOKEN_KINDS and spec.pooling is None:
            # Recorded, so that a saved head pools as it was trained on whatever backbone it is loaded onto
            # (a null pooling, from older checkpoints, is resolved here from the landing backbone).
            spec = replace(spec, pooling=self.default_pooling)  # a copy: the caller's spec stays as it was
        # The prefix is drawn before the head, as always (the random stream, so every seed's initial weights,
        # stays what it was); a head that refuses takes the new prefix away again: no orphan is left behind.
        new_prefix = self.method.uses_prefix and prefix_name not in self.prefixes
        if new_prefix:
            self.prefixes[prefix_name] = self._new_prefix().train(self.training)  # the model's mode
        try:
            head = self._new_head(spec)
        except Exception:
            if new_prefix:
                del self.prefixes[prefix_name]
            raise
        if head is not None:
            self.heads[task] = head.to(self._device()).train(self.training)
        self.head_specs[task] = spec
        self.task_prefix[task] = prefix_name

    def _new_head(self, spec: HeadSpec) -> Head | None:
        """The head ``spec`` asks for (None for causal/seq2seq LM tasks, which read the model's own LM head)."""
        if spec.kind in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM):
            return None
        head = Head(
            spec.kind,
            self.geometry.hidden_size,
            spec.num_labels,
            self.head_dropout,
            spec.pooling or self.default_pooling,
            spec.dense_activation,
        )
        if spec.frozen_dense and self.method.freezes_backbone:
            head.dense.requires_grad_(False)
        return head

    @property
    def default_pooling(self) -> Pooling:
        """The pooled vector a head reads unless its spec says: the last real token of a decoder (the only one
        that has seen the whole input; XLNet's <cls> too), the mean of an encoder-decoder's encoder (T5 and
        BART have no [CLS]), else an encoder's first token ([CLS])."""
        if self.geometry.is_decoder:
            return Pooling.LAST
        return Pooling.MEAN if self.geometry.is_encoder_decoder else Pooling.FIRST

    def _check_head_fits(self, task: str, spec: HeadSpec) -> None:
        """Refuse a head this backbone cannot feed (it would fail deep inside forward otherwise)."""
        has_lm_head = self.backbone.get_output_embeddings() is not None  # None on a base model (AutoModel)
        seq2seq = self.geometry.is_encoder_decoder
        if spec.kind is HeadKind.CAUSAL_LM and (not has_lm_head or seq2seq):
            raise ConfigError(
                f"a causal-lm task needs a decoder with its LM head (*ForCausalLM); this backbone is a "
                f"{type(self.backbone).__name__}"
            )
        if spec.kind is HeadKind.SEQ2SEQ_LM:
            if not (seq2seq and has_lm_head):
                raise ConfigError(
                    "a seq2seq-lm task needs an encoder-decoder with an LM head (*ForConditionalGeneration)"
                )
            if self.method is Method.PROMPT_TUNING:
                raise ConfigError(
                    "seq2seq-lm takes deep prefixes (ptuning-v2, prefix-mlp), not prompt-tuning"
                )
        elif spec.kind is not HeadKind.CAUSAL_LM:
            if (
                has_lm_head and not seq2seq
            ):  # an encoder-decoder's heads read its encoder; a decoder's, hidden states
                raise ConfigError(
                    f"a {spec.kind} head reads hidden states: load the base model (load_backbone(..., "
                    f"causal_lm=False), AutoModel), not the {type(self.backbone).__name__} with an LM head"
                )
            if spec.kind in (HeadKind.CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION) and spec.num_labels < 2:
                raise ConfigError(f"task {task!r} ({spec.kind}) needs at least 2 label names")

    def _new_prefix(self) -> nn.Module:
        if self.method is Method.PROMPT_TUNING:
            vocabulary = self.backbone.get_input_embeddings().weight.detach()
            start = min(1000, max(vocabulary.shape[0] - self.prefix_config.prefix_length, 0))
            return PromptEmbedding(self.prefix_config, self.geometry, vocabulary[start:]).to(self._device())
        if self.prefix_config.position_mode is PositionMode.SHIFT:  # also a prefix_config set after building
            check_shift_numbering(self.geometry)
        return PrefixEncoder(self.prefix_config, self.geometry).to(self._device())

    def _device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def tasks(self) -> list[str]:
        return list(self.head_specs)

    @property
    def prefix_positions(self) -> int:
        """Positions the prefix takes before the real tokens in the position table: prompt tuning's input
        slots, or a deep prefix under position_mode 'shift' (PEFT's numbering); 0 where tokens keep 0..T-1."""
        return self.prefix_config.positions_taken(self.method)

    def task_prefix_positions(self, task: str) -> int:
        """``prefix_positions`` of one task's own prefix: tasks of one model may have prefixes of other lengths."""
        name = self.task_prefix.get(task)
        if name not in self.prefixes:
            return 0  # a method without prefixes (finetune, linear-probe), or an unknown task
        return self.prefixes[name].config.positions_taken(self.method)

    def trainable_parameters(self) -> TrainableReport:
        total = sum(p.numel() for p in self.parameters())
        parts = {
            "backbone": sum(p.numel() for p in self.backbone.parameters() if p.requires_grad),
            "prefix": sum(p.numel() for p in self.prefixes.parameters() if p.requires_grad),
            "heads": sum(p.numel() for p in self.heads.parameters() if p.requires_grad),
        }
        return TrainableReport(sum(parts.values()), total, parts)

    def enable_gradient_checkpointing(self, checkpoint_kwargs: dict | None = None) -> None:
        """Recompute activations in backward; prefixes survive it because they travel as kwargs/slots.

        ``checkpoint_kwargs`` go to ``torch.utils.checkpoint``; it is non-reentrant here, the mode the prefix's
        gradients are tested with (transformers' default differs between releases)."""
        self._ensure_attached()
        options = {"use_reentrant": False, **(checkpoint_kwargs or {})}
        if options["use_reentrant"]:
            raise ConfigError(
                "gradient checkpointing kwargs use_reentrant=True: PromptModel checkpoints with "
                "use_reentrant=False only; leave it out"
            )
        if hasattr(self.backbone, "activation_checkpointing_enable"):  # the name in recent 5.x releases
            self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    def activation_checkpointing_enable(
        self,
        activation_checkpointing_kwargs: dict | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """What HF Trainer calls for ``activation_checkpointing=True`` (``gradient_checkpointing=True``):
        ``enable_gradient_checkpointing``, which checkpoints every layer and keeps activations on the device."""
        if every_n_layers != 1 or offload:
            raise ConfigError(
                f"activation checkpointing every_n_layers={every_n_layers}, offload={offload}: PromptModel "
                "checkpoints every layer on the device; expected every_n_layers=1, offload=False"
            )
        self.enable_gradient_checkpointing(activation_checkpointing_kwargs)

    def gradient_checkpointing_enable(
        self,
        gradient_checkpointing_kwargs: dict | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """The older name, which HF Trainer calls in transformers releases before ``activation_checkpointing_enable``."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, every_n_layers, offload)

    @torch.no_grad()
    def collapse_prefixes(self) -> None:
        """Replace MLP-reparameterised prefixes by the tables they produce (same outputs, no MLP)."""
        for name, prefix in list(self.prefixes.items()):
            if isinstance(prefix, PrefixEncoder) and prefix.mlp is not None:
                self.prefixes[name] = prefix.collapse()

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        task: str | None = None,
        row_prefixes: Sequence[str] | None = None,
        packed: PackedRows | None = None,
    ) -> PromptModelOutput:
        """Run one task's head; ``row_prefixes`` (one prefix name per row) mixes prefixes in the batch.

        ``packed`` replaces ``input_ids``/``attention_mask``/``token_type_ids`` with inputs packed several to
        a row (``core.packing``); outputs and ``labels`` are then one per segment, in packing order.
        """
        task = self._resolve_task(task)
        spec = self.head_specs[task]
        _check_targets(task, spec.kind, labels, start_positions, end_positions)
        if packed is not None:
            return self._forward_packed(packed, task, labels)
        if isinstance(row_prefixes, str):  # "aaaa" would pass as four rows named "a"
            raise ConfigError(
                f"row_prefixes must be a list with one prefix name per row, not the string {row_prefixes!r}"
            )
        if row_prefixes is not None and len(row_prefixes) != input_ids.shape[0]:
            # an empty list meant "the task's own prefix", a short one failed deep inside attention
            raise ConfigError(
                f"row_prefixes names {len(row_prefixes)} prefixes for {input_ids.shape[0]} rows"
            )
        num_choices = None
        if spec.kind is HeadKind.MULTIPLE_CHOICE:
            if input_ids.dim() != 3:
                raise ConfigError(
                    f"task {task!r} (multiple-choice) takes input_ids of shape (B, choices, T); got "
                    f"{tuple(input_ids.shape)}"
                )
            # (B, C, T) -> (B*C, T); every choice of a row uses that row's prefix.
            num_choices = input_ids.shape[1]
            input_ids, attention_mask, token_type_ids = (
                t.flatten(0, 1) if t is not None else None
                for t in (input_ids, attention_mask, token_type_ids)
            )
            if row_prefixes is not None:
                row_prefixes = [name for name in row_prefixes for _ in range(num_choices)]
        names = row_prefixes if row_prefixes is not None else [self.task_prefix[task]] * input_ids.shape[0]
        if spec.kind is HeadKind.CAUSAL_LM:
            return self._causal_lm(input_ids, attention_mask, labels, names)
        if spec.kind is HeadKind.SEQ2SEQ_LM:
            return self._seq2seq_lm(input_ids, attention_mask, labels, names)
        # the shortcut computes position 0's last feed-forward alone: with left padding [CLS] is elsewhere
        left_padded = attention_mask is not None and not bool(attention_mask[:, 0].all())
        first_only = self.reads_first_token(task) and not left_padded
        hidden = self.encode(input_ids, attention_mask, token_type_ids, names, first_token_only=first_only)
        out = self.heads[task](hidden, attention_mask, labels, num_choices, start_positions, end_positions)
        return PromptModelOutput(**out)

    def reads_first_token(self, task: str) -> bool:
        """Whether ``task``'s head reads only the first position and this backbone can then run its last
        layer's feed-forward for that position alone (``core.readout``; deep prefix methods)."""
        if task not in self.heads or not self.method.is_deep or self._attachment is None:
            return False
        head = self.heads[task]
        return (
            self._attachment.reads_first_token
            and head.kind in FIRST_TOKEN_KINDS
            and head.pooling is Pooling.FIRST
        )

    def check_packable(self, task: str) -> None:
        """Raise ``ConfigError`` naming why ``task`` cannot run packed on this model (``core.packing``)."""
        attn = self.backbone.config._attn_implementation
        check_packable(self.method, self.geometry, self.head_specs[self._resolve_task(task)].kind, attn)

    def _forward_packed(
        self, packed: PackedRows, task: str, labels: torch.Tensor | None
    ) -> PromptModelOutput:
        """Packed rows through the backbone, then each segment unpacked to its own row for the head."""
        self.check_packable(task)
        shift = self.task_prefix_positions(task)  # packing takes deep prefixes only: P under shift, else 0
        mask_dtype = mask_dtype_for(self.backbone.config._attn_implementation, self.backbone.dtype)
        hidden = self.encode(
            packed.input_ids,
            packed.attention_mask(mask_dtype),
            packed.token_type_ids,
            [self.task_prefix[task]] * packed.input_ids.shape[0],
            position_ids=packed.position_ids(self.geometry, shift),
        )
        segments, mask = packed.unpack(hidden)  # (N, T, H), (N, T)
        return PromptModelOutput(**self.heads[task](segments, mask, labels))

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        prefix_names: Sequence[str],
        position_ids: torch.Tensor | None = None,
        first_token_only: bool = False,
    ) -> torch.Tensor:
        """Hidden states (B, T, H) of the real tokens, each row run with its own prefix.

        ``position_ids`` (with a 4-D ``attention_mask``) is for packed rows; by default positions come from
        the 2-D mask. ``first_token_only`` returns (B, 1, H), position 0 alone, computed with less work
        where ``reads_first_token`` allows it (``core.readout``)."""
        kwargs = self._backbone_inputs(
            input_ids, attention_mask, token_type_ids, prefix_names, position_ids, first_token_only
        )
        # Encoder-decoders (T5, BART): encoder heads read the encoder alone.
        runner = self.backbone.get_encoder() if self.geometry.is_encoder_decoder else self.backbone
        hidden = runner(**kwargs).last_hidden_state
        if self.method is Method.PROMPT_TUNING:
            hidden = hidden[:, -input_ids.shape[1] :]  # drop the prompt positions
        return hidden[:, :1] if first_token_only else hidden

    def _causal_lm(self, input_ids, attention_mask, labels, names) -> PromptModelOutput:
        kwargs = self._backbone_inputs(input_ids, attention_mask, None, names)
        if labels is not None and self.method is Method.PROMPT_TUNING:
            prompt_labels = labels.new_full(
                (labels.shape[0], kwargs["inputs_embeds"].shape[1] - labels.shape[1]), -100
            )
            labels = torch.cat([prompt_labels, labels], dim=1)
        out = self.backbone(**kwargs, labels=labels)
        logits = out.logits.float()  # fp32 like every head's (transformers' loss is already fp32)
        if self.method is Method.PROMPT_TUNING:
            logits = logits[:, -input_ids.shape[1] :]
        return PromptModelOutput(loss=out.loss, logits=logits)

    def _seq2seq_lm(self, input_ids, attention_mask, labels, names) -> PromptModelOutput:
        """Encoder inputs -> decoder logits over ``labels`` (teacher forcing: the model shifts them right)."""
        kwargs = self._backbone_inputs(input_ids, attention_mask, None, names)
        out = self.backbone(**kwargs, labels=labels)
        return PromptModelOutput(loss=out.loss, logits=out.logits)

    def prefix_kv(self, prefix_names: Sequence[str]) -> PrefixKV:
        """Per-layer key/values for the given rows (one row per name); a deep prefix method only."""
        if not self.method.is_deep:
            raise ConfigError(f"method {self.method} has no per-layer prefix")
        table, slot_mask = self._row_tables(prefix_names)
        prefix = split_table(table, self._layers_of(prefix_names), self.geometry)
        prefix.mask = slot_mask
        return prefix

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task: str | None = None,
        **generate_kwargs,
    ) -> torch.Tensor | ModelOutput:
        """``transformers`` generation with this task's prefix; returns only the new tokens (B, new), or with
        ``return_dict_in_generate=True`` transformers' output whose ``sequences`` are those new tokens.

        The prefix's key/values are computed once per call and reused by every decoding step; the
        generation cache holds real tokens only, so dynamic and static caches both work.
        """
        self._ensure_attached()
        task = self._resolve_task(task)
        kind = self.head_specs[task].kind
        if kind not in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM):
            raise ConfigError(f"task {task!r} is not a causal-lm or seq2seq-lm task")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        name = self.task_prefix[task]
        if kind is HeadKind.SEQ2SEQ_LM:
            return self._generate_seq2seq(input_ids, attention_mask, name, generate_kwargs)
        self._check_decoding_room(input_ids, attention_mask, task, generate_kwargs)
        if self.method.is_deep and self.prefix_config.position_mode == "shift":
            # PEFT's numbering (real tokens at P..): generate() would number them from 0, but it extends
            # given position ids by one per new token. Rotary models need it too: q.Pk depends on q's position.
            shift = self.prefixes[name].prefix_length
            generate_kwargs.setdefault("position_ids", self._position_ids(attention_mask, shift=shift))
        if self.method is Method.PROMPT_TUNING:
            prompts = self.prefixes[name](input_ids.shape[0])
            embeds = self.backbone.get_input_embeddings()(input_ids)
            prompt_mask = attention_mask.new_ones(input_ids.shape[0], prompts.shape[1])
            full_mask = torch.cat([prompt_mask, attention_mask], dim=1)
            order = prompt_then_tokens(full_mask, prompts.shape[1])
            return self.backbone.generate(
                inputs_embeds=reorder(torch.cat([prompts.to(embeds.dtype), embeds], dim=1), order),
                attention_mask=reorder(full_mask, order),
                **generate_kwargs,
            )
        prefix = self.prefix_kv([name]) if self.method.is_deep else None
        with active_prefix(prefix):
            output = self.backbone.generate(
                input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs
            )
        return _new_tokens(output, input_ids.shape[1])

    def _check_decoding_room(self, input_ids, attention_mask, task: str, generate_kwargs: dict) -> None:
        """Prompt + new tokens (+ the prefix's positions where it takes some) must fit a position table: past
        its end an embedding lookup fails mid-decoding (IndexError; a device assert on CUDA). The CLI and the
        server cut prompts to leave the room (``generation.texts``); a direct call is checked here."""
        limit = self.geometry.usable_positions
        if limit is None:
            return
        # transformers' order: keywords over a given generation_config over the model's; max_new_tokens over
        # max_length (which counts the prompt's columns)
        config = generate_kwargs.get("generation_config") or self.backbone.generation_config
        new_tokens = generate_kwargs.get("max_new_tokens", config.max_new_tokens)
        max_length = generate_kwargs.get("max_length", config.max_length)
        if new_tokens is None and max_length is not None:
            new_tokens = max_length - input_ids.shape[1]
        if new_tokens is None:
            return
        longest = int(attention_mask.sum(dim=-1).max()) if attention_mask.numel() else 0
        slots = self.task_prefix_positions(task)
        if longest > prompt_room(limit, slots, new_tokens):
            taken = f" + {slots} prefix positions" if slots else ""
            raise ConfigError(
                f"the longest prompt ({longest} tokens{taken}) + max_new_tokens ({new_tokens}) - 1 exceed "
                f"{self.geometry.model_type}'s {limit} positions; shorten the prompt or lower max_new_tokens"
            )

    def _generate_seq2seq(
        self, input_ids, attention_mask, name: str, generate_kwargs: dict
    ) -> torch.Tensor | ModelOutput:
        """Encoder-decoder generation; the prefix reaches encoder, decoder and cross-attention through
        ``active_prefix``. Returns the new tokens without the decoder's start token (B, new)."""
        prefix = self.prefix_kv([name]) if self.method.is_deep else None
        with active_prefix(prefix):
            output = self.backbone.generate(
                input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs
            )
        return _new_tokens(output, 1)

    def _resolve_task(self, task: str | None) -> str:
        if task is None:
            if len(self.head_specs) != 1:
                raise ValueError(f"this model has tasks {self.tasks}; say which one with task=")
            return next(iter(self.head_specs))
        if task not in self.head_specs:
            raise UnknownNameError(f"unknown task {task!r}; this model has {self.tasks}")
        return task

    # ----------------------------------------------------------------- prefix plumbing
    def _backbone_inputs(
        self,
        input_ids,
        attention_mask,
        token_type_ids,
        prefix_names,
        position_ids=None,
        first_token_only=False,
    ) -> dict:
        self._ensure_attached()
        if torch.is_grad_enabled() and has_no_backward(self.backbone):
            raise ConfigError(
                "an int8-dynamic backbone has no backward (torch dynamic quantization): use it under "
                "torch.no_grad() for eval, predict and serve; int8 weight-only passes gradients"
            )
        if not self.method.is_deep and self._attachment.injector is not None:
            # Another model on this backbone installed an injector: say "no prefix" for this pass.
            self._attachment.injector.forward_kwargs(None)
        batch, length = input_ids.shape
        if len(prefix_names) != batch:
            raise ValueError(f"got {len(prefix_names)} prefix names for a batch of {batch} rows")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._check_padding_side(attention_mask)
        kwargs: dict = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if not self.method.uses_prefix:
            kwargs["input_ids"] = input_ids
            kwargs["position_ids"] = (
                position_ids if position_ids is not None else self._position_ids(attention_mask, shift=0)
            )
            return self._fitted_to_backbone(kwargs)
        table, slot_mask = self._row_tables(prefix_names)  # (B, P, width), (B, P) | None
        prefix_length = table.shape[1]
        if self.method is Method.PROMPT_TUNING:
            # Shallow prompts are input tokens: they come first and push real tokens' positions by P.
            embeds = self.backbone.get_input_embeddings()(input_ids)
            prompt_mask = (
                slot_mask.long() if slot_mask is not None else attention_mask.new_ones(batch, prefix_length)
            )
            full_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], dim=1)
            order = prompt_then_tokens(full_mask, prefix_length)
            kwargs["inputs_embeds"] = reorder(torch.cat([table.to(embeds.dtype), embeds], dim=1), order)
            kwargs["attention_mask"] = full_mask = reorder(full_mask, order)
            kwargs["position_ids"] = self._position_ids(full_mask, shift=0, total=prefix_length + length)
            if token_type_ids is not None:
                kwargs["token_type_ids"] = reorder(
                    torch.cat([token_type_ids.new_zeros(batch, prefix_length), token_type_ids], 1), order
                )
            return self._fitted_to_backbone(kwargs)
        prefix = split_table(table, self._layers_of(prefix_names), self.geometry)
        prefix.mask = slot_mask
        prefix.first_token_only = first_token_only
        shift = prefix.row_slots if self.prefix_config.position_mode == "shift" else 0  # each row by its own
        kwargs["input_ids"] = input_ids
        kwargs["position_ids"] = (
            position_ids if position_ids is not None else self._position_ids(attention_mask, shift=shift)
        )
        kwargs.update(self.injector.forward_kwargs(prefix))
        return self._fitted_to_backbone(kwargs)

    def _fitted_to_backbone(self, kwargs: dict) -> dict:
        """``kwargs`` as this backbone's forward takes them: no ``position_ids`` for the few families that number
        positions themselves, and no generation cache wherever the forward offers one (a head's forward is one
        pass, and a decoder left to its default keeps every layer's keys and values alive until the pass ends;
        ``generate`` has its own path)."""
        if not self.geometry.takes_position_ids:
            kwargs.pop("position_ids", None)
        if self.geometry.takes_use_cache:
            kwargs["use_cache"] = False
        return kwargs

    def _check_padding_side(self, attention_mask: torch.Tensor) -> None:
        """Refuse left padding where this model cannot give positions: a backbone with a learned position table
        whose forward takes no ``position_ids`` (BART, mBART) numbers columns from 0, so padding in front would
        move every real token's position and a row's output would differ from the row alone."""
        if self.geometry.takes_position_ids or not self.geometry.position_table or attention_mask.dim() != 2:
            return
        if not bool(attention_mask[:, 0].all()):
            raise ConfigError(
                f"attention_mask: a row starts with padding, but {self.geometry.model_type} numbers positions "
                "from the first column itself (its forward takes no position_ids); right-pad the batch"
            )

    def _layers_of(self, prefix_names: Sequence[str]) -> tuple[int, ...]:
        """The layers the batch's prefixes sit on (``_row_tables`` checked that they agree), not the first
        prefix the model happens to hold: prefixes over other layer subsets may share a model."""
        return self.prefixes[prefix_names[0]].layer_indices

    def _row_tables(self, prefix_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each row's prefix rows (after dropout), padded to the longest prefix in the batch.

        Dropout draws one mask per prefix per batch, shared by the rows that use it: a mask per row (the
        reference) costs a random number per row x P x layers x 2 x hidden and took 20 of 278 ms of a
        MiniLM training step (docs/BENCHMARKS.md, profile); sharing it costs 1/B of that.
        """
        if isinstance(prefix_names, str):
            raise TypeError("prefix_names must be a sequence with one prefix name per row, not a string")
        distinct = list(dict.fromkeys(prefix_names))
        unknown = [n for n in distinct if n not in self.prefixes]
        if unknown:
            raise UnknownNameError(f"unknown prefix {unknown}; this model has {list(self.prefixes)}")
        encoders = [self.prefixes[n] for n in distinct]
        if self.method.is_deep and len({e.layer_indices for e in encoders}) > 1:
            raise ConfigError("prefixes in one batch must cover the same layers")
        if len(distinct) == 1:
            encoder = encoders[0]
            rows = encoder.table() if isinstance(encoder, PrefixEncoder) else encoder.embedding.weight
            return encoder.dropout(rows).expand(len(prefix_names), -1, -1), None
        longest = max(e.prefix_length for e in encoders)
        tables, masks = [], []
        for encoder in encoders:
            rows = encoder.table() if isinstance(encoder, PrefixEncoder) else encoder.embedding.weight
            missing = longest - rows.shape[0]
            tables.append(nn.functional.pad(rows, (0, 0, 0, missing)))
            masks.append(torch.arange(longest, device=rows.device) < rows.shape[0])
        index = torch.tensor([distinct.index(n) for n in prefix_names], device=tables[0].device)
        table = encoders[0].dropout(torch.stack(tables))[index]  # (B, P_max, width)
        slot_mask = torch.stack(masks)[index]
        return table, (None if bool(slot_mask.all()) else slot_mask)

    def _position_ids(
        self, attention_mask: torch.Tensor, shift: int | torch.Tensor, total: int | None = None
    ) -> torch.Tensor:
        """Real tokens get 0..n-1 (+shift) whatever the padding side, so padding never moves a token."""
        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0) + shift
        highest = int(positions.max()) + 1 if positions.numel() else 0
        limit = self.geometry.usable_positions
        if limit is not None and highest > limit:
            # a deep prefix under position_mode 'shift' (a tensor: one shift per row)
            shifted = isinstance(shift, torch.Tensor) or bool(shift)
            prompted = bool(total)  # prompt tuning's slots are inputs: position_mode does not apply
            advice = "shorten the input (max_length)"
            if shifted or prompted:
                advice += " or the prefix (prefix_length)"
            if shifted:
                advice += ", or use position_mode='keep'"
            raise ConfigError(
                f"{'prefix + input' if shifted or prompted else 'input'} needs {highest} positions but "
                f"{self.geometry.model_type} has {limit}; {advice}"
            )
        padding_idx = self.geometry.position_padding_idx
        if padding_idx is not None:  # RoBERTa-style tables number real tokens from padding_idx + 1
            positions = (positions + padding_idx + 1) * mask + padding_idx * (1 - mask)
        return positions
