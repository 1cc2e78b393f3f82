"""Generation for generative tasks: left-padded batches, greedy decoding, caches, EOS handling."""

from __future__ import annotations

import pytest
import torch
from generative_tiny import EOS, FAMILIES, QA_ROWS, prompt_model, tiny_causal_lm, tiny_tokenizer, write_jsonl

from ptuning.core.compilation import CompileStats, compile_backbone
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.generation import (
    ContinuousDecoder,
    SamplingParams,
    Sequence,
    decode_until_eos,
    generate_task_outputs,
    generate_texts,
)
from ptuning.tasks.generative import CausalLmTask

PROMPTS = [[4, 5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16], [17]]


def manual_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding by full forward passes: the reference that generate() must reproduce."""
    ids = torch.tensor([prompt])
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(ids).logits[0, -1].argmax())
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new


def generate_ids(model, prompts, batch_size, steps=6, **kwargs) -> list[list[int]]:
    """Raw new token ids of generate_texts' batching (via a tokenizer whose decode returns the ids)."""

    class IdsTokenizer:
        eos_token_id, pad_token_id = 10_000, 0  # an EOS never generated, so every row runs ``steps`` tokens

        def decode(self, ids, skip_special_tokens):
            return " ".join(map(str, ids))

    texts = generate_texts(model, IdsTokenizer(), prompts, batch_size, steps, **kwargs)
    return [[int(t) for t in text.split()] for text in texts]


def backbone_positions(model, prompts, batch_size, steps=6) -> list[list[int]]:
    """The position ids the backbone gave each row's tokens in ``generate_ids``: the prompt's real tokens, then
    each new token fed back (all but the last); one list per row, in generation order."""
    calls = []  # (position_ids, attention_mask) of each backbone forward
    hook = model.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((kwargs["position_ids"], kwargs["attention_mask"])),
        with_kwargs=True,
    )
    try:
        generate_ids(model, prompts, batch_size, steps)
    finally:
        hook.remove()
    rows = []
    for start in range(0, len(calls), steps):  # per batch: the prompts' forward, then one per token fed back
        (first, mask), *after = calls[start : start + steps]
        real = mask[:, -first.shape[1] :].bool()  # the prompts' columns (a prefix may lead the mask)
        for row in range(first.shape[0]):
            rows.append(first[row][real[row]].tolist() + [int(positions[row, 0]) for positions, _ in after])
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batches_generate_what_single_prompts_generate(family) -> None:
    model = prompt_model(family)
    batched = generate_ids(model, PROMPTS, batch_size=4)
    single = [generate_ids(model, [prompt], batch_size=1)[0] for prompt in PROMPTS]
    assert batched == single


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_equals_a_manual_argmax_loop(family) -> None:
    model = prompt_model(family)
    generated = generate_ids(model, PROMPTS, batch_size=2)
    assert generated == [manual_greedy(model, prompt, 6) for prompt in PROMPTS]


def test_a_shift_mode_prefix_generates_by_the_default_greedy_path() -> None:
    """PEFT's numbering (real tokens at P..P+T-1, what an imported PEFT prefix keeps): greedy eval and predict
    decode it (generate_texts' ContinuousDecoder), continuing that numbering, instead of refusing."""
    model = PromptModel(
        tiny_causal_lm("llama"),
        "ptuning-v2",
        PrefixConfig(prefix_length=4, dropout=0.0, position_mode="shift"),
    )
    model.add_task("t", HeadSpec(HeadKind.CAUSAL_LM))
    model.prefixes["t"].embedding.weight.data.normal_(0.0, 1.0)
    model.eval()
    assert generate_ids(model, PROMPTS, batch_size=2) == [
        manual_greedy(model, prompt, 6) for prompt in PROMPTS
    ]
    # the tokens barely depend on the numbering (a decoder that numbered these rows from 0 gave the same ones),
    # so it is checked itself: each row's tokens, prompt then answer, are at 4, 5, ... whatever its padding
    rows = backbone_positions(model, PROMPTS, batch_size=2)
    assert sorted(len(row) - 5 for row in rows) == sorted(len(prompt) for prompt in PROMPTS)
    assert all(row == list(range(4, 4 + len(row))) for row in rows), rows


