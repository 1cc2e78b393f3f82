"""Scoring a generative task that samples (``generate_kwargs`` with ``do_sample``): each prompt gets one text,
whatever shares its batch, whatever ran before; torch's global random state is left alone.

Sampled texts drew from torch's global generator in left-padded batches: a prompt's text changed with the batch
size, its batch-mates, their order and the random state training had used up, so the best checkpoint was chosen
on noise and ``ptuning eval`` never reproduced the dev score.
"""

from __future__ import annotations

import random

import pytest
import torch
from generative_tiny import (
    QA_ROWS,
    SPECIALS,
    prompt_model,
    tiny_causal_lm,
    tiny_tokenizer,
    vocab_size,
    write_jsonl,
)

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.generation import SamplingParams, generate_task_outputs, generate_texts
from ptuning.generation.sampling import choose_token
from ptuning.generation.texts import continuous_params
from ptuning.tasks.generative import CausalLmTask
from ptuning.tasks.registry import get_task

NEW_TOKENS = 6
# continuous decoder: temperature + top-p (top-k 50); generate, one prompt at a time: a repetition penalty
ON_THE_DECODER = {"do_sample": True, "temperature": 1.5, "top_p": 0.95}
THROUGH_GENERATE = {"do_sample": True, "temperature": 1.5, "repetition_penalty": 1.3}


def random_prompts(count: int = 6) -> list[list[int]]:
    """Prompts of 2 to 8 ordinary tokens (different lengths, so batches are padded)."""
    rng = random.Random(0)
    return [
        [rng.randrange(len(SPECIALS), vocab_size()) for _ in range(rng.randint(2, 8))] for _ in range(count)
    ]


def deep_model() -> PromptModel:
    model = prompt_model("llama")
    with torch.no_grad():  # a prefix that visibly moves the answers
        for parameter in model.prefixes.parameters():
            parameter.normal_(0, 1.0)
    return model


def prompt_tuning_model() -> PromptModel:
    """Shallow prompt tuning: never on the continuous decoder, so sampling goes through generate."""
    model = PromptModel(tiny_causal_lm("llama"), "prompt-tuning", PrefixConfig(prefix_length=4))
    model.add_task("t", HeadSpec(HeadKind.CAUSAL_LM))
    return model.eval()


CASES = [
    pytest.param(deep_model, ON_THE_DECODER, id="decoder"),
    pytest.param(deep_model, THROUGH_GENERATE, id="generate-penalty"),
    pytest.param(prompt_tuning_model, ON_THE_DECODER, id="generate-prompt-tuning"),
]


@pytest.mark.parametrize(("build", "settings"), CASES)
def test_a_sampled_prompt_gets_the_same_text_alone_in_any_batch_in_any_order_and_twice(
    build, settings
) -> None:
    model, tokenizer, prompts = build(), tiny_tokenizer(), random_prompts()

    def texts(prompts: list[list[int]], batch_size: int) -> list[str]:
        return generate_texts(model, tokenizer, prompts, batch_size, NEW_TOKENS, task="t", **settings)

    whole = texts(prompts, len(prompts))
    assert [texts([prompt], 1)[0] for prompt in prompts] == whole  # each alone
    for batch_size in (1, 2, 3, len(prompts)):
        assert texts(prompts, batch_size) == whole, f"batch size {batch_size}"
    order = [3, 0, 5, 1, 4, 2]
    assert texts([prompts[i] for i in order], 3) == [
        whole[i] for i in order
    ]  # other batch-mates, other order
    torch.manual_seed(1234)  # whatever training left in the global generator
    assert texts(prompts, 2) == whole
    greedy = generate_texts(model, tokenizer, prompts, 3, NEW_TOKENS, task="t")
    assert sum(a != b for a, b in zip(whole, greedy, strict=True)) >= len(prompts) // 2  # it does sample


