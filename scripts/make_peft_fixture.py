"""Write the PEFT prefix-tuning fixtures that tests/interop checks, with real PEFT 0.21.2.

Run it in a side environment that has PEFT (CI never needs it; the fixtures are committed):

    python3 -m venv .venv-peft
    .venv-peft/bin/pip install torch==2.13.0
    .venv-peft/bin/pip install transformers==5.23.0 peft==0.21.2 safetensors
    .venv-peft/bin/python scripts/make_peft_fixture.py tests/interop/fixtures

Each fixture folder holds ``base/`` (a tiny random model: config.json + model.safetensors, no tokenizer),
``adapter/`` (what ``PeftModel.save_pretrained`` wrote) and ``expected.safetensors`` (the inputs and what
PEFT computed on them in eval mode). PEFT 0.21.2's prefix tuning needs transformers 5.23: on 5.24 encoder
tasks raise "Model does not support past key values".

Run with a later PEFT release (0.22.0 runs on transformers 5.25), it writes that release's adapter and outputs
beside the first ones, as ``adapter-peft-<version>/`` and ``expected-peft-<version>.safetensors``, over the
same committed base (which it checks it would have written too).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from peft import PrefixTuningConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB = 64
PREFIX_LENGTH = 3
FIRST_RELEASE = "0.21.2"  # writes adapter/ and expected.safetensors; a later release's files sit beside them


def release_suffix() -> str:
    return "" if peft.__version__ == FIRST_RELEASE else f"-peft-{peft.__version__}"


def bert_config(num_labels: int) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        num_labels=num_labels,
    )


def roberta_config(num_labels: int) -> RobertaConfig:
    """RoBERTa numbers positions from padding_idx + 1 (pad id 1) and classifies with dense -> tanh -> out_proj."""
    return RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=34,
        pad_token_id=1,
        num_labels=num_labels,
    )


def electra_config(num_labels: int) -> ElectraConfig:
    """ELECTRA classifies with dense -> gelu -> out_proj."""
    return ElectraConfig(
        vocab_size=VOCAB,
        embedding_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
    )


def llama_config(num_labels: int = 2) -> LlamaConfig:
    """GQA: 4 query heads share 2 KV heads, so the prefix has 2 heads per layer."""
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        tie_word_embeddings=False,
        num_labels=num_labels,
        initializer_range=0.3,  # wide enough that greedy decoding does not repeat one token
    )


# name -> (model class, config, PEFT task type, prefix_projection)
FIXTURES = {
    "bert-seq-cls": (BertForSequenceClassification, bert_config(2), TaskType.SEQ_CLS, False),
    "bert-token-cls-projection": (BertForTokenClassification, bert_config(3), TaskType.TOKEN_CLS, True),
    "llama-gqa-causal-lm": (LlamaForCausalLM, llama_config(), TaskType.CAUSAL_LM, False),
    "llama-gqa-seq-cls": (LlamaForSequenceClassification, llama_config(2), TaskType.SEQ_CLS, False),
    "roberta-seq-cls": (RobertaForSequenceClassification, roberta_config(3), TaskType.SEQ_CLS, False),
    "electra-seq-cls": (ElectraForSequenceClassification, electra_config(2), TaskType.SEQ_CLS, False),
}


def write_fixture(root: Path, name: str, seed: int) -> None:
    model_class, config, task_type, projection = FIXTURES[name]
    folder = root / name
    torch.manual_seed(seed)
    save_base(model_class(config), folder / "base")
    base = model_class.from_pretrained(folder / "base", attn_implementation="sdpa")
    peft_config = PrefixTuningConfig(
        task_type=task_type,
        num_virtual_tokens=PREFIX_LENGTH,
        prefix_projection=projection,
        encoder_hidden_size=8 if projection else None,
    )
    model = get_peft_model(base, peft_config)
    perturb_trainable(model)
    model.eval()
    # ids from 2 up: never a pad id (0 for BERT and Llama, 1 for RoBERTa, which finds padding by its id)
    input_ids = torch.randint(2, VOCAB, (2, 7), generator=torch.Generator().manual_seed(seed + 1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0  # right padding: PEFT shifts positions by P from the first slot on
    input_ids[1, 5:] = config.pad_token_id
    # PEFT 0.21.2 breaks RoBERTa's and ELECTRA's classifiers when hidden states are requested (they get a
    # tuple): logits only.
    hidden_states = not name.startswith(("roberta", "electra"))
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden_states)
    expected = {"input_ids": input_ids, "attention_mask": attention_mask, "logits": out.logits.contiguous()}
    if hidden_states:
        expected["last_hidden_state"] = out.hidden_states[-1].contiguous()
    if task_type == TaskType.CAUSAL_LM:  # greedy decoding of a left-padded batch
        prompts = torch.randint(1, VOCAB, (2, 5), generator=torch.Generator().manual_seed(seed + 2))
        prompt_mask = torch.ones_like(prompts)
        prompt_mask[1, :2] = 0
        prompts[1, :2] = 0
        with torch.no_grad():
            generated = model.generate(
                input_ids=prompts,
                attention_mask=prompt_mask,
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=0,
                return_dict_in_generate=True,
                output_logits=True,
            )
        expected.update(
            generate_input_ids=prompts,
            generate_attention_mask=prompt_mask,
            generated=generated.sequences[:, 5:].contiguous(),
            generate_logits=torch.stack(generated.logits).contiguous(),  # (steps, B, vocab)
        )
    save_fixture(folder, model, expected, f"{name} seed {seed}")


def save_base(model: Any, folder: Path) -> None:
    """The tiny random base. A later release's fixtures keep the committed one: the first release's outputs
    were computed on it, so it must be the model this seed gives here too."""
    if peft.__version__ == FIRST_RELEASE or not folder.exists():
        model.save_pretrained(folder)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)
        fresh = load_file(str(Path(scratch) / "model.safetensors"))
    committed = load_file(str(folder / "model.safetensors"))
    same = fresh.keys() == committed.keys() and all(torch.equal(fresh[k], committed[k]) for k in fresh)
    assert same, f"{folder}: this seed gives another base here; regenerate every release's fixtures"


def save_fixture(folder: Path, model: Any, expected: dict[str, torch.Tensor], label: str) -> None:
    """The adapter (its base named relative to it), what PEFT computed, and which versions wrote them."""
    adapter = folder / f"adapter{release_suffix()}"
    model.save_pretrained(adapter)
    save_file(expected, str(folder / f"expected{release_suffix()}.safetensors"))
    config_path = adapter / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = "../base"  # beside the adapter, not this machine's path
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    (adapter / "README.md").unlink()  # PEFT's model-card template: nothing the tests read
    line = (
        f"scripts/make_peft_fixture.py {label}: peft {peft.__version__}, transformers "
        f"{transformers.__version__}, torch {torch.__version__}\n"
    )
    written_by = folder / "GENERATED_BY.txt"
    earlier = [] if not written_by.exists() else written_by.read_text().splitlines(keepends=True)
    # this release's own line is replaced, the other releases' kept
    others = [old for old in earlier if f": peft {peft.__version__}," not in old]
    written_by.write_text("".join([*others, line]))


def perturb_trainable(model: Any) -> None:
    """Heads start as copies of the base's: make them differ, as after training."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.5)


