"""``ours`` with one of the changes kept behind a flag, as speed systems: packed rows (``--pack-sequences``) and
a compiled backbone (``--compile``). The profile (speed_profile.py) takes one of each beside ``ours`` and
``ours-bf16``, so every change's GEMM share and time outside GEMMs sit in one table."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from speed_common import MAX_LENGTH, Data, Workload
from speed_systems import SYSTEM_LABELS, PromptSystem, Round, build_system

from ptuning.core.compilation import compile_backbone
from ptuning.core.packing import pack_features, segment_labels
from ptuning.tasks.collate import length_grouped_batches
from ptuning.training.inference import feature_length

PACKED = "ours-packed"
COMPILED = "ours-compiled"
VARIANT_LABELS = {
    **SYSTEM_LABELS,
    PACKED: f"ours + --pack-sequences (rows of {MAX_LENGTH})",
    COMPILED: "ours + --compile (profiled after its warm-up)",
}


class PackedPromptSystem(PromptSystem):
    """``ours`` with each length-grouped batch packed into rows of ``MAX_LENGTH`` tokens, as
    ``ptuning train --pack-sequences`` does (the trainer packs to ``max_length``)."""

    def __init__(self, folder: str, data: Data, workload: Workload) -> None:
        super().__init__(folder, data, workload)
        self.model.check_packable("task")

    def train_round(self, seed: int) -> Round:
        lengths = [feature_length(f) for f in self.train_features]
        batches = length_grouped_batches(lengths, self.workload.batch_size, seed=seed)
        self.model.train()
        shapes = []
        start = time.perf_counter()
        for indices in batches:
            with torch.profiler.record_function("collate"):
                chosen = [self.train_features[i] for i in indices]
                packed = pack_features(chosen, MAX_LENGTH, self.data.pad_id)
                labels = segment_labels(chosen, self.data.kind)
            shapes.append(tuple(packed.input_ids.shape[:2]))  # (rows, row length): what the GEMMs ran over
            with torch.profiler.record_function("forward"):
                loss = self.model(packed=packed, labels=labels, task="task").loss
            with torch.profiler.record_function("backward"):
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                self.optimizer.step()
                self.optimizer.zero_grad()
        seconds = time.perf_counter() - start
        return Round(seconds, len(self.train_features), sum(b * t for b, t in shapes), shapes)


class CompiledPromptSystem(PromptSystem):
    """``ours`` with its backbone compiled as ``--compile`` does (``compile_backbone``, dynamic shapes), from
    a cold start (Dynamo reset, a fresh Inductor cache folder): its first rounds pay the start-up."""

    def __init__(self, folder: str, data: Data, workload: Workload, backend: str, work_dir: Path) -> None:
        super().__init__(folder, data, workload)
        torch._dynamo.reset()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=work_dir)
        self.backend = backend
        compile_backbone(self.model, backend)


def build_variant(name: str, folder: str, data: Data, workload: Workload, backend: str, work_dir: Path):
    """A change behind a flag (``ours-packed``, ``ours-compiled``), or any system of speed_systems.py."""
    if name == PACKED:
        return PackedPromptSystem(folder, data, workload)
    if name == COMPILED:
        return CompiledPromptSystem(folder, data, workload, backend, work_dir)
    return build_system(name, folder, data, workload)
