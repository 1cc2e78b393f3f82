"""Batch decoding of prompt token ids into texts, as evaluation and ``ptuning predict`` run it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from transformers import GenerationConfig

from ptuning.core.config import ConfigError, Method
from ptuning.core.geometry import prompt_room  # noqa: F401 (public here too: serve imports it)
from ptuning.core.kinds import HeadKind
from ptuning.generation.decoder import ContinuousDecoder, positions_needed
from ptuning.generation.decoder import Sequence as DecoderSequence
from ptuning.generation.sampling import SamplingParams
from ptuning.tasks.base import Features, Task
from ptuning.tasks.collate import collate

GREEDY_DEFAULTS = {"do_sample": False, "num_beams": 1}  # generate kwargs that leave decoding greedy
SAMPLING_SEED = 0  # what every sampled prompt's own seed is derived from (sample_seed)
# transformers' values for the sampling settings a task leaves unset (the model's shipped ones are not read)
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0}
# the generate kwargs the continuous decoder applies when sampling; any other samples through generate
_DECODER_SAMPLING_KEYS = {
    "do_sample",
    "num_beams",
    "num_return_sequences",
    "eos_token_id",
    *SAMPLING_DEFAULTS,
}


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

    Greedy decoding, and sampling with temperature / top-k / top-p (``continuous_params``), of a deep-prefix
    (or prefix-free) model run on the ``ContinuousDecoder``: prompts join longest first, up to ``batch_size``
    rows at a time, and a finished row's place goes to the next prompt at once; the prefix is written into
    the cache once. Anything else (beams, penalties, a static cache; shallow prompt tuning; encoder-decoders)
    runs through ``PromptModel.generate`` in batches padded on the LEFT (encoder-decoders: on the right, as
    they were trained); a sampled batch would share one random stream there, so sampling decodes one prompt
    at a time. Either way a prompt gets what it gets alone: greedy, its best tokens; sampled, a draw from a
    generator seeded from its own tokens (``sample_seed``), so its text does not depend on its batch-mates,
    their order or ``batch_size``, and repeats run to run (scores are comparable between epochs, ``eval`` and
    ``predict``). Torch's global random state is left as it was. Each text is cut at the first EOS and stripped.
    ``model`` is a PromptModel; its train/eval mode is restored afterwards. A ``--compile``d backbone
    decodes eagerly: every new cache length is a new shape, and compiling them (16 graphs on a tiny GPT-2,
    then Dynamo's recompile limit) cost tens of seconds for the same tokens.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos_id is None:
        raise ConfigError("the tokenizer has no EOS token; generation could not tell where an answer ends")
    seq2seq = _is_seq2seq(model, task)
    _check_positions(model, prompts, max_new_tokens, seq2seq, task)
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ConfigError(
            "generate_kwargs num_return_sequences must be 1: a task scores and predict writes one text per prompt"
        )
    params = continuous_params(generate_kwargs, max_new_tokens)
    if params is not None and model.method is not Method.PROMPT_TUNING and not seq2seq:
        eos = generate_kwargs.get("eos_token_id")
        return _decode_continuously(model, tokenizer, prompts, batch_size, params, task, eos)
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
    sampled = bool(config.do_sample)  # one random stream per batch: its texts would depend on the batch
    size = 1 if sampled else batch_size
    try:
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            # A causal LM continues the prompt (left padding keeps it adjacent to the new tokens); an
            # encoder-decoder's encoder takes it right-padded, like in training.
            side = "right" if seq2seq else "left"
            batch = collate([{"input_ids": list(prompts[i])} for i in rows], config.pad_token_id, side)
            with _seeded(sample_seed(prompts[rows[0]]) if sampled else None, device):
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
    """Whether these generate kwargs leave decoding greedy, as the continuous decoder (and the server) decodes.
    Stop ids (``eos_token_id``) do: they end an answer, not choose its tokens (``stop_ids``)."""
    return all(
        key == "eos_token_id" or GREEDY_DEFAULTS.get(key, object()) == value
        for key, value in generate_kwargs.items()
    )


def stop_ids(generate_kwargs: dict[str, Any]) -> frozenset[int] | None:
    """The ids a task's ``eos_token_id`` ends its answers at (several for chat models that end a turn with
    their own marker), or None: the tokenizer's EOS."""
    eos = generate_kwargs.get("eos_token_id")
    if eos is None:
        return None
    return frozenset([eos] if isinstance(eos, int) else eos)


def continuous_params(generate_kwargs: dict[str, Any], max_new_tokens: int) -> SamplingParams | None:
    """What the continuous decoder decodes these generate kwargs with: greedy, or ``do_sample`` as ``generate``
    samples (temperature, then top-k, 50 unless set, then top-p; a seed per prompt is added when decoding).
    None where it cannot apply them (beams, penalties, other warpers): ``generate`` does. Stop ids
    (``eos_token_id``) it applies either way (``stop_ids``)."""
    if plain_greedy(generate_kwargs):
        return SamplingParams(max_new_tokens=max_new_tokens)
    sampled = generate_kwargs.get("do_sample") is True and generate_kwargs.get("num_beams", 1) == 1
    if not sampled or not set(generate_kwargs) <= _DECODER_SAMPLING_KEYS:
        return None
    settings = {
        key: default if generate_kwargs.get(key) is None else generate_kwargs[key]
        for key, default in SAMPLING_DEFAULTS.items()
    }
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"generate_kwargs {key} must be a number, got {value!r}")
    if settings["temperature"] <= 0:  # SamplingParams reads 0 as greedy; generate refuses it with do_sample
        raise ConfigError(
            f"generate_kwargs temperature must be > 0 with do_sample (greedy: do_sample false), "
            f"got {settings['temperature']}"
        )
    try:
        return SamplingParams(
            max_new_tokens, settings["temperature"], settings["top_p"], top_k=settings["top_k"]
        )
    except ConfigError as error:
        raise ConfigError(f"generate_kwargs {error}") from None


def sample_seed(prompt: Sequence[int]) -> int:
    """The seed a prompt is sampled with: from ``SAMPLING_SEED`` and its tokens only, so its text is the same
    alone or in any batch, in any order, in training's evaluation, ``eval`` and ``predict``."""
    key = f"{SAMPLING_SEED}:{','.join(str(int(token)) for token in prompt)}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # below 2**63: any torch generator takes it


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Torch's global generators seeded with ``seed`` inside and put back afterwards (None: untouched), so
    that sampling through ``generate`` neither depends on nor moves training's random stream."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _decode_continuously(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    params: SamplingParams,
    task: str | None,
    eos_token_id: int | Sequence[int] | None = None,
) -> list[str]:
    """Answers of ``prompts`` through the continuous decoder, ``batch_size`` rows in flight; a sampled row
    draws from a generator of its own, seeded by ``sample_seed``."""
    if task is None:
        if len(model.tasks) != 1:
            raise ValueError(f"this model has tasks {model.tasks}; say which one with task=")
        task = model.tasks[0]
    if model.head_specs[task].kind is not HeadKind.CAUSAL_LM:
        raise ConfigError(f"task {task!r} is not a causal-lm task")
    prefix = model.task_prefix[task] if model.method.is_deep else None
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    waiting = [
        DecoderSequence(
            list(prompts[i]),
            prefix,
            params if params.greedy else replace(params, seed=sample_seed(prompts[i])),
        )
        for i in order
    ]
    decoder = ContinuousDecoder(model, tokenizer, eos_token_id=eos_token_id)
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
