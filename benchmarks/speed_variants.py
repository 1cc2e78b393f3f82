"""``ours`` with one of the changes kept behind a flag, as speed systems: packed rows (``--pack-sequences``) and
a compiled backbone (``--compile``). The profile (speed_profile.py) takes one of each beside ``ours`` and
``ours-bf16``, so every change's GEMM share and time outside GEMMs sit in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speed_common import MAX_LENGTH, Data, Workload, cold_compile_start
from speed_systems import SYSTEM_LABELS, PromptSystem, build_system

from ptuning.core.packing import pack_features, segment_labels

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

    def training_inputs(self, indices: list[int]) -> tuple[dict[str, Any], tuple[int, int]]:
        chosen = [self.train_features[i] for i in indices]
        packed = pack_features(chosen, MAX_LENGTH, self.data.pad_id)
        labels = segment_labels(chosen, self.data.kind)
        return {"packed": packed, "labels": labels}, tuple(packed.input_ids.shape[:2])


def build_variant(name: str, folder: str, data: Data, workload: Workload, backend: str, work_dir: Path):
    """A change behind a flag (``ours-packed``, ``ours-compiled``), or any system of speed_systems.py."""
    if name == PACKED:
        return PackedPromptSystem(folder, data, workload)
    if name == COMPILED:  # its first rounds pay the start-up
        cold_compile_start(work_dir)
        return PromptSystem(folder, data, workload, compile_backend=backend)
    return build_system(name, folder, data, workload)