@pytest.mark.parametrize(("build", "settings"), CASES)
def test_sampled_scoring_leaves_the_global_random_state_to_training(build, settings) -> None:
    model, tokenizer = build(), tiny_tokenizer()
    before = torch.get_rng_state()
    generate_texts(model, tokenizer, random_prompts(), 3, NEW_TOKENS, task="t", **settings)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_sampling_task_scores_the_same_texts_at_every_evaluation_batch_size(tmp_path) -> None:
    """What training's evaluation, ``ptuning eval`` and ``predict`` call, with the task's own options."""
    task = CausalLmTask(max_new_tokens=NEW_TOKENS, generate_kwargs={"do_sample": True, "top_p": 0.9})
    tokenizer = tiny_tokenizer()
    examples, _ = task.read(str(write_jsonl(tmp_path / "dev.jsonl", QA_ROWS)), "dev")
    features, _ = task.featurize(examples, tokenizer, max_length=64)
    model = deep_model()
    outputs = [generate_task_outputs(task, model, tokenizer, features, size) for size in (3, 1, 4, 3)]
    assert all(texts == outputs[0] for texts in outputs)
    assert outputs[0] != generate_task_outputs(
        CausalLmTask(max_new_tokens=NEW_TOKENS), model, tokenizer, features, 4
    )


def test_sampling_kwargs_reach_the_decoder_with_generates_defaults() -> None:
    """Unset, temperature 1 and top-k 50 as ``generate`` samples; a setting only ``generate`` applies: None."""
    assert continuous_params({"do_sample": True}, 5) == SamplingParams(5, 1.0, 1.0, top_k=50)
    assert continuous_params({"do_sample": True, "top_k": 0, "top_p": 0.8, "temperature": 0.7}, 5) == (
        SamplingParams(5, 0.7, 0.8, top_k=0)
    )
    assert continuous_params({}, 5) == SamplingParams(5)  # greedy
    assert continuous_params({"do_sample": True, "num_beams": 2}, 5) is None
    assert continuous_params({"do_sample": True, "repetition_penalty": 1.2}, 5) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0}, r"generate_kwargs temperature must be > 0 with do_sample"),
        ({"top_p": 1.5}, r"generate_kwargs top_p must be in \(0, 1\], got 1.5"),
        ({"top_k": "5"}, r"generate_kwargs top_k must be a number, got '5'"),
        ({"top_k": 2.5}, r"generate_kwargs top_k must be a whole number >= 0"),
    ],
)
def test_sampling_settings_the_decoder_cannot_take_are_one_line_errors(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        continuous_params({"do_sample": True, **settings}, 5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0}, r"generate_kwargs temperature must be > 0 with do_sample .*got 0$"),
        ({"temperature": float("nan")}, r"generate_kwargs temperature must be > 0"),
        ({"top_p": 1.5}, r"generate_kwargs top_p must be in \(0, 1\], got 1.5"),
        ({"top_k": "5"}, r"generate_kwargs top_k must be a whole number >= 0 .*got '5'"),
        ({"top_k": 2.5, "num_beams": 2}, r"generate_kwargs top_k must be a whole number >= 0"),
    ],
)
def test_sampling_settings_decoding_would_refuse_are_refused_when_the_task_is_built(
    settings, message
) -> None:
    """Not at the first evaluation, after an epoch of training (beam sampling included: generate refuses
    them too)."""
    with pytest.raises(ConfigError, match=message):
        get_task("causal-lm", generate_kwargs={"do_sample": True, **settings})
    get_task("causal-lm", generate_kwargs={"do_sample": False, **settings})  # greedy ignores them


@pytest.mark.parametrize("eos", ["</s>", [], [2, -1], True, [2.0]])
def test_stop_ids_that_are_not_token_ids_are_refused_when_the_task_is_built(eos) -> None:
    with pytest.raises(
        ConfigError, match=r"generate_kwargs eos_token_id must be a token id or a list of them"
    ):
        get_task("causal-lm", generate_kwargs={"eos_token_id": eos})
    get_task("causal-lm", generate_kwargs={"eos_token_id": [2, 5]})


def test_top_k_samples_among_the_k_most_likely_tokens_only() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, 2.9, -1.0])
    chosen = set()
    for seed in range(200):
        generator = torch.Generator().manual_seed(seed)
        chosen.add(choose_token(logits, SamplingParams(temperature=5.0, top_k=2), generator))
    assert chosen == {1, 3}
    assert choose_token(logits, SamplingParams(temperature=5.0, top_k=1), torch.Generator()) == 1
