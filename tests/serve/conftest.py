"""Tiny random BERT backbones (with the packaged MiniLM tokenizer) and prompt checkpoints built on them.

Every checkpoint is a real ``save_checkpoint`` folder with random prefixes and heads: the server must
answer exactly what ``predict_outputs`` answers on the same folder, whatever the weights are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny_models import save_tiny_bert

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.registry import get_task


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("base"), seed=0)


@pytest.fixture(scope="session")
def other_base_dir(tmp_path_factory) -> str:
    """Same architecture and tokenizer, other weights: another base fingerprint."""
    return save_tiny_bert(tmp_path_factory.mktemp("other-base"), seed=1)


@pytest.fixture(scope="session")
def base(base_dir):
    """(backbone, tokenizer) loaded as the server loads them."""
    return load_backbone(base_dir)


CheckpointFactory = Callable[..., Path]


def build_checkpoint(
    model_dir: str,
    folder: Path,
    tasks: dict[str, str],
    prefix_length: int = 4,
    shared: bool = False,
    seed: int = 0,
    method: str = "ptuning-v2",
    position_mode: str = "keep",
    task_options: dict[str, dict] | None = None,
    max_length: int | None = None,
    labels: list[str] | None = None,
) -> Path:
    """Save a checkpoint with one head per ``tasks`` entry (head name -> registry task), random weights.

    ``task_options`` / ``max_length`` are stored as a training run stores them; ``labels`` stand for a
    label set learnt from training data (csv-classification, ner-generic)."""
    backbone, _ = load_backbone(model_dir)
    torch.manual_seed(seed)
    config = PrefixConfig(prefix_length=prefix_length, dropout=0.0, init_std=0.5, position_mode=position_mode)
    if method == "prefix-mlp":
        config = PrefixConfig.from_dict(
            {**config.to_dict(), "reparameterization": "mlp", "mlp_hidden_size": 16}
        )
    model = PromptModel(backbone, method, config, head_dropout=0.0)
    for head, task_name in tasks.items():
        task = get_task(task_name, **(task_options or {}).get(head, {}))
        head_labels = task.label_names or labels
        model.add_task(head, HeadSpec(task.head, head_labels), prefix_name="shared" if shared else None)
    with torch.no_grad():
        for head in model.heads.values():
            head.linear.bias.normal_()  # make every class reachable, not just the initial tie
    return save_checkpoint(model, folder, tasks, task_options=task_options, max_length=max_length)
