"""A frozen backbone sharded across processes (FSDP2), with prefixes and heads replicated.

Why: a backbone larger than one device's memory only has to be *read* during prompt tuning, never updated,
so each process can hold 1/N of it and gather one layer at a time (``fully_shard``), while the few trained
tensors (prefixes, heads) stay whole on every process: their gradients are averaged across processes after
backward (one all-reduce of one flat buffer) and every process takes the same optimizer step, so they stay
identical and a prompt checkpoint is written once, by rank 0, with nothing to gather.

Every process must run every forward (the layers' all-gathers are collective), evaluation included.
Works with the gloo backend on CPU and NCCL on CUDA (torch >= 2.6 for ``torch.distributed.fsdp.fully_shard``).

What combines with sharding (2 CPU processes against one, same global batch; measured, largest difference):

* gradient checkpointing: each layer is gathered again for its recomputation in backward; tiny Llama: loss
  6e-8, prefix gradient 2e-9, saved prompt 1.2e-7; tiny BERT through the CLI: prompt 1.2e-7;
* bf16 autocast (``--mixed-precision bf16``) and a bf16-stored backbone (``--backbone-dtype bf16``): loss
  1.2e-7 and prompt 1.5e-8 (Llama), prompt 1.5e-8 (BERT, both together). Tests allow 1e-4, not 1e-5: a bf16
  matmul over a process's rows instead of all rows may be blocked differently and round a hidden state by
  one bf16 step (2**-8 relative, 2**-24 in fp32); everything trained, and the loss, stay fp32;
* fp16 autocast (``--mixed-precision fp16``): prompt 1.2e-7 (BERT);
* an fp16-stored backbone (``--backbone-dtype fp16``) is refused (training/preflight.py): it runs, but does
  not reproduce one process. Tiny Llama: first prefix gradient off by 1.9e-5 of 1.4e-2 (about one fp16 step,
  2**-11 relative), loss 2.3e-5, prompt 2.5e-4 after 3 updates; tiny BERT through the CLI: prompt 4e-2 after
  8 updates (Adam amplifies it). bf16, with fewer mantissa bits, matches exactly here, so this is not the
  rounding step alone; not pinned down: CPU fp16 matmuls over 4 rows instead of 8, or unscaled gradients in
  fp16's narrow exponent range (bf16 has fp32's). Not checked on CUDA.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ptuning.core.config import ConfigError
from ptuning.core.model import PromptModel


def backbone_layers(model: PromptModel) -> nn.ModuleList:
    """The backbone's list of transformer layers: the ModuleList with one entry per hidden layer.

    An encoder-decoder (T5, BART) has two such lists, and its geometry counts prefix slots, not layers, so it
    is refused by name (preflight refuses it before loading where the model is a local folder)."""
    if model.geometry.is_encoder_decoder:
        raise ConfigError(
            f"--shard-backbone shards encoder-only and decoder-only backbones; {type(model.backbone).__name__} "
            "is an encoder-decoder (T5, BART...): train it without sharding"
        )
    layers = [
        module
        for module in model.backbone.modules()
        if isinstance(module, nn.ModuleList) and len(module) == model.geometry.num_layers
    ]
    if not layers:
        raise ValueError(
            f"no list of {model.geometry.num_layers} layers found in {type(model.backbone).__name__}"
        )
    return layers[0]


def shard_backbone(model: PromptModel, mesh=None) -> PromptModel:
    """Shard ``model``'s frozen backbone over the processes of ``mesh`` (default: all of them), layer by layer.

    Each transformer layer is its own FSDP unit (gathered for its forward, and again for backward), and the
    backbone root holds the rest (embeddings, final norm, LM head). Prefixes and heads are not touched.
    Call after the checkpoint/prefix is loaded and before building the optimizer.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise RuntimeError(
            "shard_backbone needs torch.distributed initialised (torchrun or init_process_group)"
        )
    if any(p.requires_grad for p in model.backbone.parameters()):
        raise ValueError(f"only a frozen backbone can be sharded here; method {model.method} trains it")
    if mesh is None:
        device_type = next(model.backbone.parameters()).device.type
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for layer in backbone_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model.backbone, mesh=mesh)
    return model


def reshard_backbone(model: PromptModel) -> None:
    """Free every gathered layer, on this process, so that all processes are in the same state.

    Why: FSDP2 keeps the root unit (embeddings, final norm) gathered after a forward that has no backward
    (evaluation), and ``state_dict()`` reshards it, so if rank 0 alone writes a checkpoint in between, the
    next forward all-gathers the root on rank 0 only and the processes' collectives no longer match. No
    communication: every process must call it at the same point.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.backbone.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def replicated_parameters(model: PromptModel) -> list[nn.Parameter]:
    """The trained tensors every process holds whole: prefixes and heads."""
    return [p for part in (model.prefixes, model.heads) for p in part.parameters() if p.requires_grad]


def average_replicated_gradients(model: PromptModel) -> None:
    """Average the prefixes' and heads' gradients over all processes, in one all-reduce.

    With each process's loss the mean over its own equal share of the global batch, the average is the
    gradient of the global batch's mean loss, exactly what one process would compute. A tensor no process
    used (another task's head) keeps ``grad=None``, as it would in one process, so the optimizer skips it.
    """
    parameters = replicated_parameters(model)
    if not parameters:
        return
    present = torch.tensor([float(p.grad is not None) for p in parameters], device=parameters[0].device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([*(g.reshape(-1) for g in grads), present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    used_anywhere = flat[-len(parameters) :] > 0
    for parameter, used in zip(parameters, used_anywhere.tolist(), strict=True):
        count = parameter.numel()
        parameter.grad = flat[offset : offset + count].view_as(parameter).clone() if used else None
        offset += count
