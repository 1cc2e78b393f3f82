"""PEFT 0.21.2 adapters on the real packaged models, read by ptuning: same logits, same greedy tokens.

Two steps, two environments (the PEFT side venv of scripts/make_peft_fixture.py, then ptuning's venv;
SmolLM2's converted folder comes from ``ptuning.core.packaged.smollm2_path()``, i.e. $PTUNING_CACHE):

    FOLDERS=$(PYTHONPATH=src .venv/bin/python -c "from ptuning.core.backbones import resolve_model_path as r
    print(r('minilm'), r('smollm2'))")
    .venv-peft/bin/python scripts/check_peft_real.py peft outputs/peft-real $FOLDERS
    PYTHONPATH=src .venv/bin/python scripts/check_peft_real.py ptuning outputs/peft-real

``peft`` writes TOKEN_CLS and SEQ_CLS adapters on all-MiniLM-L6-v2 and a CAUSAL_LM adapter on
SmolLM2-135M-Instruct (P 8, random prefix and head scaled by 0.3) with PEFT's logits and greedy tokens;
``ptuning`` loads each adapter folder with ``load_checkpoint`` and compares.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

TEXTS = ["John Smith flew to Berlin on Monday", "What is the capital of France?"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
# name -> (ptuning model name, causal LM)
MODELS = {
    "minilm-token-cls": ("minilm", False),
    "minilm-seq-cls": ("minilm", False),  # BertForSequenceClassification: classifier over the pooler
    "smollm2-causal-lm": ("smollm2", True),
}


def write_with_peft(root: Path, folders: list[str]) -> None:
    """``folders``: the local folders of MiniLM and SmolLM2."""
    import peft
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    folder_of = dict(zip(("minilm", "smollm2"), folders, strict=True))
    for name, (model_name, causal) in MODELS.items():
        path = folder_of[model_name]
        torch.manual_seed(0)
        if causal:
            base, task = AutoModelForCausalLM.from_pretrained(path), TaskType.CAUSAL_LM
        elif name.endswith("seq-cls"):
            base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
            task = TaskType.SEQ_CLS
        else:
            base, task = (
                AutoModelForTokenClassification.from_pretrained(path, num_labels=3),
                TaskType.TOKEN_CLS,
            )
        model = get_peft_model(base, PrefixTuningConfig(task_type=task, num_virtual_tokens=8))
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.mul_(0.3)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits
        result = {**batch, "logits": logits.contiguous()}
        if causal:
            chat = tokenizer(
                [tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)]
            )
            prompt = {key: torch.tensor(value) for key, value in chat.items()}
            with torch.no_grad():
                sequences = model.generate(**prompt, max_new_tokens=10, do_sample=False)
            length = prompt["input_ids"].shape[1]
            result.update(gen_ids=prompt["input_ids"], gen_mask=prompt["attention_mask"])
            result["generated"] = sequences[:, length:].contiguous()
        model.save_pretrained(root / name / "adapter")
        save_file({k: v.contiguous() for k, v in result.items()}, str(root / name / "expected.safetensors"))
        print(f"wrote {root / name}: peft {peft.__version__}, transformers {transformers.__version__}")


def compare_in_ptuning(root: Path) -> int:
    from ptuning.core.backbones import load_backbone
    from ptuning.core.checkpoint import load_checkpoint

    warnings.simplefilter("ignore")
    failures = 0
    for name, (model_name, causal) in MODELS.items():
        expected = load_file(str(root / name / "expected.safetensors"))
        backbone, tokenizer = load_backbone(model_name, causal_lm=causal)
        model = load_checkpoint(root / name / "adapter", backbone=backbone)
        with torch.no_grad():
            logits = model(expected["input_ids"], expected["attention_mask"]).logits
        real = expected["attention_mask"].bool()
        diff = (logits - expected["logits"])[real] if logits.dim() == 3 else logits - expected["logits"]
        largest = float(diff.abs().max())
        failures += largest != 0.0
        print(
            f"{name}: ptuning on transformers {transformers.__version__}, max |diff| of logits {largest:.3g}"
        )
        if causal:
            generated = model.generate(
                expected["gen_ids"], expected["gen_mask"], max_new_tokens=10, do_sample=False
            )
            same = torch.equal(generated, expected["generated"])
            failures += not same
            print(f"{name}: greedy tokens equal PEFT's: {same} ({tokenizer.decode(generated[0])!r})")
    return failures


if __name__ == "__main__":
    step, folder = sys.argv[1], Path(sys.argv[2])
    if step == "peft":
        write_with_peft(folder, sys.argv[3:])
    else:
        sys.exit(1 if compare_in_ptuning(folder) else 0)
