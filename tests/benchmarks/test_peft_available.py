"""Which PEFT the speed benchmarks run: PEFT 0.21 passes the prefix as ``past_key_values``, which transformers
5.24 renamed to ``cache``; PEFT 0.22 passes the name the model takes. A wrong answer either skips the PEFT
baselines where they run or starts them where every forward raises."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
from test_smoke import load_benchmark
from transformers import BertModel


@pytest.mark.parametrize(
    ("peft_version", "takes_past_key_values", "runs"),
    [
        (None, True, False),  # not installed
        ("0.21.2", True, True),  # transformers <= 5.23
        ("0.21.2", False, False),  # transformers >= 5.24: "Model does not support past key values"
        ("0.22.0", False, True),
        ("0.22.0", True, True),
    ],
)
def test_peft_runs_where_it_passes_the_prefix_under_the_name_the_model_takes(
    monkeypatch, peft_version, takes_past_key_values, runs
):
    common = load_benchmark("speed_common")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (real_find_spec("json") if peft_version else None) if name == "peft" else real_find_spec(name, *a)
        ),
    )
    monkeypatch.setattr(importlib.metadata, "version", lambda name: peft_version)

    def forward(self, input_ids=None, past_key_values=None): ...

    def forward_5_24(self, input_ids=None, cache=None, **kwargs): ...

    monkeypatch.setattr(BertModel, "forward", forward if takes_past_key_values else forward_5_24)
    assert common.peft_available() is runs
