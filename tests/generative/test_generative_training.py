"""Training a causal-LM prefix: bf16 backbones with an fp32 prefix, and gradient checkpointing."""

from __future__ import annotations

import torch
from generative_tiny import QA_ROWS, prompt_model, tiny_tokenizer, write_jsonl

from ptuning.tasks.collate import collate
from ptuning.tasks.generative import CausalLmTask


def qa_batch(tmp_path) -> dict[str, torch.Tensor]:
    tokenizer = tiny_tokenizer()
    task = CausalLmTask()
    examples, _ = task.read(str(write_jsonl(tmp_path / "train.jsonl", QA_ROWS)), "train")
    features, _ = task.featurize(examples, tokenizer, max_length=64)
    return collate(features, tokenizer.pad_token_id)


def test_a_bf16_backbone_trains_an_fp32_prefix(tmp_path) -> None:
    model = prompt_model("llama", dtype=torch.bfloat16)
    assert next(model.backbone.parameters()).dtype == torch.bfloat16
    out = model(**qa_batch(tmp_path))
    out.loss.backward()
    prefix = model.prefixes["t"].embedding.weight
    assert prefix.dtype == torch.float32  # cast to the key dtype inside attention, stored in fp32
    assert out.logits.dtype == torch.float32  # logits leave the model in fp32 (core/precision.py)
    assert torch.isfinite(out.loss) and prefix.grad is not None
    assert (
        prefix.grad.dtype == torch.float32
        and torch.isfinite(prefix.grad).all()
        and prefix.grad.abs().sum() > 0
    )
    assert all(p.grad is None for p in model.backbone.parameters())


def test_gradient_checkpointing_keeps_loss_and_prefix_gradients(tmp_path) -> None:
    batch = qa_batch(tmp_path)
    results = []
    for checkpointing in (False, True):
        model = prompt_model("llama", seed=3)
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()  # checkpointing only recomputes in training mode
        calls: list[int] = []
        model.backbone.model.layers[0].input_layernorm.register_forward_hook(
            lambda *args, calls=calls: calls.append(1)
        )
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), model.prefixes["t"].embedding.weight.grad.clone(), len(calls)))
    (plain_loss, plain_grad, plain_calls), (checkpointed_loss, checkpointed_grad, checkpointed_calls) = (
        results
    )
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the checkpointed layer ran again in backward
    torch.testing.assert_close(checkpointed_loss, plain_loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(checkpointed_grad, plain_grad, rtol=1e-5, atol=1e-7)
    assert plain_grad.abs().sum() > 0
