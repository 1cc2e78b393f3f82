"""DeepSpeed ZeRO-3 on 2 CPU processes (gloo) with a frozen backbone trains the same prompt as one process.

Not a dependency of the project: skipped unless ``deepspeed`` is importable. ``scripts/test.sh`` (CI) runs it
in the side environment ``scripts/setup_deepspeed.sh`` builds (why apart from .venv: see that script). ZeRO-3 partitions every parameter, the
trained prefixes and heads included, so they are gathered (``GatheredParameters``) before the prompt is written.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_sharding import (
    BATCH,
    STEPS,
    WORLD,
    assert_trained_like_one_process,
    free_port,
    global_batch,
    tiny_model,
    train,
)

from ptuning.core.checkpoint import save_checkpoint

deepspeed = pytest.importorskip(
    "deepspeed", reason="deepspeed is not installed (optional, see the docstring)"
)


def zero3_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    # DeepSpeed's shared-memory op serves its inference all-reduce, which ZeRO-3 training never calls; loaded, its
    # teardown aborted a process ("terminate called without an active exception") in about one run of five on a
    # loaded 2-core machine (the rest of that teardown: the end of this function). Training's collectives go
    # through torch.distributed (gloo) either way.
    backend = importlib.import_module("deepspeed.comm.torch")  # the attribute deepspeed.comm.torch is torch
    backend.build_shm_op = lambda: None
    os.environ["LOCAL_RANK"] = str(rank)  # what torchrun would set; deepspeed.initialize asserts it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = tiny_model()
        whole = sum(p.numel() for p in model.backbone.parameters())
        # ZeRO-3 steps every parameter it is given, with a zero gradient where none was computed (torch
        # skips grad=None), so AdamW's weight decay would move the unused task's prefix and head: leave them out
        for part in (model.prefixes["unused"], model.heads["unused"]):
            part.requires_grad_(False)
        trained = [p for p in model.parameters() if p.requires_grad]
        config = {
            "train_micro_batch_size_per_gpu": BATCH // WORLD,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": 3},
            "gradient_clipping": 0.0,  # as the one-process run (no clipping)
            "zero_allow_untested_optimizer": True,  # torch's AdamW: DeepSpeed's own Adam compiles a C++ op
        }
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=torch.optim.AdamW(trained, lr=1e-2), config=config
        )
        local = sum(p.ds_tensor.numel() for p in model.backbone.parameters())
        assert local <= whole // WORLD + 64, (local, whole)  # this process holds half of the backbone
        ids, mask, labels = global_batch()
        rows = slice(rank * (BATCH // WORLD), (rank + 1) * (BATCH // WORLD))
        losses, first_grad = [], None
        for _ in range(STEPS):
            loss = engine(ids[rows], mask[rows], labels=labels[rows], task="t").loss
            engine.backward(loss)
            if first_grad is None:  # the averaged gradient, gathered from the partitions (collective)
                first_grad = deepspeed.utils.safe_get_full_grad(model.prefixes["t"].embedding.weight)
            engine.step()
            total = loss.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / WORLD)
        trained_parameters = [p for part in (model.prefixes, model.heads) for p in part.parameters()]
        with deepspeed.zero.GatheredParameters(trained_parameters):  # collective: every process enters
            if rank == 0:
                save_checkpoint(model, Path(output) / "checkpoint")
                torch.save({"losses": losses, "first_grad": first_grad}, Path(output) / "record.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Every collective is done and rank 0's record is written. What is left is the interpreter's teardown, and
    # there DeepSpeed still holds its gloo groups (their tcp and run-loop threads outlive destroy_process_group,
    # as they do not without DeepSpeed) and destroying them aborted one process in about ten here ("terminate
    # called without an active exception", after the worker had returned). Leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.ddp
@pytest.mark.skipif(sys.platform == "win32", reason="gloo over TCP on localhost")
def test_zero3_with_a_frozen_backbone_trains_the_same_prompt_as_one_process(tmp_path) -> None:
    single = tiny_model()
    expected = train(single, slice(None), sharded=False)
    save_checkpoint(single, tmp_path / "single")

    mp.start_processes(
        zero3_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn"
    )

    record = torch.load(tmp_path / "record.pt")
    assert_trained_like_one_process(
        record["losses"], record["first_grad"], tmp_path / "checkpoint", expected, tmp_path / "single"
    )
