"""Error messages give advice the caller can follow: no position_mode for prompt tuning (which has none), the
input's length for library callers as for the command line, and the public argument's name."""

from __future__ import annotations

import pytest
import torch
from core_tiny import random_ids, tiny_backbone

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel


def classifier(method: str, prefix_config: PrefixConfig | None) -> PromptModel:
    model = PromptModel(tiny_backbone("bert"), method, prefix_config).eval()  # 64 positions
    model.add_task("t", HeadSpec("classification", ["a", "b"]))
    return model


@pytest.mark.parametrize(
    ("method", "prefix_config", "length", "message"),
    [
        (
            "prompt-tuning",
            PrefixConfig(prefix_length=4),
            61,
            "prefix + input needs 65 positions but bert has 64; shorten the input (max_length) or the prefix "
            "(prefix_length)",
        ),
        (
            "ptuning-v2",
            PrefixConfig(prefix_length=4, position_mode="shift"),
            61,
            "prefix + input needs 65 positions but bert has 64; shorten the input (max_length) or the prefix "
            "(prefix_length), or use position_mode='keep'",
        ),
        (
            "linear-probe",
            None,
            65,
            "input needs 65 positions but bert has 64; shorten the input (max_length)",
        ),
    ],
)
def test_a_too_long_input_gets_advice_this_method_can_follow(
    method: str, prefix_config: PrefixConfig | None, length: int, message: str
) -> None:
    model = classifier(method, prefix_config)
    with torch.no_grad(), pytest.raises(ConfigError) as raised:
        model(input_ids=random_ids(1, length))
    assert str(raised.value) == message


def test_row_prefixes_given_as_a_string_is_refused_by_its_own_name() -> None:
    model = classifier("ptuning-v2", PrefixConfig(prefix_length=2))
    with pytest.raises(ConfigError) as raised:
        model(input_ids=random_ids(4, 5), row_prefixes="tttt")
    assert str(raised.value) == (
        "row_prefixes must be a list with one prefix name per row, not the string 'tttt'"
    )