QA_NAME, QA_SEED = "bert-qa", 6


def write_qa_fixture(root: Path) -> None:
    """A QUESTION_ANS adapter and PEFT's logits on inputs with token types (question 0, context 1), as the squad
    task's features have them. PEFT 0.21.2's question answering never passes token_type_ids on under prefix
    tuning: the stored logits are PEFT's with them given, which equal PEFT's without them (checked here)."""
    folder = root / QA_NAME
    torch.manual_seed(QA_SEED)
    save_base(BertForQuestionAnswering(bert_config(2)), folder / "base")
    base = BertForQuestionAnswering.from_pretrained(folder / "base", attn_implementation="sdpa")
    model = get_peft_model(
        base, PrefixTuningConfig(task_type=TaskType.QUESTION_ANS, num_virtual_tokens=PREFIX_LENGTH)
    )
    perturb_trainable(model)
    model.eval()
    input_ids = torch.randint(2, VOCAB, (2, 9), generator=torch.Generator().manual_seed(QA_SEED + 1))
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
    save_fixture(folder, model, expected, f"{QA_NAME} seed {QA_SEED}")


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/interop/fixtures")
    for seed, name in enumerate(FIXTURES):
        write_fixture(root, name, seed)
        print(f"wrote {root / name}")
    write_qa_fixture(root)
    print(f"wrote {root / QA_NAME}")


if __name__ == "__main__":
    main()
