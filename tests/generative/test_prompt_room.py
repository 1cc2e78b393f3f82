"""A causal LM's prompt is cut to leave max_new_tokens room in its position table, not only to max_length.

On a 32-position GPT-2 with max_length 28 and max_new_tokens 8, one long input was cut to 27 tokens and then
refused the whole predict file ("the longest prompt (27 tokens) + max_new_tokens (8) - 1 exceed the model's 32
positions"); training had passed, since its dev prompts were short.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from generative_tiny import tiny_causal_lm, tiny_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.tasks.generative import CausalLmTask
from ptuning.training.predict import load_for_inference, predict, score_split

SHORT = "say one two three"
LONG = " ".join(["one two three four five"] * 8)  # 40 tokens


def gpt2_folder(tmp_path: Path, positions: int = 32) -> str:
    """A saved tiny GPT-2 whose position table ends at ``positions``."""
    base = tiny_causal_lm("gpt2")
    config = GPT2Config(**{**base.config.to_dict(), "n_positions": positions})
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def checkpoint(tmp_path, max_new_tokens: int, max_length: int = 28, position_mode: str = "keep") -> Path:
    """A causal-lm prompt checkpoint on that GPT-2, trained (as recorded) at ``max_length``."""
    backbone, _ = load_backbone(gpt2_folder(tmp_path), causal_lm=True)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, position_mode=position_mode))
    model.add_task("causal-lm", HeadSpec(HeadKind.CAUSAL_LM))
    folder = tmp_path / "prompt"
    options = {"causal-lm": {"max_new_tokens": max_new_tokens}}
    save_checkpoint(model, folder, {"causal-lm": "causal-lm"}, task_options=options, max_length=max_length)
    return folder


def inputs(*prompts: str) -> list[dict]:
    """Unlabelled examples, as ``ptuning predict`` reads its inputs."""
    return [
        {"id": i, "source": "in", "prompt": p, "response": "", "history": [], "references": []}
        for i, p in enumerate(prompts)
    ]


def decoded_prompts(monkeypatch) -> list[list[int]]:
    """The prompts decoding is given, recorded on their way to the real ``generate_texts``."""
    import ptuning.generation.texts as texts

    seen: list[list[int]] = []
    real = texts.generate_texts
    monkeypatch.setattr(
        texts,
        "generate_texts",
        lambda model, tok, prompts, *a, **k: seen.extend(prompts) or real(model, tok, prompts, *a, **k),
    )
    return seen


def test_predict_cuts_a_long_prompt_to_what_the_positions_leave_and_answers_every_input(
    tmp_path, monkeypatch
) -> None:
    loaded = load_for_inference(checkpoint(tmp_path, max_new_tokens=8))
    seen, notes = decoded_prompts(monkeypatch), []
    answers = predict(loaded, inputs(SHORT, LONG), notes=notes)  # the old code refused the whole file here
    assert [a["id"] for a in answers] == [0, 1]
    # 32 positions - 8 new tokens + 1 (the last is never fed back) = 25, not max_length's 27
    assert seen == [tiny_tokenizer()(SHORT)["input_ids"], tiny_tokenizer()(LONG)["input_ids"][-25:]]
    assert notes == [
        "causal-lm: 1 of 2 prompts were longer than 25 tokens (what the model's positions leave beside "
        "max_new_tokens; max_length=28 would keep 27) and were cut from the left for generation "
        "(15 tokens dropped in all)"
    ]


def test_shift_mode_counts_the_prefix_slots_in_the_cut(tmp_path, monkeypatch) -> None:
    """Under PEFT's numbering the 4 prefix slots take positions too: 32 - 4 - 8 + 1 = 21 prompt tokens."""
    loaded = load_for_inference(checkpoint(tmp_path, max_new_tokens=8, position_mode="shift"))
    seen, notes = decoded_prompts(monkeypatch), []
    assert len(predict(loaded, inputs(LONG), notes=notes)) == 1
    assert seen == [tiny_tokenizer()(LONG)["input_ids"][-21:]]
    assert (
        "1 of 1 prompts were longer than 21 tokens" in notes[0] and "(19 tokens dropped in all)" in notes[0]
    )


def test_eval_counts_a_prompt_cut_for_positions_as_truncated(tmp_path) -> None:
    """A dev prompt that fits max_length but not max_length + max_new_tokens: cut and counted, not refused."""
    data = tmp_path / "data"
    data.mkdir()
    prompt = " ".join(["one two three four five"] * 5)  # 25 tokens: under max_length's 27, over the room of 9
    (data / "dev.jsonl").write_text(f'{{"prompt": "{prompt}", "response": "one"}}\n')
    loaded = load_for_inference(checkpoint(tmp_path, max_new_tokens=24))
    assert score_split(loaded, str(data), "dev")["truncated"] == 1


def test_a_max_new_tokens_that_leaves_no_prompt_room_is_refused_when_predict_loads(tmp_path) -> None:
    folder = checkpoint(tmp_path, max_new_tokens=33, max_length=16)
    with pytest.raises(ConfigError) as error:
        load_for_inference(folder)
    assert str(error.value) == (
        "max_new_tokens 33 leaves no room for a prompt in gpt2's 32 positions; max_new_tokens must be at most 32"
    )


def test_the_task_cuts_the_generation_prompt_to_the_limit_and_keeps_the_training_input() -> None:
    task, tokenizer = CausalLmTask(max_new_tokens=8), tiny_tokenizer()
    labelled = {**inputs(LONG)[0], "response": "one two", "references": ["one two"]}
    (feature,), report = task.featurize([labelled], tokenizer, 28, prompt_limit=10)
    tokens = tokenizer(LONG)["input_ids"]
    assert feature["generation_prompt"] == tokens[-10:]
    assert feature["prompt_length"] == 25 and report.truncated == 1 and report.cut_for_generation == 1
    assert report.notes[-1].startswith("causal-lm: 1 of 1 prompts were longer than 10 tokens")
    with pytest.raises(ConfigError, match="prompt_limit must be >= 1"):
        task.featurize([labelled], tokenizer, 28, prompt_limit=0)
