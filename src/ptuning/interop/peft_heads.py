"""Which PEFT task head (a ``modules_to_save`` module) is the same computation as which ptuning head.

PEFT keeps the base model's own task head (``BertForTokenClassification.classifier``,
``LlamaForSequenceClassification.score``, ``*.qa_outputs``) and trains it beside the prefix. A head maps only
where it is one linear layer over the hidden states that ptuning's head reads: then the same weights give
the same logits. Where transformers puts more in front of the linear layer (BERT's pooler, RoBERTa's
two-layer classification head), the weights would compute something else, so the mapping is refused with
that reason rather than done approximately.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptuning.core.heads import Pooling
from ptuning.core.kinds import HeadKind
from ptuning.interop.peft_format import PeftFormatError

DECODER_TYPES = ("llama", "qwen2", "mistral", "gpt2")
# transformers' sequence-classification head for each encoder family, when it is not one linear layer.
ENCODER_SEQ_CLS_REASON = {
    "bert": "BertForSequenceClassification's classifier reads the pooler output (dense + tanh over [CLS])",
    "ernie": "ErnieForSequenceClassification's classifier reads the pooler output (dense + tanh over [CLS])",
    "roberta": "RobertaForSequenceClassification's classifier is two layers (dense -> tanh -> out_proj)",
    "xlm-roberta": "XLMRobertaForSequenceClassification's classifier is two layers (dense -> tanh -> out_proj)",
    "camembert": "CamembertForSequenceClassification's classifier is two layers (dense -> tanh -> out_proj)",
    "electra": "ElectraForSequenceClassification's classifier is two layers (dense -> gelu -> out_proj)",
    "deberta-v2": "DebertaV2ForSequenceClassification's classifier reads its ContextPooler (dense + gelu)",
}
OUR_SEQ_CLS_HEAD = "ptuning's classification head is one linear layer over the [CLS] hidden state"


@dataclass(frozen=True)
class HeadMapping:
    """A PEFT task type + transformers head module that equals one ptuning head kind."""

    task_type: str
    module: str | None  # the modules_to_save name; None: the backbone's own LM head (causal LM)
    kind: HeadKind
    pooling: Pooling | None
    has_bias: bool  # whether transformers' module has a bias (else ptuning's bias must be zero)


def mapping_for_peft(task_type: str | None, model_type: str, num_rows: int) -> HeadMapping:
    """The ptuning head for a PEFT ``task_type`` on a ``model_type`` base; raises with the reason if none."""
    decoder = model_type in DECODER_TYPES
    if task_type == "CAUSAL_LM":
        if not decoder:
            raise PeftFormatError(
                f"task_type CAUSAL_LM on a {model_type} base: ptuning generates with decoders"
            )
        return HeadMapping("CAUSAL_LM", None, HeadKind.CAUSAL_LM, None, False)
    if task_type == "SEQ_CLS":
        if not decoder:
            reason = ENCODER_SEQ_CLS_REASON.get(
                model_type, f"{model_type}'s classifier is not one linear layer"
            )
            raise PeftFormatError(
                f"{reason}; {OUR_SEQ_CLS_HEAD}, so the same weights would give other logits"
            )
        kind = HeadKind.REGRESSION if num_rows == 1 else HeadKind.CLASSIFICATION
        return HeadMapping("SEQ_CLS", "score", kind, Pooling.LAST, False)
    if task_type == "TOKEN_CLS":
        module = "score" if decoder and model_type != "gpt2" else "classifier"
        return HeadMapping("TOKEN_CLS", module, HeadKind.TOKEN_CLASSIFICATION, None, True)
    if task_type == "QUESTION_ANS":
        return HeadMapping("QUESTION_ANS", "qa_outputs", HeadKind.QUESTION_ANSWERING, None, True)
    raise PeftFormatError(
        f"task_type {task_type!r} has no task head; only the prefix can be imported (prefix_only=True, "
        f"or --init-prefix-from)"
    )


def mapping_for_ptuning(kind: HeadKind, pooling: Pooling | None, model_type: str) -> HeadMapping:
    """The PEFT task type + module that holds a ptuning head of ``kind``; raises with the reason if none."""
    decoder = model_type in DECODER_TYPES
    if kind is HeadKind.CAUSAL_LM:
        return mapping_for_peft("CAUSAL_LM", model_type, 0)
    if kind in (HeadKind.CLASSIFICATION, HeadKind.REGRESSION):
        effective = pooling or (Pooling.LAST if decoder else Pooling.FIRST)
        if decoder and effective is not Pooling.LAST:
            raise PeftFormatError(
                f"this {kind} head pools '{effective}'; transformers' {model_type} sequence classifier reads "
                f"the last real token only"
            )
        return mapping_for_peft("SEQ_CLS", model_type, 1 if kind is HeadKind.REGRESSION else 2)
    if kind is HeadKind.TOKEN_CLASSIFICATION:
        return mapping_for_peft("TOKEN_CLS", model_type, 0)
    if kind is HeadKind.QUESTION_ANSWERING:
        return mapping_for_peft("QUESTION_ANS", model_type, 2)
    raise PeftFormatError(
        f"PEFT has no task type for a {kind} head (transformers' *ForMultipleChoice is not one)"
    )
