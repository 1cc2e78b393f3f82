"""Smoke runs of benchmarks/speed_profile.py on a 2-layer random BERT: every change (ours, bf16, packed,
compiled) is profiled on SST-2 and CoNLL-2003 shapes with its GEMM share, time outside GEMMs, top non-GEMM
ops and both rates, and the table renders new and older result files. ``torch.compile`` runs with the
``eager`` backend (Dynamo traces, no kernels are built) to stay within seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_smoke import REPO, load_benchmark
from test_speed_packing_smoke import write_data

CHANGES = ["ours", "ours-bf16", "ours-packed", "ours-compiled"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("profile-data")
    write_data(root)
    return root


@pytest.mark.parametrize("task", ["sst2", "conll2003"])
def test_profile_covers_every_change_with_gemm_share_and_rates(task, tiny_model, data_root, tmp_path) -> None:
    profile = load_benchmark("speed_profile")
    results = tmp_path / "results"
    argv = ["--smoke", tiny_model, "--smoke-task", task, "--backend", "eager", "--threads", "1"]
    argv += ["--data-root", str(data_root), "--results-dir", str(results), "--work-dir", str(tmp_path / "w")]

    assert profile.main([*argv, "--systems", *CHANGES]) == 0

    result = json.loads((results / "profile-smoke.json").read_text())
    assert result["workload"]["task"] == task and list(result["systems"]) == CHANGES
    assert result["gemm_gflops"]["fp32"] > 0 and result["gemm_gflops"]["bf16"] > 0
    for name, entry in result["systems"].items():
        total = sum(entry["breakdown_ms_per_step"].values())
        assert entry["breakdown_ms_per_step"]["forward|GEMM"] > 0, name
        assert entry["gemm_ms_per_step"] + entry["outside_gemm_ms_per_step"] == pytest.approx(total)
        assert entry["gemm_share"] == pytest.approx(entry["gemm_ms_per_step"] / total)
        assert entry["ms_per_step_unprofiled"] > 0 and entry["gflops_per_second_unprofiled"] > 0
        assert entry["gemm_op_gflops_per_second"] > 0
        ops = entry["top_non_gemm_ops"]
        assert 0 < len(ops) <= profile.TOP_OPS
        assert all(op["op"] not in profile.GEMM_OPS for op in ops)
        assert [op["ms_per_step"] for op in ops] == sorted((op["ms_per_step"] for op in ops), reverse=True)
    # the same batches of examples; packed into rows they take no more token slots than padded to the longest
    packed, grouped = result["systems"]["ours-packed"], result["systems"]["ours"]
    assert packed["steps"] == grouped["steps"]
    assert 0 < packed["token_slots_per_step"] <= grouped["token_slots_per_step"]
    compiled = result["systems"]["ours-compiled"]["compile"]
    assert compiled["backend"] == "eager" and compiled["graphs_at_warmup"] >= 1
    assert compiled["graphs_after_warmup"] == 0  # the profile holds no compiling

    table = "\n".join(profile.render_profile(result))
    assert "| ours + --pack-sequences (rows of 128) |" in table
    assert "| ours + --compile (profiled after its warm-up) |" in table
    assert "`--compile` start-up (not in the profile)" in table and "not measured" not in table


def test_older_profile_files_still_render() -> None:
    """A result file from before the per-change profile (no unprofiled step, GEMM-op rate or top ops)."""
    profile = load_benchmark("speed_profile")
    result = json.loads((REPO / "benchmarks/results/speed/profile-sst2-minilm.json").read_text())
    for entry in result["systems"].values():
        for field in ("ms_per_step_unprofiled", "gemm_op_gflops_per_second", "top_non_gemm_ops"):
            entry.pop(field, None)
    table = "\n".join(profile.render_profile(result))
    ours = next(line for line in table.splitlines() if line.startswith("| ours (sdpa"))
    assert "(profiled)" in ours and "not measured" in ours
    gemm = sum(
        v for k, v in result["systems"]["ours"]["breakdown_ms_per_step"].items() if k.endswith("|GEMM")
    )
    assert f"| {gemm:.1f} (" in ours


def test_step_flops_parts_split_the_projections_from_attention() -> None:
    flops = load_benchmark("speed_flops")
    shape = flops.Shape(layers=2, hidden=8, intermediate=16)
    projections, attention = flops.step_flops_parts(shape, [(2, 4)], 3, True)
    # per layer and token 2 x (4 x 64 + 2 x 128) = 1024, x 2 layers x 8 tokens, doubled for backward
    assert projections == 2 * 1024 * 2 * 8
    assert attention == 3 * 2 * 4 * 2 * 4 * (3 + 4) * 8
    assert flops.step_flops(shape, [(2, 4)], 3, True) == projections + attention
