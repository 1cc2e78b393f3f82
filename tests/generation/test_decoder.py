"""Continuous batching: mixed prefixes, rows joining and leaving, equal to each prompt decoded alone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from generation_tiny import PROMPTS, TASK_LENGTHS, alone, multi_prefix_model
from generative_tiny import tiny_tokenizer

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel, UnknownNameError
from ptuning.generation import ContinuousDecoder, SamplingParams, Sequence
from ptuning.serve.generate import GenerationLimits, GenerationService

TASKS = list(TASK_LENGTHS)
STEPS = 8


def sequences(steps: int = STEPS, **params) -> list[Sequence]:
    """Every prompt under every task: rows of the same batch carry prefixes of 3, 5 and 8 slots."""
    pairs = [(prompt, task) for prompt in PROMPTS for task in TASKS]
    return [Sequence(prompt, task, SamplingParams(max_new_tokens=steps, **params)) for prompt, task in pairs]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("seed_prefix", [True, False])
@pytest.mark.parametrize("position_mode", ["keep", "shift"])
def test_a_mixed_prefix_batch_decodes_what_each_prompt_decodes_alone(
    family, seed_prefix, position_mode
) -> None:
    """Under "shift" (PEFT's numbering, every causal-LM PEFT adapter's) each row's positions start after its
    own prefix's 3, 5 or 8 slots, as PromptModel.generate numbers them (GPT-2's learned table and Llama's
    rotary both see it)."""
    model = multi_prefix_model(family, position_mode=position_mode)
    decoder = ContinuousDecoder(model, tiny_tokenizer(), seed_prefix=seed_prefix)
    batch = sequences()
    for index, sequence in enumerate(batch):  # rows leave the batch at different steps
        sequence.params = SamplingParams(max_new_tokens=2 + index % 7)
    done = decoder.run(batch)
    expected = [alone(model, s.prefix, s.prompt, s.params.max_new_tokens) for s in done]
    assert [s.tokens for s in done] == expected
    assert {s.finish_reason for s in done} == {"length"} and decoder.rows == []


def test_a_sliding_window_model_keeps_the_whole_prefix_beside_its_window() -> None:
    """Prefixes of 3-8 slots, prompts of 1-7 tokens and 8 new ones against an 8-token window: the prefix travels
    beside every step (seeded into the cache it would slide out of the window; the model keeps it)."""
    model = multi_prefix_model("mistral-window")
    assert model.geometry.sliding_window == 8
    done = ContinuousDecoder(model, tiny_tokenizer()).run(sequences())
    assert [s.tokens for s in done] == [alone(model, s.prefix, s.prompt, STEPS) for s in done]
    with pytest.raises(ConfigError, match="sliding-window"):
        ContinuousDecoder(model, tiny_tokenizer(), seed_prefix=True).run(sequences()[:1])


def test_rows_joining_and_leaving_between_steps_decode_what_they_decode_alone() -> None:
    model = multi_prefix_model("llama")
    decoder = ContinuousDecoder(model, tiny_tokenizer())
    waves = sequences()
    for sequence, steps in zip(waves, [2, 9, 4, 1, 7, 3] * 3, strict=False):
        sequence.params = SamplingParams(max_new_tokens=steps)
    done, step = [], 0
    pending = list(waves)
    while pending or decoder.rows:
        admit, pending = pending[:2], pending[2:]  # two newcomers per step, while others run and finish
        events = decoder.step(admit=admit)
        done += [event.sequence for event in events if event.finished]
        step += 1
    assert step > 3 and len(done) == len(waves)
    for sequence in waves:
        assert sequence.tokens == alone(
            model, sequence.prefix, sequence.prompt, sequence.params.max_new_tokens
        )


def test_a_prefix_on_some_layers_travels_per_step_and_still_matches() -> None:
    model = multi_prefix_model("llama", layers=[1])
    decoder = ContinuousDecoder(model, tiny_tokenizer())
    done = decoder.run(sequences())
    assert [s.tokens for s in done] == [alone(model, s.prefix, s.prompt, STEPS) for s in done]
    with pytest.raises(ConfigError, match="covers every layer"):
        ContinuousDecoder(model, tiny_tokenizer(), seed_prefix=True).run(sequences()[:1])


def test_the_prefix_changes_the_answer() -> None:
    model = multi_prefix_model("llama")
    outputs = {
        task: ContinuousDecoder(model, tiny_tokenizer())
        .run([Sequence(PROMPTS[0], task, SamplingParams(max_new_tokens=STEPS))])[0]
        .tokens
        for task in TASKS
    }
    assert len({tuple(tokens) for tokens in outputs.values()}) == len(TASKS)


def test_a_seeded_sample_is_the_same_alone_and_in_a_mixed_batch() -> None:
    model = multi_prefix_model("llama")
    params = SamplingParams(max_new_tokens=STEPS, temperature=1.5, top_p=0.9, seed=123)
    lone = ContinuousDecoder(model, tiny_tokenizer()).run([Sequence(PROMPTS[1], "mid", params)])[0]
    crowd = sequences(temperature=0.8, seed=7)
    crowd.insert(4, Sequence(PROMPTS[1], "mid", params))
    mixed = ContinuousDecoder(model, tiny_tokenizer()).run(crowd)[4]
    assert mixed.tokens == lone.tokens and mixed.seed == lone.seed == 123
    greedy = ContinuousDecoder(model, tiny_tokenizer()).run([Sequence(PROMPTS[1], "mid")])[0]
    other_seeds = [
        ContinuousDecoder(model, tiny_tokenizer())
        .run([Sequence(PROMPTS[1], "mid", SamplingParams(max_new_tokens=STEPS, temperature=1.5, seed=s))])[0]
        .tokens
        for s in range(4)
    ]
    assert len({tuple(t) for t in other_seeds + [greedy.tokens]}) > 1  # sampling does sample


def test_top_p_keeps_only_the_most_likely_tokens() -> None:
    import torch

    from ptuning.generation.sampling import choose_token

    logits = torch.tensor([0.0, 5.0, 4.9, -3.0])  # tokens 1 and 2 hold ~99 % of the mass
    params = SamplingParams(temperature=1.0, top_p=0.5, seed=0)
    generator, _ = params.generator(torch.device("cpu"))
    assert {choose_token(logits, params, generator) for _ in range(50)} == {1}
    wide = SamplingParams(temperature=1.0, top_p=0.99, seed=0)
    generator, _ = wide.generator(torch.device("cpu"))
    assert {choose_token(logits, wide, generator) for _ in range(200)} == {1, 2}


def test_cancelled_rows_leave_and_the_others_continue() -> None:
    model = multi_prefix_model("llama")
    decoder = ContinuousDecoder(model, tiny_tokenizer())
    batch = sequences(steps=6)[:4]
    decoder.step(admit=batch)
    events = decoder.step(cancel=[batch[1].id])
    assert batch[1].finish_reason == "cancelled" and batch[1] not in decoder.rows
    assert any(event.sequence is batch[1] and event.finished for event in events)
    while decoder.rows:
        decoder.step()
    for sequence in batch[:1] + batch[2:]:
        assert sequence.tokens == alone(model, sequence.prefix, sequence.prompt, 6)


def test_a_row_ends_at_eos_and_its_text_stops_before_it() -> None:
    model = multi_prefix_model("llama")
    tokenizer = tiny_tokenizer()
    free = ContinuousDecoder(model, tokenizer).run([Sequence(PROMPTS[0], "long", SamplingParams(8))])[0]
    eos = free.tokens[3]  # pretend the fourth new token is EOS
    stopped = ContinuousDecoder(model, tokenizer, eos_token_id=eos).run(
        [Sequence(PROMPTS[0], "long", SamplingParams(8)), Sequence(PROMPTS[2], "short", SamplingParams(8))]
    )[0]
    first = free.tokens.index(eos)
    assert stopped.tokens == free.tokens[:first] and stopped.finish_reason == "eos"
    assert stopped.answer == tokenizer.decode(free.tokens[:first], skip_special_tokens=True).strip()


def test_a_stop_string_ends_the_answer_before_it() -> None:
    model = multi_prefix_model("llama")
    tokenizer = tiny_tokenizer()
    free = ContinuousDecoder(model, tokenizer).run([Sequence(PROMPTS[2], "mid", SamplingParams(8))])[0]
    assert free.text == "e e e e e thanks how system"  # the tiny model's greedy answer (seed 0)
    params = SamplingParams(8, stop=("thanks how", "never"))
    cut = ContinuousDecoder(model, tokenizer).run([Sequence(PROMPTS[2], "mid", params)])[0]
    assert cut.finish_reason == "stop" and cut.text == "e e e e e " and cut.answer == "e e e e e"
    assert cut.tokens == free.tokens[:7]  # it stopped as soon as the stop string was complete


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("position_mode", ["keep", "shift"])
def test_greedy_generate_texts_on_the_decoder_equals_the_generate_path(family, position_mode) -> None:
    from ptuning.generation import generate_texts

    model = multi_prefix_model(family, position_mode=position_mode)
    tokenizer = tiny_tokenizer()
    for task in TASKS:
        continuous = generate_texts(model, tokenizer, PROMPTS, batch_size=2, max_new_tokens=7, task=task)
        through_generate = generate_texts(
            model,
            tokenizer,
            PROMPTS,
            batch_size=2,
            max_new_tokens=7,
            task=task,
            cache_implementation="dynamic",
        )
        assert continuous == through_generate and any(continuous)


def test_an_empty_prompt_is_refused_before_it_can_join_a_batch() -> None:
    with pytest.raises(ConfigError, match="at least one token"):
        Sequence([], "short")


def mixed_layer_model() -> PromptModel:
    """The tasks of ``multi_prefix_model`` (prefixes on every layer, seeded into the cache) and two more whose
    prefixes sit on one layer each (travelling beside every step)."""
    model = multi_prefix_model("llama")
    for task, layer in (("top", 1), ("bottom", 0)):
        model.prefix_config = PrefixConfig(prefix_length=4, init_std=1.0, layers=[layer])
        model.add_task(task, HeadSpec(HeadKind.CAUSAL_LM))
    return model.eval()


def test_sequences_whose_prefixes_cover_other_layers_decode_in_turn_as_they_decode_alone() -> None:
    """A row of other layers joining running rows lost its prefix (a seeded batch has no per-step prefix to
    append it to) or failed every row (two per-step prefixes of other layers): such rows now wait their turn."""
    model = mixed_layer_model()
    batch = [
        Sequence(p, t, SamplingParams(max_new_tokens=STEPS))
        for p in PROMPTS
        for t in ("top", TASKS[0], "bottom")
    ]
    done = ContinuousDecoder(model, tiny_tokenizer()).run(batch)
    assert [s.tokens for s in done] == [alone(model, s.prefix, s.prompt, STEPS) for s in done]

    decoder = ContinuousDecoder(model, tiny_tokenizer())
    full, top, full_too = (
        Sequence(PROMPTS[0], t, SamplingParams(max_new_tokens=STEPS)) for t in (TASKS[0], "top", TASKS[1])
    )
    decoder.step(admit=[full])
    assert decoder.admissible([top, full_too]) == [full_too]
    with pytest.raises(ConfigError, match="cover different layers"):
        decoder.step(admit=[top])
    assert (
        full.tokens == alone(model, full.prefix, full.prompt, STEPS)[:1]
    )  # the refused step decoded nothing


def test_the_server_holds_a_sequence_of_other_layers_back_until_the_running_rows_finish() -> None:
    """A checkpoint replaced by one on other layers while its generations still run: the newcomer waits."""
    model = mixed_layer_model()
    service = GenerationService(
        SimpleNamespace(model=model, tokenizer=tiny_tokenizer()), None, GenerationLimits()
    )
    full, top = (Sequence(PROMPTS[1], t, SamplingParams(max_new_tokens=3)) for t in (TASKS[0], "top"))
    events, gone, held = service._step([full, top], set())
    assert [e.sequence for e in events] == [full] and gone == [] and held == [top]
    while service.decoder.rows:
        assert service._step([top], set())[2] == [top]
    service._step([top], set())
    assert service.decoder.rows == [top]


def test_a_newcomer_with_an_unknown_prefix_is_refused_before_the_running_rows_advance() -> None:
    """It was refused in the prefill, after the running rows had taken their token: a library caller that
    caught the error and stepped on had lost that step's events."""
    model = multi_prefix_model("llama")
    decoder = ContinuousDecoder(model, tiny_tokenizer())
    running = Sequence(PROMPTS[0], TASKS[0], SamplingParams(max_new_tokens=STEPS))
    decoder.step(admit=[running])
    with pytest.raises(UnknownNameError, match="unknown prefix 'nope'"):
        decoder.step(admit=[Sequence(PROMPTS[1], "nope", SamplingParams(max_new_tokens=STEPS))])
    assert len(running.tokens) == 1
    while decoder.rows:
        decoder.step()
    assert running.tokens == alone(model, running.prefix, running.prompt, STEPS)
