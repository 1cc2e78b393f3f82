"""FSDP2: a frozen backbone sharded over 2 processes (CPU, gloo) trains the same prompt as one process.

Two processes each hold half of the backbone's weights and take half of every global batch; prefixes and
heads are replicated and their gradients averaged. Loss, prefix gradients, the trained tensors after three
AdamW steps and the saved prompt must equal one process on the whole batch (dropout 0: the processes draw
different random numbers, so masks could never match).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.training.sharding import average_replicated_gradients, shard_backbone

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available",
)

WORLD = 2
STEPS = 3
BATCH = 8  # global; 4 rows per process


def tiny_model() -> PromptModel:
    """A GQA Llama (4 layers, so each process holds parts of several FSDP units) with a classification head
    and an unused second task, whose head must stay untouched as in one process."""
    config = LlamaConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    backbone = LlamaForCausalLM(config).model
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=3, dropout=0.0), head_dropout=0.0)
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b", "c"]))
    model.add_task("unused", HeadSpec(HeadKind.CLASSIFICATION, ["x", "y"]))
    return model


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (BATCH, 6), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, :2] = 0  # some left padding
    return ids, mask, torch.randint(0, 3, (BATCH,), generator=generator)


def train(model: PromptModel, rows: slice, sharded: bool) -> dict[str, list]:
    """STEPS AdamW steps on ``rows`` of the global batch; returns global losses and first-step prefix grads."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask, labels = global_batch()
    record: dict[str, list] = {"losses": [], "first_grad": []}
    for step in range(STEPS):
        loss = model(ids[rows], mask[rows], labels=labels[rows], task="t").loss
        loss.backward()
        if sharded:
            average_replicated_gradients(model)
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= WORLD
        record["losses"].append(loss.item())
        if step == 0:
            record["first_grad"].append(model.prefixes["t"].embedding.weight.grad.clone())
        optimizer.step()
        optimizer.zero_grad()
    return record


def worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = tiny_model()
        whole = sum(p.numel() for p in model.backbone.parameters())
        shard_backbone(model)
        local = sum(p.to_local().numel() for p in model.backbone.parameters())
        assert local < 0.6 * whole, (local, whole)  # this process holds about half of the backbone
        share = BATCH // WORLD
        record = train(model, slice(rank * share, (rank + 1) * share), sharded=True)
        if rank == 0:
            save_checkpoint(model, Path(output) / "checkpoint")
            torch.save(record, Path(output) / "record.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.ddp
@pytest.mark.skipif(sys.platform == "win32", reason="gloo over TCP on localhost")
def test_a_sharded_backbone_trains_the_same_prompt_as_one_process(tmp_path) -> None:
    single = tiny_model()
    expected = train(single, slice(None), sharded=False)
    save_checkpoint(single, tmp_path / "single")

    mp.start_processes(
        worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn"
    )

    record = torch.load(tmp_path / "record.pt")
    torch.testing.assert_close(
        torch.tensor(record["losses"]), torch.tensor(expected["losses"]), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(record["first_grad"][0], expected["first_grad"][0], rtol=1e-5, atol=1e-7)
    assert expected["first_grad"][0].abs().sum() > 0
    saved, reference = (
        load_file(tmp_path / "checkpoint" / "prompt.safetensors"),
        load_file(tmp_path / "single" / "prompt.safetensors"),
    )
    assert saved.keys() == reference.keys() and any(k.startswith("prefixes.") for k in saved)
    for name in reference:
        torch.testing.assert_close(saved[name], reference[name], rtol=0, atol=1e-6, msg=name)
    assert torch.equal(
        saved["heads.unused.linear.weight"], tiny_model().state_dict()["heads.unused.linear.weight"]
    )
