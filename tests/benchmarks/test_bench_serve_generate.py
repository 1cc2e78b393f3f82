"""Smoke run of benchmarks/bench_serve_generate.py on a tiny random GQA Llama: every scenario produces numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "generative"))

from generative_tiny import tiny_causal_lm, tiny_tokenizer  # noqa: E402


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_serve_generate", REPO / "benchmarks" / "bench_serve_generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generation_load_test_runs_every_scenario(tmp_path) -> None:
    tiny_causal_lm("llama").save_pretrained(tmp_path / "llama")
    tiny_tokenizer().save_pretrained(tmp_path / "llama")
    bench = load_benchmark()
    args = bench.parse_args(
        ["--model", str(tmp_path / "llama"), "--rounds", "1", "--requests", "4", "--concurrency", "2",
         "--max-new-tokens", "4", "--prefix-length", "4", "--startup-timeout", "120"]
    )  # fmt: skip
    summary = bench.run(args)
    assert set(summary["scenarios"]) == set(bench.SCENARIOS)
    for scenario in summary["scenarios"].values():
        assert scenario["tokens"] > 0 and scenario["tokens_per_second"] > 0 and scenario["ttft_p50_ms"] > 0
    memory = summary["memory"]
    assert memory["backbone_plus_prefixes_bytes"] == memory["backbone_bytes"] + memory["prefix_bytes"]
    assert (
        memory["prefix_bytes"] == 4 * 4 * 2 * 2 * 2 * 8 * 4
    )  # tasks x P x layers x (k, v) x kv heads x d x fp32
    assert summary["mixed_vs_one_prefix"] > 0


def test_the_decoder_ab_runs_every_variant(tmp_path) -> None:
    tiny_causal_lm("llama").save_pretrained(tmp_path / "llama")
    tiny_tokenizer().save_pretrained(tmp_path / "llama")
    spec = importlib.util.spec_from_file_location(
        "bench_generate_decoder", REPO / "benchmarks" / "bench_generate_decoder.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.run(
        bench.parse_args(["--model", str(tmp_path / "llama"), "--rounds", "1", "--steps", "3"])
    )
    assert set(summary["tokens_per_second"]) == set(bench.VARIANTS)
    assert all(rate > 0 for rate in summary["tokens_per_second"].values())
    assert summary["rounds"] == 1 and summary["seeded_vs_generate_one"] > 0
