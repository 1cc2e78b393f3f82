"""The GEMM yardstick's size travels with its rate: a CPU without bf16 instructions measures the bf16 rate at
512^3 (a 2048^3 product takes over a minute there), and the rendered tables must say so, not "2048^3"."""

from __future__ import annotations

import json

import pytest
from test_smoke import REPO, load_benchmark

THROUGHPUT = REPO / "benchmarks/results/speed/throughput-sst2-minilm.json"
PROFILE = REPO / "benchmarks/results/speed/profile-sst2-minilm.json"
WORK = REPO / "benchmarks/results/speed/work-sst2-minilm.json"
MIXED = {"fp32": 2048, "bf16": 512}


@pytest.mark.parametrize("bf16_instructions, bf16_size", [(True, 2048), (False, 512)])
def test_the_bf16_yardstick_is_smaller_where_the_cpu_emulates_bf16(monkeypatch, bf16_instructions, bf16_size):
    flops = load_benchmark("speed_flops")
    monkeypatch.setattr(flops, "native_bf16", lambda device: bf16_instructions)
    assert flops.gemm_sizes() == {"fp32": 2048, "bf16": bf16_size}


def test_sizes_are_described_as_recorded_and_older_files_as_2048() -> None:
    flops = load_benchmark("speed_flops")
    assert flops.describe_gemm_sizes(MIXED) == "fp32 2048^3, bf16 512^3"
    assert flops.describe_gemm_sizes({"fp32": 2048, "bf16": 2048}) == "2048^3"
    assert flops.describe_gemm_sizes(None) == "2048^3"


def test_throughput_profile_and_work_tables_name_the_recorded_sizes() -> None:
    throughput = json.loads(THROUGHPUT.read_text())
    profile = json.loads(PROFILE.read_text())
    assert "gemm_sizes" not in throughput and "gemm_sizes" not in profile  # files from before the record
    render_throughput = load_benchmark("speed_throughput").render_throughput
    render_profile = load_benchmark("speed_profile").render_profile
    render_work = load_benchmark("speed_work").render_work
    work = json.loads(WORK.read_text())

    assert "GEMM (2048^3, median of the rounds)" in "\n".join(render_throughput(throughput))
    assert "GEMM 2048^3: fp32" in "\n".join(render_profile(profile))
    assert "GEMM references (2048^3) fp32" in "\n".join(render_work(work, throughput))

    throughput["gemm_sizes"] = profile["gemm_sizes"] = MIXED
    assert "GEMM (fp32 2048^3, bf16 512^3, median of the rounds)" in "\n".join(render_throughput(throughput))
    assert "GEMM fp32 2048^3, bf16 512^3: fp32" in "\n".join(render_profile(profile))
    assert "GEMM references (fp32 2048^3, bf16 512^3) fp32" in "\n".join(render_work(work, throughput))
