"""A tiny GQA Llama (or GPT-2) PromptModel with several causal-LM tasks whose prefixes differ in length."""

from __future__ import annotations

import torch
from generative_tiny import EOS, tiny_causal_lm

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

# task -> prefix length: mixed batches must pad the shorter prefixes and mask their empty slots.
TASK_LENGTHS = {"short": 3, "mid": 5, "long": 8}
PROMPTS = [[4, 5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16], [17], [18, 19, 20, 21, 22]]


def multi_prefix_model(
    family: str = "llama", layers: list[int] | None = None, position_mode: str = "keep"
) -> PromptModel:
    """One backbone, one causal-LM task per entry of TASK_LENGTHS, each with its own random prefix (std 1)."""
    model = None
    for task, length in TASK_LENGTHS.items():
        config = PrefixConfig(prefix_length=length, init_std=1.0, layers=layers, position_mode=position_mode)
        if model is None:
            model = PromptModel(tiny_causal_lm(family), "ptuning-v2", config)
        model.prefix_config = config
        model.add_task(task, HeadSpec(HeadKind.CAUSAL_LM))
    return model.eval()


def alone(model: PromptModel, task: str, prompt: list[int], steps: int) -> list[int]:
    """``PromptModel.generate`` on one prompt, greedy, up to ``steps`` new tokens or EOS (not included)."""
    new = model.generate(torch.tensor([prompt]), task=task, max_new_tokens=steps, do_sample=False)[0].tolist()
    return new[: new.index(EOS)] if EOS in new else new
