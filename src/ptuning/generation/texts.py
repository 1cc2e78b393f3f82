"""Batch decoding of prompt token ids into texts, as evaluation and ``ptuning predict`` run it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from ptuning.core.config import ConfigError, Method
from ptuning.core.kinds import HeadKind
from ptuning.generation.decoder import ContinuousDecoder, positions_needed
from ptuning.generation.decoder import Sequence as DecoderSequence
from ptuning.generation.sampling import SamplingParams
from ptuning.tasks.base import Features, Task
from ptuning.tasks.collate import collate

GREEDY_DEFAULTS = {"do_sample": False, "num_beams": 1}  # generate kwargs that leave decoding greedy


def is_generative(task: Task) -> bool:
    """Whether ``task``'s outputs are generated texts (a causal-LM task) rather than head outputs."""
    return getattr(task, "head", None) in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM)


def generate_task_outputs(
    task: Task, model: Any, tokenizer: Any, features: Features, batch_size: int
) -> list[str]:
    """One generated text per feature of a generative task, from its prompt tokens only.

    The task's options say how long and how (``max_new_tokens``, ``generate_kwargs``); the model's head
    of the task's name is used when the model has one, else its only task.
    """
    prompts = generation_prompts(features)
    head = _head_of(task, model)
    return generate_texts(
        model,
        tokenizer,
        prompts,
        batch_size,
        getattr(task, "max_new_tokens", 64),
        task=head,
        **getattr(task, "generate_kwargs", {}),
    )


def generation_prompts(features: Features) -> list[list[int]]:
    """Each feature's prompt as decoding reads it: a causal LM's cut as predict cuts it, not shortened by its
    gold response."""
    return [
        feature.get("generation_prompt") or feature["input_ids"][: feature["prompt_length"]]
        for feature in features
    ]


def _head_of(task: Task, model: Any) -> str | None:
    """The model's head of the task's name, or None: its only task (a checkpoint under another name)."""
    return task.name if task.name in getattr(model, "tasks", ()) else None


def prompt_room(positions: int | None, slots: int, max_new_tokens: int) -> int | None:
    """The most prompt tokens a causal LM can decode ``max_new_tokens`` after within ``positions`` (None: a
    table without end), ``slots`` of them taken by the prefix: ``positions_needed`` solved for the prompt.
    Below 1 where max_new_tokens alone fill the table."""
    return None if positions is None else positions - slots - max_new_tokens + 1


def task_prompt_room(task: Task, model: Any) -> int | None:
    """``prompt_room`` of a causal-LM task on ``model`` with the task's own max_new_tokens: predict cuts its
    prompts to it too, since a prompt that fits max_length may leave decoding no room. None for other tasks
    (an encoder-decoder numbers prompt and answer apart) and tables without end."""
    head = _head_of(task, model)
    if getattr(task, "head", None) is not HeadKind.CAUSAL_LM or _is_seq2seq(model, head):
        return None
    new_tokens = getattr(task, "max_new_tokens", 64)
    return prompt_room(model.geometry.usable_positions, _slots(model, head), new_tokens)


def check_prompt_room(task: Task, model: Any) -> None:
    """Refuse, before any input is read, a causal-LM task whose max_new_tokens (with the prefix's slots) leave
    no position for even one prompt token: no cut could make its prompts decodable."""
    room = task_prompt_room(task, model)
    if room is None or room >= 1:
        return
    new_tokens, slots = getattr(task, "max_new_tokens", 64), _slots(model, _head_of(task, model))
    positions = model.geometry.usable_positions
    raise ConfigError(
        f"max_new_tokens {new_tokens} leaves no room for a prompt in {model.geometry.model_type}'s {positions} "
        f"positions{f' ({slots} taken by the prefix)' if slots else ''}; max_new_tokens must be at most "
        f"{positions - slots}"
    )


def check_generation_room(task: Task, model: Any, features: Features) -> None:
    """Refuse, before training, a split whose decoding would index past the position table: found only at the
    first evaluation, that ended a run with nothing saved."""
    check_prompt_room(task, model)
    head = _head_of(task, model)
    _check_positions(
        model,
        generation_prompts(features),
        getattr(task, "max_new_tokens", 64),
        _is_seq2seq(model, head),
        head,
    )


