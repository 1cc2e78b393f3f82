"""Check that adapters written by ``ptuning export --format peft`` load in real PEFT 0.21.2 and compute
ptuning's outputs. Two steps, two environments (ptuning's venv, then the PEFT side venv of
scripts/make_peft_fixture.py):

    PYTHONPATH=src .venv/bin/python scripts/check_peft_export.py write outputs/peft-exports
    .venv-peft/bin/python scripts/check_peft_export.py check outputs/peft-exports

``write`` builds shift-mode prompts on the tiny bases of tests/interop/fixtures, exports each, and stores
ptuning's logits; ``check`` loads each export with ``PeftModel.from_pretrained`` and compares: equal bit for
bit, except where ``TOLERANCE`` says why not (exit status 1 if any export is off by more).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "interop" / "fixtures"
INPUT_IDS = torch.tensor([[5, 9, 14, 3, 22, 7], [8, 31, 2, 40, 0, 0]])
ATTENTION_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
# export name -> (fixture base, head kind, label names, method, dense_activation)
EXPORTS = {
    "llama-causal-lm": ("llama-gqa-causal-lm", "causal-lm", None, "ptuning-v2", None),
    "llama-seq-cls": ("llama-gqa-seq-cls", "classification", ["no", "yes"], "ptuning-v2", None),
    "bert-token-cls-mlp": (
        "bert-token-cls-projection",
        "token-classification",
        ["O", "B", "I"],
        "prefix-mlp",
        None,
    ),
    "roberta-seq-cls": ("roberta-seq-cls", "classification", ["a", "b", "c"], "ptuning-v2", "tanh"),
    "electra-seq-cls": ("electra-seq-cls", "classification", ["no", "yes"], "ptuning-v2", "gelu"),
}
# Largest max |diff| accepted; 0.0 (bit-identical) for every export not named. ptuning's first-token readout
# (core/readout.py) runs the last layer's feed-forward for position 0 alone, whose matmul rounds in another
# order than transformers' over the whole sequence: a [CLS] classifier's logits may move by a few 1e-8
# (docs/INTEROP.md has the measured values); 1e-6 is far below what a wrong position, mask or prefix moves.
FIRST_TOKEN_READOUT = 1e-6
TOLERANCE = {"roberta-seq-cls": FIRST_TOKEN_READOUT, "electra-seq-cls": FIRST_TOKEN_READOUT}
ROBERTA_INPUT_IDS = torch.tensor([[5, 9, 14, 3, 22, 7], [8, 31, 2, 40, 1, 1]])  # RoBERTa's pad id is 1


def _input_ids(name: str) -> torch.Tensor:
    return ROBERTA_INPUT_IDS if name.startswith("roberta") else INPUT_IDS


def write(root: Path) -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    from ptuning.core.checkpoint import save_checkpoint
    from ptuning.core.config import PrefixConfig
    from ptuning.core.model import HeadSpec, PromptModel
    from ptuning.interop.peft_export import export_peft

    for index, (name, (base, kind, labels, method, dense)) in enumerate(EXPORTS.items()):
        folder = FIXTURES / base / "base"
        if kind == "causal-lm":
            backbone = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
        elif base.startswith(("llama", "electra")):  # no pooling layer to leave out
            backbone = AutoModel.from_pretrained(folder, attn_implementation="sdpa")
        else:
            backbone = AutoModel.from_pretrained(folder, attn_implementation="sdpa", add_pooling_layer=False)
        torch.manual_seed(index)
        config = PrefixConfig(prefix_length=4, dropout=0.0, position_mode="shift", mlp_hidden_size=8)
        model = PromptModel(backbone, method, config, head_dropout=0.0)
        model.add_task("task", HeadSpec(kind, labels, None, dense))
        if kind == "classification" and dense is None:
            with torch.no_grad():
                model.heads["task"].linear.bias.zero_()  # transformers' score layer has no bias
        model.eval()
        with torch.no_grad():
            logits = model(_input_ids(name), ATTENTION_MASK).logits
        checkpoint = save_checkpoint(model, root / name / "checkpoint")
        export_peft(checkpoint, root / name / "adapter")
        save_file({"logits": logits.contiguous()}, str(root / name / "ptuning_logits.safetensors"))
        print(f"wrote {root / name}")


def check(root: Path) -> int:
    import peft
    import transformers
    from peft import PeftModel

    classes = {
        "CAUSAL_LM": transformers.AutoModelForCausalLM,
        "SEQ_CLS": transformers.AutoModelForSequenceClassification,
        "TOKEN_CLS": transformers.AutoModelForTokenClassification,
    }
    failures = 0
    for name in EXPORTS:
        adapter = root / name / "adapter"
        config = json.loads((adapter / "adapter_config.json").read_text())
        labels = EXPORTS[name][2]
        options = {"num_labels": len(labels)} if labels else {}
        base = classes[config["task_type"]].from_pretrained(
            config["base_model_name_or_path"], attn_implementation="sdpa", **options
        )
        model = PeftModel.from_pretrained(base, adapter).eval()
        with torch.no_grad():
            logits = model(input_ids=_input_ids(name), attention_mask=ATTENTION_MASK).logits
        ours = load_file(str(root / name / "ptuning_logits.safetensors"))["logits"]
        real = ATTENTION_MASK.bool()
        diff = (logits - ours)[real] if logits.dim() == 3 else logits - ours
        largest, allowed = float(diff.abs().max()), TOLERANCE.get(name, 0.0)
        failures += largest > allowed
        verdict = "ok" if largest <= allowed else "FAILED"
        print(
            f"{name}: PEFT {peft.__version__} (transformers {transformers.__version__}) vs ptuning, max |diff| {largest:.3g} "
            f"(allowed {allowed:.3g}): {verdict}"
        )
    return failures


if __name__ == "__main__":
    step, folder = sys.argv[1], Path(sys.argv[2])
    if step == "write":
        write(folder)
    else:
        sys.exit(1 if check(folder) else 0)
