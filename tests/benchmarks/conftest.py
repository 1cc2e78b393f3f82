"""Fixtures the benchmark smoke tests share: a tiny random BERT saved as a model folder, and a tiny SST-2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tiny_models import save_tiny_bert

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the benchmark scripts are a folder of sibling modules, not a package
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer random BERT (hidden 32) with the packaged MiniLM tokenizer, saved as a model folder with its
    pooler (``--pooling pooler`` reads it)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), dropout=0.1, pooler=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """An SST-2 folder (train.tsv, dev.tsv) of 16 short labelled sentences."""
    root = tmp_path_factory.mktemp("data")
    (root / "sst2").mkdir()
    rows = ["label\tsentence"]
    rows += [
        f"{i % 2}\t{'a fine' if i % 2 else 'a dull'} film {'truly ' * (i % 4)}number {i}" for i in range(16)
    ]
    for name in ("train.tsv", "dev.tsv"):
        (root / "sst2" / name).write_text("\n".join(rows) + "\n")
    return root