@torch.compiler.set_stance("force_eager")  # each decoding length would recompile a compiled backbone
@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 16,
    max_new_tokens: int = 64,
    task: str | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Decode a continuation of each prompt (token ids), greedy unless ``generate_kwargs`` say otherwise.

    Greedy decoding of a deep-prefix (or prefix-free) model runs on the ``ContinuousDecoder``: prompts join
    longest first, up to ``batch_size`` rows at a time, and a finished row's place goes to the next prompt at
    once; the prefix is written into the cache once. Anything else (``generate_kwargs`` such as beams,
    sampling or a static cache; shallow prompt tuning; encoder-decoders) runs through ``PromptModel.generate``
    in batches padded on the LEFT (encoder-decoders: on the right, as they were trained). Both give each prompt what it gets alone. Each text is cut at the first EOS and stripped.
    ``model`` is a PromptModel; its train/eval mode is restored afterwards. A ``--compile``d backbone
    decodes eagerly: every new cache length is a new shape, and compiling them (16 graphs on a tiny GPT-2,
    then Dynamo's recompile limit) cost tens of seconds for the same tokens.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos_id is None:
        raise ConfigError("the tokenizer has no EOS token; generation could not tell where an answer ends")
    seq2seq = _is_seq2seq(model, task)
    _check_positions(model, prompts, max_new_tokens, seq2seq, task)
    if plain_greedy(generate_kwargs) and model.method is not Method.PROMPT_TUNING and not seq2seq:
        return _decode_continuously(model, tokenizer, prompts, batch_size, max_new_tokens, task)
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ConfigError(
            "generate_kwargs num_return_sequences must be 1: a task scores and predict writes one text per prompt"
        )
    settings = {
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": max_new_tokens,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id if pad_id is not None else eos_id,
        **generate_kwargs,  # the task's own generate_kwargs win (e.g. several stop ids)
    }
    config = GenerationConfig(**settings)
    stop_ids = settings["eos_token_id"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no prefix dropout while decoding
    # transformers fills what ``config`` leaves unset from the model's own generation_config: a shipped
    # repetition_penalty or no_repeat_ngram_size would bend "greedy", and BART's forced_bos_token_id starts
    # every answer with <s>, which its training targets never had. Decoding sees only what is set here.
    shipped = model.backbone.generation_config
    model.backbone.generation_config = GenerationConfig(
        **{key: getattr(shipped, key, None) for key in _TOKEN_IDS if getattr(shipped, key, None) is not None}
    )
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            # A causal LM continues the prompt (left padding keeps it adjacent to the new tokens); an
            # encoder-decoder's encoder takes it right-padded, like in training.
            side = "right" if seq2seq else "left"
            batch = collate([{"input_ids": list(prompts[i])} for i in rows], config.pad_token_id, side)
            new_tokens = model.generate(
                batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                task=task,
                generation_config=config,
            )
            for row, index in enumerate(rows):
                texts[index] = decode_until_eos(tokenizer, new_tokens[row].tolist(), stop_ids)
    finally:
        model.backbone.generation_config = shipped
        model.train(was_training)
    return texts


# what a model's generation_config may keep: the ids decoding starts and ends with, no processors
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _is_seq2seq(model: Any, task: str | None) -> bool:
    specs = getattr(model, "head_specs", {})
    spec = specs.get(task) if task is not None else (next(iter(specs.values())) if len(specs) == 1 else None)
    return spec is not None and spec.kind is HeadKind.SEQ2SEQ_LM


def _check_positions(
    model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, seq2seq: bool, task: str | None
) -> None:
    """A learned position table ends (GPT-2: 1,024): refuse, naming the numbers, what would index past it
    (an IndexError deep inside the model otherwise). Prompt tuning's and a shifted prefix's slots (the task's
    own prefix's) take positions too; the last new token is never fed back, so it takes none. An
    encoder-decoder numbers the prompt (encoder) and the answer (decoder: its start token, then the new tokens
    but the last) apart."""
    positions = model.geometry.usable_positions
    if positions is None or not prompts:
        return
    slots = _slots(model, task)
    longest = max(len(prompt) for prompt in prompts)
    if seq2seq:
        if slots + longest > positions or max_new_tokens > positions:
            raise ConfigError(
                f"the longest prompt ({longest} tokens{f' + {slots} prompt slots' if slots else ''}) or "
                f"max_new_tokens ({max_new_tokens}) exceed the model's {positions} positions; lower "
                "max_length or max_new_tokens"
            )
        return
    if positions_needed(slots, longest, max_new_tokens) > positions:
        raise ConfigError(
            f"the longest prompt ({longest} tokens){f' + {slots} prefix slots' if slots else ''} + max_new_tokens "
            f"({max_new_tokens}) - 1 exceed the model's {positions} positions; lower max_length or max_new_tokens"
        )


def _slots(model: Any, task: str | None) -> int:
    """Positions the prefix of ``task`` (None: the model's only task) takes before the prompt's."""
    named = task if task is not None else (model.tasks[0] if len(model.tasks) == 1 else None)
    return model.task_prefix_positions(named) if named is not None else model.prefix_positions


def plain_greedy(generate_kwargs: dict[str, Any]) -> bool:
    """Whether these generate kwargs leave decoding greedy, as the continuous decoder (and the server) decodes."""
    return all(GREEDY_DEFAULTS.get(key, object()) == value for key, value in generate_kwargs.items())


@torch.no_grad()
def _decode_continuously(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], batch_size: int, max_new_tokens: int, task
) -> list[str]:
    """Greedy answers of ``prompts`` through the continuous decoder, ``batch_size`` rows in flight."""
    if task is None:
        if len(model.tasks) != 1:
            raise ValueError(f"this model has tasks {model.tasks}; say which one with task=")
        task = model.tasks[0]
    if model.head_specs[task].kind is not HeadKind.CAUSAL_LM:
        raise ConfigError(f"task {task!r} is not a causal-lm task")
    prefix = model.task_prefix[task] if model.method.is_deep else None
    params = SamplingParams(max_new_tokens=max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    waiting = [DecoderSequence(list(prompts[i]), prefix, params) for i in order]
    decoder = ContinuousDecoder(model, tokenizer)
    was_training = model.training
    model.eval()  # no prefix dropout while decoding
    try:
        queue = list(waiting)
        while queue or decoder.rows:
            room = max(batch_size - len(decoder.rows), 0)
            decoder.step(admit=queue[:room])
            queue = queue[room:]
    finally:
        model.train(was_training)
    texts = [""] * len(prompts)
    for index, sequence in zip(order, waiting, strict=True):
        texts[index] = sequence.answer
    return texts


def decode_until_eos(tokenizer: Any, token_ids: list[int], eos_id: int | Sequence[int]) -> str:
    """The text of ``token_ids`` up to (not including) the first EOS (any of several ids), without special
    tokens."""
    stops = {eos_id} if isinstance(eos_id, int) else set(eos_id)
    end = next((i for i, token in enumerate(token_ids) if token in stops), len(token_ids))
    return tokenizer.decode(token_ids[:end], skip_special_tokens=True).strip()
