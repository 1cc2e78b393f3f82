"""Features of generative tasks: where the labels are, how long prompts are cut, how prompts are rendered."""

from __future__ import annotations

import pytest
import torch
from generative_tiny import BOS, EOS, QA_ROWS, prompt_model, tiny_tokenizer, write_jsonl
from tokenizers import processors

from ptuning.core.config import ConfigError
from ptuning.tasks.base import DataError
from ptuning.tasks.collate import IGNORE_INDEX, collate
from ptuning.tasks.generative import CausalLmTask


def read(tmp_path, rows=QA_ROWS, **options):
    task = CausalLmTask(**options)
    examples, _ = task.read(str(write_jsonl(tmp_path / "train.jsonl", rows)), "train")
    return task, examples


def test_labels_are_ignored_on_the_prompt_and_hold_the_response_and_eos(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task, examples = read(tmp_path)
    features, report = task.featurize(examples[:1], tokenizer, max_length=64)
    words = ["what", "is", "the", "capital", "of", "france"]
    prompt = [tokenizer.convert_tokens_to_ids(w) for w in words]
    paris = tokenizer.convert_tokens_to_ids("paris")
    assert features[0]["input_ids"] == prompt + [paris, EOS]
    assert features[0]["labels"] == [IGNORE_INDEX] * 6 + [paris, EOS]
    assert features[0]["prompt_length"] == 6
    assert report.truncated == 0


def test_padding_positions_are_ignored_by_the_collated_labels(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task, examples = read(tmp_path)
    features, _ = task.featurize(examples, tokenizer, max_length=64)
    batch = collate(features, tokenizer.pad_token_id)
    for row, feature in enumerate(features):
        length, start = len(feature["input_ids"]), feature["prompt_length"]
        labels = batch["labels"][row]
        assert (labels[:start] == IGNORE_INDEX).all()
        assert labels[start:length].tolist() == feature["input_ids"][start:]
        assert (labels[length:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].sum() == length


def test_loss_counts_only_response_tokens(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task, examples = read(tmp_path)
    features, _ = task.featurize(examples, tokenizer, max_length=64)
    batch = collate(features, tokenizer.pad_token_id)
    model = prompt_model("llama")
    out = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])
    # next-token cross-entropy over response positions only, computed by hand from the logits
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    chosen = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[chosen], labels[chosen])
    torch.testing.assert_close(out.loss, expected)
    assert int(chosen.sum()) == sum(len(f["input_ids"]) - f["prompt_length"] for f in features)


def test_long_prompts_are_cut_from_the_left_and_reported(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task, examples = read(tmp_path)
    features, report = task.featurize(examples[:2], tokenizer, max_length=5)
    # "what is the capital of france" + "paris" + EOS = 8 tokens -> keep the last 3 prompt tokens
    assert tokenizer.convert_ids_to_tokens(features[0]["input_ids"]) == [
        "capital",
        "of",
        "france",
        "paris",
        "</s>",
    ]
    assert features[0]["prompt_length"] == 3
    assert report.truncated == 2
    assert "2 of 2 prompts" in report.notes[0] and "cut from the left" in report.notes[0]
    assert "6 tokens dropped" in report.notes[0]
    # generation reads the prompt alone (room 4 of 5: both 6-token prompts cut); with room for it, none is
    assert "generation, which reads the prompt alone, cut 2 of them" in report.notes[0]
    _, roomy = task.featurize(examples[:2], tokenizer, max_length=7)
    assert (
        roomy.truncated == 2 and "generation, which reads the prompt alone, cut 0 of them" in roomy.notes[0]
    )
    assert (report.cut_for_generation, roomy.cut_for_generation) == (2, 0)
    assert roomy.truncated_when_scored == 0 and roomy.merge(report).cut_for_generation == 2


def test_eval_counts_the_prompts_decoding_read_cut_not_the_training_inputs_cut(tmp_path) -> None:
    """Dev examples with long gold answers were all reported truncated by ``ptuning eval`` though generation
    read their prompts whole."""
    from ptuning.training.predict import LoadedCheckpoint, score_split

    rows = [{"prompt": "what is the capital of france", "response": "paris " * 12}] * 3
    write_jsonl(tmp_path / "dev.jsonl", rows)
    model = prompt_model("llama")
    loaded = LoadedCheckpoint(model, tiny_tokenizer(), CausalLmTask(max_new_tokens=2), "t", max_length=12)
    scores = score_split(loaded, str(tmp_path), "dev")
    assert scores["examples"] == 3 and scores["truncated"] == 0  # 6 prompt tokens + 2 new fit in 12
    short = LoadedCheckpoint(model, tiny_tokenizer(), CausalLmTask(max_new_tokens=2), "t", max_length=5)
    assert score_split(short, str(tmp_path), "dev")["truncated"] == 3


def test_a_cut_prompt_keeps_the_bos_its_tokenizer_puts_first(tmp_path) -> None:
    """Llama-style tokenizers add BOS; a left cut keeps it at position 0 and drops text after it instead."""
    tokenizer = tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS)]
    )
    task, examples = read(tmp_path)
    features, report = task.featurize(examples[:1], tokenizer, max_length=6)
    # "<s> what is the capital of france" + "paris" + EOS = 9 tokens -> BOS + the last 3 prompt tokens
    expected = ["<s>", "capital", "of", "france", "paris", "</s>"]
    assert tokenizer.convert_ids_to_tokens(features[0]["input_ids"]) == expected
    assert features[0]["prompt_length"] == 4 and features[0]["labels"][:4] == [IGNORE_INDEX] * 4
    assert report.truncated == 1 and "3 tokens dropped" in report.notes[0]