@pytest.mark.parametrize(("method", "mode"), [("ptuning-v2", "shift"), ("prompt-tuning", "keep")])
def test_a_shipped_generation_config_does_not_bend_greedy_decoding(method, mode) -> None:
    """transformers fills unset fields from the model's generation_config: a shipped repetition_penalty (Qwen2.5
    -Instruct: 1.05) or no_repeat_ngram_size bent the texts evaluation scores away from greedy."""
    model = PromptModel(
        tiny_causal_lm("llama"), method, PrefixConfig(prefix_length=4, dropout=0.0, position_mode=mode)
    )
    model.add_task("t", HeadSpec(HeadKind.CAUSAL_LM))
    model.prefixes["t"].embedding.weight.data.normal_(0.0, 1.0)
    model.eval()
    model.backbone.generation_config.repetition_penalty = 3.0
    model.backbone.generation_config.no_repeat_ngram_size = 1
    assert generate_ids(model, PROMPTS, batch_size=2) == [
        manual_greedy(model, prompt, 6) for prompt in PROMPTS
    ]
    assert model.backbone.generation_config.repetition_penalty == 3.0  # put back afterwards


def test_generate_kwargs_choose_the_stop_ids_and_one_text_per_prompt_is_kept() -> None:
    model = prompt_model("llama")
    # greedy through PromptModel.generate both times (a stop id never generated, then one that is): stopping
    # cannot change the tokens before it
    free = generate_ids(model, PROMPTS[:1], batch_size=1, eos_token_id=[10_000])[0]
    stop = free[2]  # a token this prompt generates third: as a second stop id it ends the answer there
    stopped = generate_ids(model, PROMPTS[:1], batch_size=1, eos_token_id=[10_000, stop])[0]
    assert stopped == free[: free.index(stop)] and len(stopped) < len(free)
    with pytest.raises(ConfigError, match="num_return_sequences must be 1"):
        generate_ids(model, PROMPTS, batch_size=2, num_beams=2, num_return_sequences=2)


def test_a_prompt_and_answer_past_the_position_table_are_refused_naming_the_numbers() -> None:
    model = prompt_model("gpt2")  # a learned table of 128 positions
    with pytest.raises(
        ConfigError, match=r"longest prompt \(120 tokens\) \+ max_new_tokens \(10\) - 1 exceed .* 128"
    ):
        generate_ids(model, [[4] * 120], batch_size=1, steps=10)
    # 119 + 10 fits exactly: the last new token is never fed back, so it takes no position (it was refused)
    assert len(generate_ids(model, [[4] * 119], batch_size=1, steps=10)[0]) == 10
    assert len(generate_ids(model, [[4] * 119], batch_size=1, steps=10, num_beams=2)[0]) == 10


def test_the_position_check_counts_the_requested_tasks_own_shifted_prefix() -> None:
    """Under shift each task's tokens start after its own prefix: the check counted the model-wide prefix
    config's length (the last task added), and a task with a longer prefix reached an IndexError."""
    config = PrefixConfig(prefix_length=8, position_mode="shift")
    model = PromptModel(tiny_causal_lm("gpt2"), "ptuning-v2", config)  # 128 learned positions
    model.add_task("long", HeadSpec(HeadKind.CAUSAL_LM))
    model.prefix_config = PrefixConfig(prefix_length=3, position_mode="shift")
    model.add_task("short", HeadSpec(HeadKind.CAUSAL_LM))
    model.eval()
    prompt = [4] * 116  # 8 + 116 + 6 - 1 = 129 positions for "long", 124 for "short"
    for path in ({}, {"num_beams": 2}):
        with pytest.raises(ConfigError, match=r"116 tokens\) \+ 8 prefix slots"):
            generate_ids(model, [prompt], batch_size=1, task="long", **path)
        assert len(generate_ids(model, [prompt], batch_size=1, task="short", **path)[0]) == 6
    with pytest.raises(ConfigError, match=r"116 tokens \+ 8 prefix positions"):
        ContinuousDecoder(model, tiny_tokenizer()).run(
            [Sequence(prompt, "long", SamplingParams(max_new_tokens=6))]
        )


