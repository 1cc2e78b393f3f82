"""benchmarks/speed_gpu.py, the GPU table's script, dry-run on the CPU with its toy shapes: what the borrowed
machine will run is the same code, so a failure here is one that would otherwise cost device time. The full
shapes are checked by their parameter counts (built on the meta device, no memory)."""

from __future__ import annotations

import json

import pytest
import torch
from test_smoke import load_benchmark


def test_full_shapes_are_bert_large_and_llama_3_2_1b():
    from transformers import AutoModel

    gpu = load_benchmark("speed_gpu")
    counts = {}
    for name in ("bert-large", "llama-1b"):
        config = gpu.shape_config(name, 30522, 0)
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        counts[name] = sum(p.numel() for p in model.parameters())
    # BERT-large: 335 M with its 30,522-token vocabulary and pooler (the published count)
    assert counts["bert-large"] == pytest.approx(335.1e6, rel=0.005)
    # Llama-3.2-1B's 16 layers (973 M) plus a 30,522 x 2048 embedding instead of its 128,256 x 2048 one
    assert counts["llama-1b"] == pytest.approx(973.1e6 + 30522 * 2048, rel=0.005)


def test_dry_run_measures_every_system_on_both_shapes_and_renders(data_root, tmp_path, capsys):
    gpu = load_benchmark("speed_gpu")
    gpu.main(["--device", "cpu", "--smoke", "--systems", "ours", "ours-bf16", "--data-root", str(data_root),
              "--out", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "speed_gpu.json").read_text())
    assert [s["shape"] for s in result["shapes"]] == ["bert-large-smoke", "llama-1b-smoke"]
    for entry in result["shapes"]:
        assert entry["systems"] == ["ours", "ours-bf16"] and entry["train_examples"] == 16
        for mode in ("train", "infer"):
            rounds = entry["rounds"][mode]
            ratio = rounds["ours"][0]["examples_per_second"] / rounds["ours-bf16"][0]["examples_per_second"]
            assert entry["summary"][mode]["ours-bf16"]["ours_speedup"] == pytest.approx(ratio)
            assert entry["peak_extra_bytes"][mode] == {}  # accelerator memory only
        fp32, bf16 = entry["weights_bytes"]["ours"], entry["weights_bytes"]["ours-bf16"]
        assert 0.5 < bf16 / fp32 < 0.6  # the backbone halves; prefix and head stay fp32
    table = capsys.readouterr().out
    assert "#### llama-1b-smoke: 2 layers x 32" in table and "| ours, backbone stored in bf16" in table


def test_device_systems_are_the_compared_ones(tiny_model, data_root):
    systems = load_benchmark("speed_systems")
    with pytest.raises(ValueError, match="on cuda the systems are"):
        systems.build_system("peft-our-batching", tiny_model, None, None, device="cuda")
