"""What PEFT's prefix tuning does where README and docs/INTEROP.md say ptuning differs, checked on the PEFT
installed beside this interpreter (a side environment, as for scripts/make_peft_fixture.py):

    PYTHONPATH=PEFT_DIR .venv/bin/python scripts/check_peft_limits.py

Tiny random models (no download). One line per check: what PEFT did. Exit status 0 whatever PEFT does: this
records behaviour, it does not judge it.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from safetensors.torch import load_file

IDS = torch.tensor([[5, 9, 14, 3], [8, 31, 2, 40]])
MASK = torch.ones_like(IDS)
SHAPE = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4}
SHAPE |= {"intermediate_size": 32, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def bert(task_type: TaskType = TaskType.SEQ_CLS, **options) -> PeftModel:
    """A PEFT prefix (P 3, drawn at N(0, 3) so that it moves the outputs) on a tiny BERT classifier."""
    base = transformers.BertForSequenceClassification(transformers.BertConfig(**SHAPE, num_labels=2))
    model = get_peft_model(base, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=3, **options))
    _scale_prefix(model, "default")
    return model


def _scale_prefix(model: PeftModel, adapter: str) -> None:
    with torch.no_grad():
        for parameter in model.prompt_encoder[adapter].parameters():
            parameter.normal_(0, 3)


def gradient_checkpointing_bert() -> str:
    model = bert()
    model.train()
    plain = model(input_ids=IDS, attention_mask=MASK).logits
    model.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    out = model(input_ids=IDS, attention_mask=MASK, labels=torch.tensor([0, 1]))
    out.loss.backward()
    grad = model.prompt_encoder["default"].embedding.weight.grad
    return (
        f"runs; logits move by {float((out.logits - plain).abs().max()):.2g} against the same model without "
        f"checkpointing; the prefix's gradient is {'None' if grad is None else f'{float(grad.abs().sum()):.3g}'}"
    )


def gradient_checkpointing_llama() -> str:
    config = transformers.LlamaConfig(**{k: SHAPE[k] for k in ("vocab_size", "hidden_size", "intermediate_size")},
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = get_peft_model(
        transformers.LlamaForCausalLM(config),
        PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3),
    )
    model.train()
    model.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model(input_ids=IDS, attention_mask=MASK, labels=IDS).loss.backward()
    return "runs"


def saved_mlp() -> str:
    model = bert(prefix_projection=True, encoder_hidden_size=8)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        saved = load_file(str(Path(folder) / "adapter_model.safetensors"))
    return f"saves {sorted(saved)}"


def mixed_batch() -> str:
    model = bert()
    model.add_adapter("other", PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=3))
    _scale_prefix(model, "other")
    model.eval()
    with torch.no_grad():
        mixed = model(input_ids=IDS, attention_mask=MASK, adapter_names=["default", "other"]).logits
        model.set_adapter("other")
        other = model(input_ids=IDS, attention_mask=MASK).logits
    served = "'other'" if torch.allclose(mixed[1], other[1]) else "'default' (its adapter name ignored)"
    return f"runs; the row asking for 'other' is answered by {served}"


def disable_adapter() -> str:
    model = bert()
    with model.disable_adapter():
        model(input_ids=IDS, attention_mask=MASK)
    return "runs"


def refused(model_type: str) -> Callable[[], str]:
    def check() -> str:
        config = transformers.AutoConfig.for_model(model_type, **SHAPE, num_labels=2)
        base = transformers.AutoModelForSequenceClassification.from_config(config)
        model = get_peft_model(base, PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=3))
        model(input_ids=IDS, attention_mask=MASK)
        return "runs"

    return check


def trainable_after_loading() -> str:
    with tempfile.TemporaryDirectory() as folder:
        bert().save_pretrained(folder)
        fresh = transformers.BertForSequenceClassification(transformers.BertConfig(**SHAPE, num_labels=2))
        PeftModel.from_pretrained(fresh, folder, is_trainable=True)
    return "loads for training"


CHECKS = {
    "gradient checkpointing, BERT classifier": gradient_checkpointing_bert,
    "gradient checkpointing, Llama causal LM": gradient_checkpointing_llama,
    "save with prefix_projection (the MLP)": saved_mlp,
    "one batch, two adapters (adapter_names)": mixed_batch,
    "disable_adapter() on a classifier": disable_adapter,
    "DeBERTa-v2 classifier": refused("deberta-v2"),
    "MPNet classifier": refused("mpnet"),
    "load a saved prefix for more training": trainable_after_loading,
}


def main() -> None:
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    print(f"PEFT {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
    for name, check in CHECKS.items():
        torch.manual_seed(0)
        try:
            outcome = check()
        except Exception as error:  # noqa: BLE001 - what PEFT raises is the finding
            outcome = f"raises {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        print(f"- {name}: {outcome}")


if __name__ == "__main__":
    main()
