"""A few updates of a prompt model on real SST-2 sentences (../shared/data/sst2), for the tests that check a
real packaged backbone learns through its prefix and head alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ptuning.core.model import PromptModel
from ptuning.tasks.collate import collate
from ptuning.tasks.registry import get_task

SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"


@dataclass(frozen=True)
class Learnt:
    loss_before: float
    loss_after: float
    backbone_unchanged: bool


def learn_real_sst2(
    model: PromptModel, tokenizer, sentences: int, max_length: int, learning_rate: float, epochs: int
) -> Learnt:
    """AdamW on the first ``sentences`` train sentences (batches of 16) for ``epochs`` passes, task "sst2";
    the mean loss over those batches before and after, and whether every backbone tensor is as it was."""
    task = get_task("sst2")
    examples, _ = task.read(str(SST2), "train")
    features, _ = task.featurize(examples[:sentences], tokenizer, max_length=max_length)
    batches = [collate(features[i : i + 16], tokenizer.pad_token_id) for i in range(0, sentences, 16)]
    frozen = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}

    def mean_loss() -> float:
        model.eval()
        with torch.no_grad():
            return sum(model(**b, task="sst2").loss.item() for b in batches) / len(batches)

    before = mean_loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    for _ in range(epochs):
        for batch in batches:
            model(**batch, task="sst2").loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    after = mean_loss()
    unchanged = all(torch.equal(tensor, frozen[name]) for name, tensor in model.backbone.state_dict().items())
    return Learnt(before, after, unchanged)