def test_a_cut_chat_prompt_keeps_no_turn_marker_the_tokenizer_does_not_prepend(tmp_path) -> None:
    """SmolLM2 names its turn marker <|im_start|> as BOS without adding it; the tiny template marks turns with
    <s> the same way. A left cut keeps the last tokens, not a marker in front of mid-turn text; where the
    tokenizer itself prepends <s> (Llama 3's <|begin_of_text|>), the cut keeps it."""
    tokenizer = tiny_tokenizer(chat_template=True)
    task, examples = read(tmp_path, chat_template=True)
    # "<s> user : what is the capital of france </s> <s> assistant :" + "paris" + EOS; 6 = 4 prompt tokens
    features, _ = task.featurize(examples[:1], tokenizer, max_length=6)
    assert tokenizer.convert_ids_to_tokens(features[0]["input_ids"]) == [
        "</s>",
        "<s>",
        "assistant",
        ":",
        "paris",
        "</s>",
    ]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS)]
    )
    features, _ = task.featurize(examples[:1], tokenizer, max_length=6)
    assert tokenizer.convert_ids_to_tokens(features[0]["input_ids"]) == [
        "<s>",
        "<s>",
        "assistant",
        ":",
        "paris",
        "</s>",
    ]


def test_a_chat_template_that_refuses_the_conversation_is_one_line_naming_the_row_and_option(
    tmp_path,
) -> None:
    tokenizer = tiny_tokenizer(chat_template=True)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + tokenizer.chat_template
    )
    task, examples = read(tmp_path, chat_template=True, system_prompt="be brief")
    with pytest.raises(
        ConfigError,
        match=r"train\.jsonl, line 1: .*System role not supported; drop the task option system_prompt",
    ):
        task.featurize(examples[:1], tokenizer, max_length=64)


def test_truncation_error_refuses_long_prompts_naming_the_line(tmp_path) -> None:
    task, examples = read(tmp_path, truncation="error")
    with pytest.raises(DataError, match=r"train\.jsonl, line 1: prompt \(6 tokens\)"):
        task.featurize(examples, tiny_tokenizer(), max_length=5)


def test_a_response_longer_than_max_length_keeps_one_prompt_token_and_is_reported(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task, examples = read(tmp_path, rows=[{"prompt": "say", "response": "one two three four five six"}])
    features, report = task.featurize(examples, tokenizer, max_length=4)
    assert tokenizer.convert_ids_to_tokens(features[0]["input_ids"]) == ["say", "one", "two", "three"]
    assert features[0]["labels"][0] == IGNORE_INDEX
    assert any("cut on the right" in note for note in report.notes)


def test_plain_rendering_puts_history_turns_before_the_prompt(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    task, examples = read(tmp_path)
    assert task.render_prompt(examples[2], tokenizer) == "hi\nhello\nhello how are you"


def test_chat_template_renders_history_system_and_generation_prompt(tmp_path) -> None:
    tokenizer = tiny_tokenizer(chat_template=True)
    task, examples = read(tmp_path, chat_template=True, system_prompt="say yes")
    text = task.render_prompt(examples[2], tokenizer)
    assert text == (
        "<s> system : say yes </s> <s> user : hi </s> <s> assistant : hello </s> "
        "<s> user : hello how are you </s> <s> assistant : "
    )
    features, _ = task.featurize(examples[2:3], tokenizer, max_length=64)
    ids = features[0]["input_ids"]
    assert ids[0] == BOS and ids.count(BOS) == 5  # the template's own BOS markers, none added on top
    assert tokenizer.convert_ids_to_tokens(ids[features[0]["prompt_length"] :]) == ["fine", "thanks", "</s>"]


def test_chat_template_without_a_template_is_an_error(tmp_path) -> None:
    task, examples = read(tmp_path, chat_template=True)
    with pytest.raises(ConfigError, match="no chat template"):
        task.featurize(examples, tiny_tokenizer(), max_length=64)


def test_unknown_truncation_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match="truncation must be one of"):
        CausalLmTask(truncation="right")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_new_tokens": 5}, "set the task option max_new_tokens instead"),
        ({"max_length": 40}, "set the task option max_new_tokens instead"),
        ({"stop_strings": ["say"]}, "'stop_strings' is not supported"),
        ({"num_beams": 2, "num_return_sequences": 2}, "'num_return_sequences' is not supported"),
        (["num_beams", 2], "must be a mapping"),
    ],
)
def test_generate_kwargs_that_decoding_would_fail_on_are_refused_when_the_task_is_built(
    settings, message
) -> None:
    """They used to be kept, and failed the run at its first evaluation (a TypeError naming no option)."""
    with pytest.raises(ConfigError, match=message):
        CausalLmTask(generate_kwargs=settings)
    assert CausalLmTask(generate_kwargs={"num_beams": 2, "num_return_sequences": 1}).generate_kwargs == {
        "num_beams": 2,
        "num_return_sequences": 1,
    }


