"""Stop strings: what is cut, and what a stream may show before the answer is decided."""

from __future__ import annotations

import pytest

from ptuning.core.config import ConfigError
from ptuning.generation import SamplingParams, StopStrings


def test_the_text_is_cut_at_the_earliest_stop_string() -> None:
    stops = StopStrings(("END", "\n\n"))
    assert stops.cut("one two\n\nthree END") == ("one two", True)
    assert stops.cut("no stop here") == ("no stop here", False)


def test_a_tail_that_may_become_a_stop_string_is_held_back() -> None:
    stops = StopStrings(("END",))
    assert stops.delta("hello E", final=False) == "hello "
    assert stops.delta("hello EN", final=False) == ""
    assert stops.delta("hello ENx", final=False) == "ENx"  # it did not become one
    assert stops.delta("hello ENxy", final=True) == "y"


def test_an_unfinished_character_is_held_back_until_it_is_complete() -> None:
    stops = StopStrings(())
    assert stops.delta("caf\ufffd", final=False) == "caf"
    assert stops.delta("café", final=False) == "é"


def test_the_longest_held_tail_over_all_stop_strings_is_held() -> None:
    assert StopStrings(("xab", "b")).safe_length("..xa") == 2


@pytest.mark.parametrize(
    "bad",
    [dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(stop=("",))],
)
def test_bad_settings_are_refused(bad) -> None:
    with pytest.raises(ConfigError):
        SamplingParams(**bad)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_a_tiny_temperature_picks_the_best_token_instead_of_failing(top_p) -> None:
    """logits / 1e-40 overflow to inf, and a softmax of infinities is NaN, which multinomial refuses."""
    import torch

    from ptuning.generation.sampling import choose_token

    logits = torch.tensor([3.0, -2.0, 7.5, 7.0, 0.0])
    params = SamplingParams(temperature=1e-40, top_p=top_p, seed=0)
    generator, _ = params.generator(torch.device("cpu"))
    assert [choose_token(logits, params, generator) for _ in range(5)] == [2] * 5