def test_the_prefix_changes_what_is_generated() -> None:
    model = prompt_model("llama")
    with_prefix = generate_ids(model, PROMPTS, batch_size=4)
    model.prefixes["t"].embedding.weight.data.zero_()  # zero keys and values: a prefix that only dilutes
    assert generate_ids(model, PROMPTS, batch_size=4) != with_prefix


@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_generates_what_the_dynamic_cache_generates(family) -> None:
    model = prompt_model(family)
    dynamic = generate_ids(model, PROMPTS, batch_size=4)
    assert generate_ids(model, PROMPTS, batch_size=4, cache_implementation="static") == dynamic


def test_generation_runs_in_eval_mode_and_restores_training_mode() -> None:
    model = prompt_model("llama", dropout=0.9)
    expected = generate_ids(model, PROMPTS, batch_size=4)
    model.train()
    assert generate_ids(model, PROMPTS, batch_size=4) == expected  # no prefix dropout while decoding
    assert model.training


def test_decoding_stops_at_the_first_eos_and_drops_special_tokens() -> None:
    tokenizer = tiny_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(["<s>", "paris", "rome", "</s>", "madrid", "</s>"])
    assert decode_until_eos(tokenizer, ids, EOS) == "paris rome"
    assert decode_until_eos(tokenizer, ids[:3], EOS) == "paris rome"


def test_task_generate_outputs_start_from_the_prompt_tokens_only(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task = CausalLmTask(max_new_tokens=3)
    examples, _ = task.read(str(write_jsonl(tmp_path / "dev.jsonl", QA_ROWS)), "dev")
    features, _ = task.featurize(examples, tokenizer, max_length=64)
    model = prompt_model("gpt2")
    outputs = generate_task_outputs(task, model, tokenizer, features, batch_size=3)
    for feature, output in zip(features, outputs, strict=True):
        prompt = feature["input_ids"][: feature["prompt_length"]]
        new = manual_greedy(model, prompt, 3)
        expected = decode_until_eos(tokenizer, new, EOS)
        assert output == expected
    scores = task.score(examples, features, outputs)
    assert set(scores) == {"rouge1", "rouge2", "rougeL", "bleu4", "exact_match"}
    decoded = task.decode(examples, features, outputs)
    assert decoded[0]["references"] == ["paris"] and decoded[0]["prediction"] == outputs[0]


def test_a_compiled_backbone_decodes_eagerly_without_compiling_a_graph_per_length() -> None:
    """Training and scoring graphs stay compiled; decoding lengths would only recompile to the same tokens."""
    eager = prompt_model("gpt2")
    compiled = prompt_model("gpt2")
    compiled.load_state_dict(eager.state_dict())
    compile_backbone(compiled, backend="eager")  # Dynamo tracing only: fast, and it counts graphs alike
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    before = CompileStats.now()
    tokens = generate_ids(compiled, prompts, 2)
    assert CompileStats.now().since(before).graphs == 0
    assert tokens == generate_ids(eager, prompts, 2)
    with torch.no_grad():  # outside decoding the backbone is still compiled
        compiled(torch.tensor([prompts[0]]), task="t")
    assert CompileStats.now().since(before).graphs > 0


@pytest.mark.parametrize("method", ["finetune", "linear-probe"])
def test_a_model_without_prefixes_checks_its_positions_without_a_prefix(method) -> None:
    """Its tasks name a prefix that was never built: the task's own count raised KeyError instead of 0."""
    model = PromptModel(tiny_causal_lm("gpt2"), method, PrefixConfig(prefix_length=4))
    model.add_task("t", HeadSpec(HeadKind.CAUSAL_LM))
    assert model.task_prefix_positions("t") == 0
    assert len(generate_ids(model.eval(), [[4] * 119], batch_size=1, steps=10)[0]) == 10
