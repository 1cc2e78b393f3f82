"""The real all-MiniLM-L6-v2 stored in bf16 under an fp32 prefix and head, on real SST-2 sentences.

Tolerance: a bf16 backbone's sentence vectors ([CLS] hidden state, 384 values of order 1) stay within
cosine 0.995 of the fp32 ones, and the head's fp32 logits within 0.05 (measured: above 0.9999 and 0.004).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from ptuning.core.backbones import BackboneNotFoundError, load_backbone
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

SST2 = Path(os.environ.get("PTUNING_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "sst2"


def sst2_rows(split: str, count: int) -> tuple[list[str], torch.Tensor]:
    path = SST2 / f"{split}.tsv"
    if not path.exists():
        pytest.skip(f"real SST-2 not found at {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1 : count + 1]
    return [row[1] for row in rows], torch.tensor([int(row[0]) for row in rows])


def minilm_model(dtype: str) -> tuple[PromptModel, object]:
    try:
        backbone, tokenizer = load_backbone("minilm", dtype=dtype)
    except BackboneNotFoundError as error:
        pytest.skip(str(error))
    torch.manual_seed(0)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=8, dropout=0.0), head_dropout=0.0)
    model.add_task("sst2", HeadSpec(HeadKind.CLASSIFICATION, ["negative", "positive"]))
    return model.eval(), tokenizer


def test_minilm_in_bf16_gives_the_fp32_sentence_vectors_and_logits_within_tolerance() -> None:
    (fp32, tokenizer), (bf16, _) = minilm_model("fp32"), minilm_model("bf16")
    assert next(bf16.backbone.parameters()).dtype == torch.bfloat16
    assert bf16.prefixes["sst2"].embedding.weight.dtype == torch.float32
    torch.testing.assert_close(bf16.prefixes["sst2"].embedding.weight, fp32.prefixes["sst2"].embedding.weight)
    sentences, _ = sst2_rows("dev", 32)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        vectors = [
            m.encode(batch["input_ids"], batch["attention_mask"], None, ["sst2"] * 32)[:, 0]
            for m in (fp32, bf16)
        ]
        logits = [m(**batch).logits for m in (fp32, bf16)]
    cosine = torch.nn.functional.cosine_similarity(vectors[0], vectors[1].float(), dim=-1)
    assert cosine.min() > 0.995, cosine.min()
    assert logits[1].dtype == torch.float32
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0.05)


def test_training_a_prefix_on_minilm_in_bf16_lowers_the_loss_and_touches_only_prefix_and_head() -> None:
    model, tokenizer = minilm_model("bf16")
    model.train()
    sentences, labels = sst2_rows("train", 64)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    torch.manual_seed(1)
    losses = []
    for step in range(12):
        rows = slice(16 * (step % 4), 16 * (step % 4 + 1))
        batch = tokenizer(sentences[rows], padding=True, return_tensors="pt")
        loss = model(**batch, labels=labels[rows]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-4:]) < sum(losses[:4]) - 0.2, losses  # the same 4 batches, before and after
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone_before.items())
