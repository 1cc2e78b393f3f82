"""Which PEFT task head (a ``modules_to_save`` module) is the same computation as which ptuning head.

PEFT keeps the base model's own task head (``BertForTokenClassification.classifier``,
``LlamaForSequenceClassification.score``, ``*.qa_outputs``) and trains it beside the prefix. A head maps
where ptuning's head computes the same function of the hidden states, so the same weights give the same
logits: one linear layer, or for encoder sequence classifiers dense + activation + linear (ptuning's
``dense_activation`` head). BERT's dense layer is its pooler, a base-model weight that PEFT does not save:
it is read from the base checkpoint. Where nothing in ptuning computes the same (DeBERTa's ContextPooler,
multiple choice), the mapping is refused with that reason rather than done approximately.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import transformers
from transformers.modeling_layers import GenericForTokenClassification
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

from ptuning.core.geometry import is_decoder_family
from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.interop.peft_format import PeftFormatError

BASE_POOLER = "<base pooler>"  # the dense layer is the base model's pooler, not an adapter tensor
# Encoder sequence classifiers: (linear tensor prefix, dense tensor prefix, activation).
ENCODER_SEQ_CLS = {
    "bert": ("classifier", BASE_POOLER, "tanh"),  # classifier(tanh(pooler(h[CLS])))
    "ernie": ("classifier", BASE_POOLER, "tanh"),
    "roberta": ("classifier.out_proj", "classifier.dense", "tanh"),  # RobertaClassificationHead
    "xlm-roberta": ("classifier.out_proj", "classifier.dense", "tanh"),
    "camembert": ("classifier.out_proj", "classifier.dense", "tanh"),
    "electra": ("classifier.out_proj", "classifier.dense", "gelu"),  # ElectraClassificationHead
}
# The PEFT task type that holds each ptuning head (multiple choice has none).
PEFT_TASK_TYPES = {
    HeadKind.CAUSAL_LM: "CAUSAL_LM",
    HeadKind.CLASSIFICATION: "SEQ_CLS",
    HeadKind.REGRESSION: "SEQ_CLS",
    HeadKind.TOKEN_CLASSIFICATION: "TOKEN_CLS",
    HeadKind.QUESTION_ANSWERING: "QUESTION_ANS",
}
# The transformers Auto* mapping whose class PEFT's user loads as the base for each task type.
TASK_CLASS_NAMES = {
    "CAUSAL_LM": MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    "SEQ_CLS": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    "TOKEN_CLS": MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    "QUESTION_ANS": MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    "FEATURE_EXTRACTION": MODEL_MAPPING_NAMES,
}


def task_class(task_type: str, model_type: str) -> type | None:
    """The transformers class loaded for ``task_type`` on a ``model_type`` base (``AutoModelFor...``), if any."""
    names = TASK_CLASS_NAMES[task_type].get(model_type)
    name = names if isinstance(names, str) or names is None else names[0]  # Funnel lists two base classes
    found = getattr(transformers, name, None) if name else None
    return found if isinstance(found, type) else None


def reads_token_types(config: Any) -> bool:
    """Whether the base tells token types apart (BERT: 2), which PEFT 0.21.2's question answering never passes
    on under prefix tuning: every token runs as type 0 there."""
    return (getattr(config, "type_vocab_size", None) or 1) > 1


def token_classifier_module(model_type: str) -> str:
    """The module of transformers' ``*ForTokenClassification`` head that PEFT saves: ``score`` on the classes
    built on ``GenericForTokenClassification`` (Llama, Qwen, Mistral, Gemma...), ``classifier`` on the rest
    (encoders, GPT-2, Falcon, BLOOM)."""
    name = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    head = getattr(transformers, name, None) if name else None
    return (
        "score"
        if isinstance(head, type) and issubclass(head, GenericForTokenClassification)
        else "classifier"
    )


@dataclass(frozen=True)
class HeadMapping:
    """A PEFT task type + transformers head module that equals one ptuning head."""

    task_type: str
    module: str | None  # the modules_to_save name; None: the backbone's own LM head (causal LM)
    kind: HeadKind
    pooling: Pooling | None
    has_bias: bool  # whether transformers' final layer has a bias (else ptuning's bias must be zero)
    linear: str | None = None  # tensor prefix of the final linear layer (default: module)
    dense: str | None = None  # tensor prefix of the dense layer before it, or BASE_POOLER
    activation: str | None = None  # the dense layer's activation

    @property
    def linear_prefix(self) -> str | None:
        return self.linear or self.module


IMPORT_PREFIX_HINT = "import the prefix alone (prefix_only=True, --init-prefix-from) and train a head"
EXPORT_PREFIX_HINT = "export the prefix alone with --prefix-only"


def mapping_for_peft(task_type: str | None, model_type: str, hint: str = IMPORT_PREFIX_HINT) -> HeadMapping:
    """The ptuning head for a PEFT ``task_type`` on a ``model_type`` base; raises with the reason if none.

    Sequence classification maps to ``classification``; ``with_rows`` turns a one-row head into regression.
    ``hint`` says what to do instead: import the prefix alone, or (on export) write it alone.
    """
    decoder = is_decoder_family(model_type)
    if task_type == "CAUSAL_LM":
        if not decoder:
            raise PeftFormatError(
                f"task_type CAUSAL_LM on a {model_type} base: ptuning generates with decoders"
            )
        return HeadMapping("CAUSAL_LM", None, HeadKind.CAUSAL_LM, None, False)
    if task_type == "SEQ_CLS":
        if decoder:
            return HeadMapping("SEQ_CLS", "score", HeadKind.CLASSIFICATION, Pooling.LAST, False)
        if model_type not in ENCODER_SEQ_CLS:
            raise PeftFormatError(
                f"{model_type}'s sequence classifier (e.g. DeBERTa's ContextPooler) has no ptuning equivalent; "
                f"{hint}"
            )
        linear, dense, activation = ENCODER_SEQ_CLS[model_type]
        return HeadMapping(
            "SEQ_CLS", "classifier", HeadKind.CLASSIFICATION, Pooling.FIRST, True, linear, dense, activation
        )
    if task_type == "TOKEN_CLS":
        return HeadMapping(
            "TOKEN_CLS", token_classifier_module(model_type), HeadKind.TOKEN_CLASSIFICATION, None, True
        )
    if task_type == "QUESTION_ANS":
        return HeadMapping("QUESTION_ANS", "qa_outputs", HeadKind.QUESTION_ANSWERING, None, True)
    raise PeftFormatError(
        f"task_type {task_type!r} has no task head; only the prefix can be imported (prefix_only=True, "
        f"or --init-prefix-from)"
    )


def with_rows(mapping: HeadMapping, rows: int) -> HeadMapping:
    """A one-row sequence classifier is transformers' regression (num_labels 1)."""
    if mapping.kind is HeadKind.CLASSIFICATION and rows == 1:
        return dataclasses.replace(mapping, kind=HeadKind.REGRESSION)
    return mapping