@pytest.mark.parametrize("max_length", [20, 16])
def test_evaluation_generates_from_the_prompt_predict_sees_not_one_cut_for_the_gold_response(
    max_length, monkeypatch
) -> None:
    """The training input keeps max_length - len(response) prompt tokens (one, for a long response): a dev
    score generated from that was computed on another prompt than predict and the server answer."""
    from ptuning.generation.texts import generate_task_outputs

    tokenizer, task = tiny_tokenizer(), CausalLmTask()
    prompt = "what is the capital of france say one two three four five six seven"
    response = "one two three four five six seven eight nine ten red green blue cat dog"
    labelled = {
        "id": 0,
        "source": "x",
        "prompt": prompt,
        "response": response,
        "history": [],
        "references": [response],
    }
    (trained,), _ = task.featurize([labelled], tokenizer, max_length)
    (predicted,), _ = task.featurize([{**labelled, "response": "", "references": []}], tokenizer, max_length)
    deployed = predicted["input_ids"][: predicted["prompt_length"]]
    assert trained["prompt_length"] < len(deployed) and trained["generation_prompt"] == deployed

    seen = []

    class Recorder:  # stands for the model: records the prompts evaluation generates from
        tasks = ()

    import ptuning.generation.texts as texts

    monkeypatch.setattr(
        texts,
        "generate_texts",
        lambda model, tok, prompts, *a, **k: seen.extend(prompts) or [""] * len(prompts),
    )
    generate_task_outputs(task, Recorder(), tokenizer, [trained], 4)
    assert seen == [deployed]


def test_responses_longer_than_generation_may_run_are_counted_and_zero_new_tokens_is_refused() -> None:
    """A memorised 100-token answer scored ROUGE-L 78 at the default 64 new tokens, and nothing said why."""
    rows = [("say the colours", "red green blue cat dog one two"), ("hello", "fine thanks")]
    examples = [
        {"id": i, "source": "x", "prompt": p, "response": r, "history": [], "references": [r]}
        for i, (p, r) in enumerate(rows)
    ]
    _, report = CausalLmTask(max_new_tokens=4).featurize(examples, tiny_tokenizer(), 64)
    assert any(
        "1 of 2 responses are longer than max_new_tokens=4 (up to 7 tokens)" in note for note in report.notes
    )
    _, report = CausalLmTask().featurize(examples, tiny_tokenizer(), 64)
    assert not any("max_new_tokens" in note for note in report.notes)
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1, got 0"):
        CausalLmTask(max_new_tokens=0)


def test_prompts_without_responses_are_reported_as_cut_for_generation_not_for_training() -> None:
    """``ptuning predict`` featurizes prompts alone: its note spoke of responses and training."""
    long = " ".join(["what is the capital of france"] * 3)  # 18 tokens
    examples = [{"id": 0, "source": "x", "prompt": long, "response": "", "history": [], "references": []}]
    _, report = CausalLmTask().featurize(examples, tiny_tokenizer(), max_length=8)
    assert report.notes == [
        "causal-lm: 1 of 1 prompts were longer than max_length=8 and were cut from the left for generation "
        "(11 tokens dropped in all)"
    ]


def test_a_system_prompt_without_the_chat_template_is_refused_naming_both_options() -> None:
    """A plain prompt has no system turn: the option was stored in the checkpoint and changed nothing."""
    with pytest.raises(ConfigError, match=r"system_prompt='answer in french' needs chat_template: true"):
        CausalLmTask(system_prompt="answer in french")
    assert (
        CausalLmTask(chat_template=True, system_prompt="answer in french").system_prompt == "answer in french"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chat_template": "false"}, "task option chat_template must be true or false, got 'false'"),
        ({"chat_template": 0}, "task option chat_template must be true or false, got 0"),
        ({"add_eos": "no"}, "task option add_eos must be true or false, got 'no'"),
        ({"max_new_tokens": 8.7}, "task option max_new_tokens must be a whole number, got 8.7"),
        ({"max_new_tokens": True}, "task option max_new_tokens must be a whole number, got True"),
        ({"chat_template": True, "system_prompt": 5}, "task option system_prompt must be text, got 5"),
    ],
)
def test_task_options_of_the_wrong_type_are_refused_naming_option_and_value(options, message) -> None:
    """``bool("false")`` is True: a quoted "false" turned the chat template on, and "no" kept EOS on."""
    with pytest.raises(ConfigError, match=message):
        CausalLmTask(**options)
    task = CausalLmTask(chat_template=False, add_eos=False, max_new_tokens=8)
    assert (task.chat_template, task.add_eos, task.max_new_tokens) == (False, False, 8)
