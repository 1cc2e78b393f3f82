"""Write tests/interop/fixtures/bert-qa: a PEFT 0.21.2 QUESTION_ANS prefix-tuning adapter and what PEFT
computed with it on inputs that carry token types (question type 0, context type 1), as the squad task's do.

PEFT 0.21.2's PeftModelForQuestionAnswering never passes token_type_ids on under prefix tuning; the stored
logits are PEFT's with them given, which equal PEFT's without them (checked here). Run it where PEFT is
installed, as scripts/make_peft_fixture.py (same versions: transformers 5.23, torch 2.13):

    PYTHONPATH=<peft> .venv-transformers-5.23/bin/python scripts/make_peft_qa_fixture.py tests/interop/fixtures
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import PrefixTuningConfig, TaskType, get_peft_model
from safetensors.torch import save_file
from transformers import BertConfig, BertForQuestionAnswering

NAME = "bert-qa"
VOCAB = 64
SEED = 6


def write_fixture(root: Path) -> None:
    folder = root / NAME
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(SEED)
    BertForQuestionAnswering(config).save_pretrained(folder / "base")
    base = BertForQuestionAnswering.from_pretrained(folder / "base", attn_implementation="sdpa")
    model = get_peft_model(base, PrefixTuningConfig(task_type=TaskType.QUESTION_ANS, num_virtual_tokens=3))
    with torch.no_grad():  # the head starts as a copy of the base's: make it differ, as after training
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    model.eval()
    model.save_pretrained(folder / "adapter")
    input_ids = torch.randint(2, VOCAB, (2, 9), generator=torch.Generator().manual_seed(SEED + 1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0  # right padding, as the other fixtures
    input_ids[1, 7:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 4:] = 1  # [CLS] question [SEP] | context [SEP]
    token_type_ids[1, 7:] = 0
    with torch.no_grad():
        given = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        without = model(input_ids=input_ids, attention_mask=attention_mask)
    assert torch.equal(given.start_logits, without.start_logits), "PEFT now passes token_type_ids on"
    expected = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "start_logits": given.start_logits.contiguous(),
        "end_logits": given.end_logits.contiguous(),
    }
    save_file(expected, str(folder / "expected.safetensors"))
    config_path = folder / "adapter" / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = "../base"  # beside the adapter, not this machine's path
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    (folder / "adapter" / "README.md").unlink()  # PEFT's model-card template: nothing the tests read
    (folder / "GENERATED_BY.txt").write_text(
        f"scripts/make_peft_qa_fixture.py {NAME} seed {SEED}: peft {peft.__version__}, transformers "
        f"{transformers.__version__}, torch {torch.__version__}\n"
    )


if __name__ == "__main__":
    write_fixture(Path(sys.argv[1]))