def mapping_for_ptuning(
    kind: HeadKind, pooling: Pooling | None, dense_activation: str | None, model_type: str
) -> HeadMapping:
    """The PEFT task type + module that holds a ptuning head; raises with the reason if none."""
    task_type = PEFT_TASK_TYPES.get(kind)
    if task_type is None:
        raise PeftFormatError(
            f"PEFT has no task type for a {kind} head (transformers' *ForMultipleChoice is not one)"
        )
    mapping = dataclasses.replace(mapping_for_peft(task_type, model_type, EXPORT_PREFIX_HINT), kind=kind)
    if task_type == "SEQ_CLS":
        decoder = is_decoder_family(model_type)
        effective = pooling or (Pooling.LAST if decoder else Pooling.FIRST)
        if effective is not mapping.pooling:
            raise PeftFormatError(
                f"this {kind} head pools '{effective}'; transformers' {model_type} sequence classifier reads "
                f"the {'last real' if decoder else 'first'} token"
            )
        if dense_activation != mapping.activation:
            ours = f"dense + {dense_activation} + linear" if dense_activation else "one linear layer"
            theirs = f"dense + {mapping.activation} + linear" if mapping.activation else "one linear layer"
            raise PeftFormatError(
                f"this {kind} head is {ours}; transformers' {model_type} sequence classifier is {theirs}, so "
                f"PEFT would compute other logits ({EXPORT_PREFIX_HINT})"
            )
    return mapping
