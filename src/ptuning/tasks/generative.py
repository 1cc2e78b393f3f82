"""Generative tasks for causal LMs: prompt/response data in, text metrics on generations out.

A feature is ``prompt + response + EOS`` with labels on the response and EOS only, so the loss never
teaches the model to write prompts. Prompt and response are tokenized separately and concatenated: the
prompt tokens that generation starts from are then exactly those seen in training (tokenizing the joined
text may merge tokens across the boundary). A prompt too long for ``max_length`` is cut from the left,
where it is furthest from the response, and counted; ``truncation="error"`` refuses it instead.

Tasks: ``causal-lm`` (any JSONL/CSV with prompt, response and optional history fields), ``seq2seq-lm``
(the same files for encoder-decoders: prompt -> encoder, response + EOS -> decoder labels),
``squad-generative`` (answer SQuAD questions in words) and ``conll2003-json`` (list a sentence's
entities as JSON).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from ptuning.core.config import ConfigError
from ptuning.tasks import text_metrics
from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.collate import IGNORE_INDEX
from ptuning.tasks.metrics import exact_match as squad_exact_match
from ptuning.tasks.metrics import normalize_answer, token_f1
from ptuning.tasks.readers import SPLIT_ALIASES, Table, read_table, row_id, split_file
from ptuning.tasks.tag_schemes import entity_spans

Example = dict[str, Any]
Turn = tuple[str, str]  # (user, assistant)
TRUNCATION_POLICIES = ("left", "error")
TOKENIZE_CHUNK = 1000  # texts per tokenizer call in ``tokenize_pairs``
DEFAULT_HISTORY_FIELD = "history"  # optional in a file; any other history_field must be there


# ---------------------------------------------------------------------------------------------- base task


# generate_kwargs that decoding cannot take from a task: the length is the task's own option (the position
# check before training reads it there), stop strings need the tokenizer transformers is not given, and a task
# scores and predict writes one text per prompt. Refused when the task is built, not at the first evaluation.
_TASK_OPTION_INSTEAD = {
    "max_new_tokens": "the task option max_new_tokens",
    "max_length": "the task option max_new_tokens",
}
_UNSUPPORTED_GENERATE_KWARGS = {
    "stop_strings": "decoding is not given the tokenizer stop strings need; stop at token ids with eos_token_id",
    "num_return_sequences": "a task scores, and predict writes, one text per prompt",
}


def checked_generate_kwargs(generate_kwargs: Any) -> dict[str, Any]:
    """A task's ``generate_kwargs`` as a dict, refusing the keys that would fail or be ignored at decoding."""
    if generate_kwargs is None:
        return {}
    if not isinstance(generate_kwargs, dict):
        raise ConfigError(
            f"generate_kwargs must be a mapping of generate() settings, got {generate_kwargs!r}"
        )
    for key in generate_kwargs:
        if key in _TASK_OPTION_INSTEAD:
            raise ConfigError(f"generate_kwargs {key!r}: set {_TASK_OPTION_INSTEAD[key]} instead")
        if key in _UNSUPPORTED_GENERATE_KWARGS and not (
            key == "num_return_sequences" and generate_kwargs[key] == 1
        ):
            raise ConfigError(
                f"generate_kwargs {key!r} is not supported: {_UNSUPPORTED_GENERATE_KWARGS[key]}"
            )
    if generate_kwargs.get("do_sample") is True:
        _check_sampling_settings(generate_kwargs)
    _check_stop_ids(generate_kwargs.get("eos_token_id"))
    return dict(generate_kwargs)


def _check_stop_ids(eos: Any) -> None:
    """``eos_token_id``: a token id or a non-empty list of them (None: the tokenizer's EOS)."""
    if eos is None:
        return
    ids = [eos] if isinstance(eos, int) else eos
    if not isinstance(ids, list) or not ids or not all(_is_token_id(i) for i in ids):
        raise ConfigError(f"generate_kwargs eos_token_id must be a token id or a list of them, got {eos!r}")


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_sampling_settings(generate_kwargs: dict[str, Any]) -> None:
    """The sampling settings decoding would refuse, refused when the task is built rather than at the first
    evaluation after training's first epoch (None leaves a setting at generate's default)."""
    bounds = {
        "temperature": (lambda v: v > 0, "> 0 with do_sample (greedy: do_sample false)"),
        "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "top_k": (lambda v: isinstance(v, int) and v >= 0, "a whole number >= 0 (0 = no limit)"),
    }
    for key, (holds, expected) in bounds.items():
        value = generate_kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not holds(value):
            raise ConfigError(f"generate_kwargs {key} must be {expected}, got {value!r}")


def _checked_bool(option: str, value: Any) -> bool:
    """``value`` if it is a real bool: ``bool("false")`` is True, so a quoted "false" would turn an option on."""
    if not isinstance(value, bool):
        raise ConfigError(f"task option {option} must be true or false, got {value!r}")
    return value


class GenerativeTask(Task):
    """Prompt -> response tasks for a causal LM; subclasses say how examples are read and scored.

    Options (constructor keywords, i.e. ``task_options``): ``chat_template`` renders prompts with the
    tokenizer's own chat template (error if it has none); ``system_prompt`` adds a system turn there (an
    error without ``chat_template``: a plain prompt has no system turn);
    ``truncation`` is ``left`` (cut long prompts from the left, counted in the report) or ``error``;
    ``max_new_tokens`` bounds generation; ``generate_kwargs`` replaces greedy decoding (e.g.
    ``{"num_beams": 4}``); ``add_eos`` ends every response with EOS so that the model learns to stop.
    """

    head = HeadKind.CAUSAL_LM
    label_names = None
    primary_metric = "rougeL"
    primary_scale = 100.0  # every generative task scores in percent (text_metrics)
    default_max_new_tokens = 64

    def __init__(
        self,
        *,
        chat_template: bool = False,
        system_prompt: str | None = None,
        truncation: str = "left",
        max_new_tokens: int | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        add_eos: bool = True,
        splits: dict[str, str] | None = None,
    ) -> None:
        if truncation not in TRUNCATION_POLICIES:
            raise ConfigError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
        self.chat_template = _checked_bool("chat_template", chat_template)
        self.add_eos = _checked_bool("add_eos", add_eos)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ConfigError(f"task option system_prompt must be text, got {system_prompt!r}")
        if system_prompt is not None and not self.chat_template:
            # a plain prompt has no system turn: kept, it would be saved in the checkpoint and change nothing
            raise ConfigError(
                f"task option system_prompt={system_prompt!r} needs chat_template: true (only the chat template "
                "renders a system turn); set chat_template or drop system_prompt"
            )
        self.system_prompt = system_prompt
        self.truncation = truncation
        self.max_new_tokens = self.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ConfigError(f"task option max_new_tokens must be a whole number, got {max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        self.generate_kwargs = checked_generate_kwargs(generate_kwargs)
        self.splits = {**type(self).splits, **(splits or {})}

    # --- features -----------------------------------------------------------------------------------

    def render_prompt(self, example: Example, tokenizer: Any) -> str:
        """The prompt text the model continues: history turns, then the prompt (chat template or plain)."""
        if self.chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError(
                    f"{self.name}: chat_template is on but the tokenizer has no chat template; "
                    "turn the option off or use an instruction-tuned model's tokenizer"
                )
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            for user, assistant in example.get("history", []):
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            messages.append({"role": "user", "content": example["prompt"]})
            try:
                return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # the template's own refusal, e.g. Gemma's "System role not supported"
            except TemplateError as error:
                hint = "; drop the task option system_prompt" if self.system_prompt else ""
                raise ConfigError(
                    f"{example.get('source', self.name)}: the tokenizer's chat template refuses this "
                    f"conversation: {error}{hint}"
                ) from None
        turns = [f"{user}\n{assistant}\n" for user, assistant in example.get("history", [])]
        return "".join(turns) + example["prompt"]

    def render_response(self, example: Example) -> str:
        """The text the model is trained to produce after the prompt."""
        return example["response"]

    def tokenize_pairs(
        self, examples: list[Example], tokenizer: Any
    ) -> tuple[list[int], list[list[int]], list[list[int]]]:
        """(EOS ids to append, prompt ids, response ids), tokenized apart so that generation starts from
        exactly the prompt tokens seen in training."""
        eos = [tokenizer.eos_token_id] if self.add_eos else []
        if self.add_eos and tokenizer.eos_token_id is None:
            raise ConfigError(
                f"{self.name}: the tokenizer has no EOS token; set add_eos=False to train without"
            )

        def ids_of(texts: list[str], add_special_tokens: bool) -> list[list[int]]:
            # TOKENIZE_CHUNK texts a call: one call over a split holds every text's tokenizer records at once
            return [
                ids
                for start in range(0, len(texts), TOKENIZE_CHUNK)
                for ids in tokenizer(
                    texts[start : start + TOKENIZE_CHUNK], add_special_tokens=add_special_tokens
                )["input_ids"]
            ]

        prompts = [self.render_prompt(example, tokenizer) for example in examples]
        plain_specials = not self.chat_template  # a chat template writes its own BOS and markers
        prompt_ids = ids_of(prompts, plain_specials)
        responses = [self.render_response(example) for example in examples]
        response_ids = ids_of(responses, False)
        return eos, prompt_ids, response_ids

    def answer_room_note(self, response_ids: list[list[int]]) -> str | None:
        """A note when some gold responses are longer than generation may run: their scores are capped."""
        longer = [len(ids) for ids in response_ids if len(ids) > self.max_new_tokens]
        if not longer:
            return None
        return (
            f"{self.name}: {len(longer)} of {len(response_ids)} responses are longer than max_new_tokens="
            f"{self.max_new_tokens} (up to {max(longer)} tokens): generation stops before their end, which caps "
            "their scores; raise the task option max_new_tokens"
        )

    def exact_match_form(self, text: str) -> Any:
        """``text`` as the task's exact match compares it (``text_metrics.exact_match``: spaces squeezed)."""
        return text_metrics.squeeze_spaces(text)

    def reproduction_note(
        self, examples: list[Example], response_ids: list[list[int]], tokenizer: Any
    ) -> str | None:
        """A note when some responses do not come back from their tokens, decoded as scoring decodes outputs
        (up to the first EOS, without special tokens) and compared as exact match compares: a vocabulary
        without byte fallback turns unseen characters into its unknown token, which decoding drops. Even a
        perfect model then misses exact match on those examples, and training teaches it to write that token."""
        labelled = [index for index, example in enumerate(examples) if example.get("references")]
        if not labelled:  # predict's inputs: no responses to check
            return None
        eos = tokenizer.eos_token_id
        ids = [response_ids[index] for index in labelled]
        texts = tokenizer.batch_decode(
            [tokens[: tokens.index(eos)] if eos in tokens else tokens for tokens in ids],
            skip_special_tokens=True,
        )
        missed = [
            (examples[index]["response"], text.strip())
            for index, text in zip(labelled, texts, strict=True)
            if self.exact_match_form(text.strip())
            not in [self.exact_match_form(reference) for reference in examples[index]["references"]]
        ]
        if not missed:
            return None
        response, decoded = (_shortened(text) for text in missed[0])
        return (
            f"{self.name}: {len(missed)} of {len(labelled)} responses cannot be reproduced by the tokenizer "
            f"(e.g. {response!r} comes back as {decoded!r}): exact match is at most "
            f"{100.0 * (len(labelled) - len(missed)) / len(labelled):.1f} %"
        )

    def featurize(
        self, examples: list[Example], tokenizer: Any, max_length: int, prompt_limit: int | None = None
    ) -> tuple[Features, DataReport]:
        """input_ids = prompt + response (+ EOS); labels are -100 on the prompt, the ids on the response.

        ``generation_prompt`` is the prompt as ``predict`` and the server cut it (room for an empty response):
        evaluation generates from it, so a dev score is computed on the prompt deployment sees, whatever the
        length of the gold response that shortened the training input. ``prompt_limit`` (predict and the
        server: ``generation.prompt_room``) cuts it shorter where the model's positions leave a max_length
        prompt no room for max_new_tokens; such a cut is counted like a max_length cut."""
        if prompt_limit is not None and prompt_limit < 1:
            raise ConfigError(
                f"prompt_limit must be >= 1 (a prompt token to generate from), got {prompt_limit}"
            )
        eos, prompt_ids, response_ids = self.tokenize_pairs(examples, tokenizer)
        bos = prepended_bos(tokenizer)  # kept in front of a prompt cut from the left
        features: Features = []
        report = DataReport(examples=len(examples))
        cut_prompts = cut_responses = cut_tokens = cut_for_generation = generation_cut_tokens = 0
        room = max_length - len(eos)
        if prompt_limit is not None:
            room = min(room, prompt_limit)
        for index, example in enumerate(examples):
            prompt, response = list(prompt_ids[index]), list(response_ids[index]) + eos
            generation_prompt = prompt
            if len(prompt) > room:
                generation_prompt = cut_from_the_left(prompt, room, bos)
                cut_for_generation += 1
                generation_cut_tokens += len(prompt) - room
            if len(prompt) + len(response) > max_length:
                if self.truncation == "error":
                    raise DataError(
                        f"{example['source']}: prompt ({len(prompt)} tokens) + response ({len(response)}) is "
                        f"longer than max_length={max_length}; raise max_length or use truncation='left'"
                    )
                if len(response) > max_length - 1:  # keep at least one prompt token to condition on
                    response = response[: max_length - 1]
                    cut_responses += 1
                keep = max_length - len(response)
                cut_tokens += len(prompt) - keep
                prompt = cut_from_the_left(prompt, keep, bos)
                cut_prompts += 1
            features.append(
                {
                    "input_ids": prompt + response,
                    "labels": [IGNORE_INDEX] * len(prompt) + response,
                    "prompt_length": len(prompt),
                    "generation_prompt": generation_prompt,
                    "example_index": index,
                }
            )
        report.truncated, report.cut_for_generation = cut_prompts, cut_for_generation
        if note := self.answer_room_note([ids for ids in response_ids if ids]):
            report.notes.append(note)
        if note := self.reproduction_note(examples, response_ids, tokenizer):
            report.notes.append(note)
        # the model's positions, not max_length, set the generation cut: said in a note of its own
        positions_cut = room < max_length - len(eos)
        if cut_prompts and any(response_ids):
            generation = (
                ""
                if positions_cut
                else f"; generation, which reads the prompt alone, cut {cut_for_generation} of them"
            )
            report.notes.append(
                f"{self.name}: {cut_prompts} of {len(examples)} prompts did not fit max_length={max_length} with "
                f"their response and were cut from the left for training ({cut_tokens} tokens dropped in all)"
                + generation
            )
        if cut_for_generation and (positions_cut or not any(response_ids)):
            longer = (
                f"{room} tokens (what the model's positions leave beside max_new_tokens; max_length={max_length} "
                f"would keep {max_length - len(eos)})"
                if positions_cut
                else f"max_length={max_length}"
            )
            report.notes.append(
                f"{self.name}: {cut_for_generation} of {len(examples)} prompts were longer than {longer} and were "
                f"cut from the left for generation ({generation_cut_tokens} tokens dropped in all)"
            )
        if cut_responses:
            report.notes.append(
                f"{self.name}: {cut_responses} responses were longer than max_length={max_length} on their own "
                "and were cut on the right (their EOS is lost)"
            )
        return features, report

    # --- predictions --------------------------------------------------------------------------------

    def predictions(self, examples: list[Example], features: Features, outputs: list[str]) -> list[str]:
        """Generated text per example (one feature per example)."""
        if len(outputs) != len(features):
            raise ValueError(f"{len(outputs)} outputs for {len(features)} features")
        texts = [""] * len(examples)
        for feature, output in zip(features, outputs, strict=True):
            texts[feature["example_index"]] = output
        return texts

    def score(self, examples: list[Example], features: Features, outputs: list[str]) -> dict[str, float]:
        predictions = self.predictions(examples, features, outputs)
        return text_metrics.text_scores(predictions, [example["references"] for example in examples])

    def decode(self, examples: list[Example], features: Features, outputs: list[str]) -> list[dict[str, Any]]:
        predictions = self.predictions(examples, features, outputs)
        return [
            {
                "id": example["id"],
                "prompt": example["prompt"],
                "prediction": text,
                "references": example["references"],
            }
            for example, text in zip(examples, predictions, strict=True)
        ]

    def split_name(self, split: str) -> str:
        split = split if split in self.splits else SPLIT_ALIASES.get(split, split)
        if split not in self.splits:
            raise DataError(f"task {self.name!r} has no split {split!r}; known splits: {sorted(self.splits)}")
        return split


# ---------------------------------------------------------------------------------------------- causal-lm


class CausalLmTask(GenerativeTask):
    """Generic prompt/response data from JSONL or CSV files (``train.jsonl``, ``dev.jsonl``, ``test.jsonl``).

    Field names are options: ``prompt_field``, ``response_field``, ``history_field`` (optional; a list of
    ``[user, assistant]`` pairs or of ``{"role", "content"}`` messages, in CSV as JSON text; its column is
    matched ignoring case, and one named other than ``history`` must be in the file). ``data_dir`` may also
    be one file, used for every split.
    """

    name = "causal-lm"
    description = "prompt/response pairs (optionally multi-turn) from JSONL/CSV; scored by ROUGE, BLEU-4, EM"
    splits = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}

    def __init__(
        self,
        *,
        prompt_field: str = "prompt",
        response_field: str = "response",
        history_field: str | None = DEFAULT_HISTORY_FIELD,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.prompt_field = prompt_field
        self.response_field = response_field
        self.history_field = history_field

    def read(self, data_dir: str, split: str) -> tuple[list[Example], DataReport]:
        source = Path(data_dir).expanduser()
        path = split_file(
            source, self.splits[self.split_name(split)]
        )  # dev.jsonl, or val.jsonl, valid.jsonl...
        table = read_table(path)
        if self.history_field not in (None, DEFAULT_HISTORY_FIELD):  # named on purpose: a typo is no history
            table.find_column([self.history_field], what="the task option history_field")
        examples = [self.example(table, row) for row in range(len(table.rows))]
        report = DataReport(examples=len(examples), skipped=table.blank_lines, notes=list(table.notes))
        turns = sum(len(example["history"]) for example in examples)
        report.notes.append(f"{path}: {len(examples)} examples, {turns} earlier turns in their histories")
        return examples, report

    def example(self, table: Table, row: int, labelled: bool = True) -> Example:
        """Row ``row`` of ``table`` as an example; unlabelled (``ptuning predict``'s inputs), it has no response
        and no references, and only the prompt field (and an optional history) is read."""
        where = table.where(row)
        prompt = _text(table.value(row, self.prompt_field), self.prompt_field, where)
        response = (
            _text(table.value(row, self.response_field), self.response_field, where) if labelled else ""
        )
        history = []
        column = self.history_column(table)
        if column and table.rows[row].get(column) not in (None, ""):
            history = parse_history(table.rows[row][column], column, where)
        return {
            "id": row_id(table.rows[row], row),
            "source": where,
            "prompt": prompt,
            "response": response,
            "history": history,
            "references": [response] if labelled else [],
        }

    def history_column(self, table: Table) -> str | None:
        """The column holding histories, matched ignoring case (a CSV header ``History``), or None."""
        if not self.history_field:
            return None
        return table.find_column([self.history_field], required=False)


def _shortened(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else text[: keep - 3] + "..."


def prepended_bos(tokenizer: Any) -> int | None:
    """The BOS id the tokenizer itself puts in front of a text (Llama's ``<s>``, Llama 3's
    ``<|begin_of_text|>``), else None: SmolLM2 names its chat marker ``<|im_start|>`` as BOS without adding it,
    and a cut chat prompt must not keep that marker in front of mid-turn text as if it began one."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return None
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bos_id if ids and ids[0] == bos_id else None


def cut_from_the_left(ids: list[int], keep: int, bos_id: int | None) -> list[int]:
    """The last ``keep`` of a prompt's ``ids``, behind its BOS when it starts with one: a model sees a BOS at
    position 0 whether or not its prompt was cut (Llama-style tokenizers and BART add one; left alone, every
    cut prompt would start mid-text without it)."""
    if bos_id is not None and keep > 1 and ids and ids[0] == bos_id:
        return ids[:1] + ids[len(ids) - keep + 1 :]
    return ids[len(ids) - keep :]


def _text(value: Any, field: str, where: str) -> str:
    """A required, non-empty text field."""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} should be text, found {type(value).__name__} {value!r}")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty; every example needs a non-empty {field}")
    return value


def parse_history(value: Any, field: str, where: str) -> list[Turn]:
    """Earlier turns as (user, assistant) pairs, from pairs or from alternating role/content messages."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: field {field!r} is not valid JSON ({error.msg})") from None
    if not isinstance(value, list):
        raise DataError(f"{where}: field {field!r} should be a list of turns, found {type(value).__name__}")
    if value and all(isinstance(item, dict) for item in value):
        roles = [item.get("role") for item in value]
        expected = ["user", "assistant"] * (len(value) // 2)
        if roles != expected or len(value) % 2:
            raise DataError(
                f"{where}: field {field!r} messages must alternate user, assistant (ending with assistant); "
                f"found roles {roles}"
            )
        value = [[value[i].get("content"), value[i + 1].get("content")] for i in range(0, len(value), 2)]
    turns: list[Turn] = []
    for number, turn in enumerate(value):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise DataError(
                f"{where}: field {field!r} turn {number} should be [user text, assistant text], found {turn!r}"
            )
        turns.append((turn[0], turn[1]))
    return turns


# ---------------------------------------------------------------------------------------------- seq2seq-lm


class Seq2SeqLmTask(CausalLmTask):
    """``causal-lm``'s prompt/response files for an encoder-decoder (T5, BART): the prompt feeds the encoder,
    the response (+ EOS) is the decoder's target. Same reader, options and text metrics as ``causal-lm``.

    A prompt longer than ``max_length`` is cut from the left, a response on the right (its EOS is lost);
    ``report.truncated`` counts the examples cut, the notes each kind. ``truncation="error"`` refuses either.
    """

    name = "seq2seq-lm"
    head = HeadKind.SEQ2SEQ_LM
    description = "prompt/response pairs from JSONL/CSV for encoder-decoders (T5, BART); ROUGE, BLEU-4, EM"

    def featurize(
        self, examples: list[Example], tokenizer: Any, max_length: int
    ) -> tuple[Features, DataReport]:
        """input_ids = the prompt (the encoder's input); labels = response + EOS (the decoder's targets)."""
        eos, prompt_ids, response_ids = self.tokenize_pairs(examples, tokenizer)
        bos = prepended_bos(tokenizer)  # kept in front of a prompt cut from the left
        features: Features = []
        report = DataReport(examples=len(examples))
        cut_prompts = cut_responses = cut_examples = 0
        for index, example in enumerate(examples):
            prompt, response = list(prompt_ids[index]), list(response_ids[index]) + eos
            for part, tokens in (("prompt", prompt), ("response", response)):
                if self.truncation == "error" and len(tokens) > max_length:
                    raise DataError(
                        f"{example['source']}: {part} ({len(tokens)} tokens) is longer than "
                        f"max_length={max_length}; raise max_length or use truncation='left'"
                    )
            cut_examples += len(prompt) > max_length or len(response) > max_length
            if len(prompt) > max_length:
                prompt = cut_from_the_left(prompt, max_length, bos)
                cut_prompts += 1
            if len(response) > max_length:
                response = response[:max_length]
                cut_responses += 1
            features.append(
                {
                    "input_ids": prompt,
                    "labels": response,
                    "prompt_length": len(prompt),
                    "example_index": index,
                }
            )
        report.truncated, report.cut_for_generation = cut_examples, cut_prompts
        if note := self.answer_room_note([ids for ids in response_ids if ids]):
            report.notes.append(note)
        if note := self.reproduction_note(examples, response_ids, tokenizer):
            report.notes.append(note)
        if cut_prompts:
            report.notes.append(
                f"{self.name}: {cut_prompts} of {len(examples)} prompts were longer than max_length={max_length} "
                "and were cut from the left"
            )
        if cut_responses:
            report.notes.append(
                f"{self.name}: {cut_responses} responses were longer than max_length={max_length} and were "
                "cut on the right (their EOS is lost)"
            )
        return features, report


# ---------------------------------------------------------------------------------------------- squad


class SquadGenerativeTask(GenerativeTask):
    """SQuAD 1.1 answered in words: prompt = context + question, response = the first gold answer.

    Data: ``dev-v1.1.part1.json`` (24 articles) split BY ARTICLE, so no paragraph is seen in both: train =
    the first 18 articles, dev = the last 6. Examples come in a fixed shuffled order (``shuffle_seed``,
    None keeps file order), so ``max_*_samples`` take questions from every article, not the first one.
    Scored like the official script (normalized exact match and token F1 against ALL gold answers) plus
    ROUGE-L.
    """

    name = "squad-generative"
    description = "SQuAD 1.1 as generation (context + question -> answer text); train/dev split by article"
    primary_metric = "f1"
    default_max_new_tokens = 32
    splits = {"train": "dev-v1.1.part1.json", "dev": "dev-v1.1.part1.json"}
    train_articles = 18

    def __init__(self, *, shuffle_seed: int | None = 0, **options: Any) -> None:
        super().__init__(**options)
        self.shuffle_seed = shuffle_seed

    def read(self, data_dir: str, split: str) -> tuple[list[Example], DataReport]:
        from ptuning.tasks.qa import read_squad

        split = self.split_name(split)
        source = Path(data_dir).expanduser()
        path = split_file(source, self.splits[split])
        articles = slice(0, self.train_articles) if split == "train" else slice(self.train_articles, None)
        questions, report = read_squad(path, allow_impossible=False, articles=articles)
        report.notes.append(
            f"{self.name} {split}: articles [{articles.start}:{articles.stop or ''}] of {path.name}"
        )
        examples = [
            {
                "id": question["id"],
                "source": f"{path}: question id {question['id']}",
                "prompt": self.question_prompt(question["context"], question["question"]),
                "response": question["answers"]["text"][0],
                "references": list(question["answers"]["text"]),
                "history": [],
            }
            for question in questions
        ]
        if self.shuffle_seed is not None:
            random.Random(self.shuffle_seed).shuffle(examples)
        return examples, report

    @staticmethod
    def question_prompt(context: str, question: str) -> str:
        return f"{context}\n\nQuestion: {question}\nAnswer with a short phrase from the text."

    def render_response(self, example: Example) -> str:
        # Plain prompts end mid-line: a leading space makes the answer's first token a word start.
        return example["response"] if self.chat_template else " " + example["response"]

    def exact_match_form(self, text: str) -> Any:
        return normalize_answer(text)

    def score(self, examples: list[Example], features: Features, outputs: list[str]) -> dict[str, float]:
        predictions = self.predictions(examples, features, outputs)
        golds = [example["references"] for example in examples]
        exact = [
            max(squad_exact_match(p, g) for g in refs) for p, refs in zip(predictions, golds, strict=True)
        ]
        f1 = [max(token_f1(p, g) for g in refs) for p, refs in zip(predictions, golds, strict=True)]
        return {
            "exact_match": 100.0 * sum(exact) / len(exact),
            "f1": 100.0 * sum(f1) / len(f1),
            "rougeL": text_metrics.rouge(predictions, golds, level="word")["rougeL"],
        }


# ---------------------------------------------------------------------------------------------- conll2003-json


class Conll2003JsonTask(GenerativeTask):
    """CoNLL-2003 NER as format following: sentence -> JSON list of ``[entity text, type]`` pairs.

    Scored by exact match of the whole list (after parsing, so spacing does not matter), micro entity
    precision/recall/F1 over (text, type) pairs, and the share of outputs that parse as such a list.
    """

    name = "conll2003-json"
    description = "CoNLL-2003 sentences -> JSON list of [text, type] entities; exact match + entity F1"
    primary_metric = "entity_f1"
    default_max_new_tokens = 96
    splits = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}
    instruction = "List the named entities (PER, ORG, LOC, MISC) as JSON [[text, type], ...]:"

    def read(self, data_dir: str, split: str) -> tuple[list[Example], DataReport]:
        from ptuning.tasks.tagging import Conll2003Task

        split = self.split_name(split)
        sentences, report = Conll2003Task(splits=self.splits).read(data_dir, split)
        examples = []
        for sentence in sentences:
            entities = [
                [" ".join(sentence["tokens"][start : end + 1]), entity_type]
                for entity_type, start, end in entity_spans(sentence["tags"])
            ]
            response = json.dumps(entities, ensure_ascii=False)
            examples.append(
                {
                    "id": sentence["id"],
                    "source": f"{data_dir}/{self.splits[split]}: sentence {sentence['id']}",
                    "prompt": f"{self.instruction}\n{' '.join(sentence['tokens'])}",
                    "response": response,
                    "references": [response],
                    "entities": entities,
                    "history": [],
                }
            )
        return examples, report

    def render_response(self, example: Example) -> str:
        return example["response"] if self.chat_template else "\n" + example["response"]

    def exact_match_form(self, text: str) -> Any:
        return parse_entities(text)  # the lists are compared, not their spelling

    def score(self, examples: list[Example], features: Features, outputs: list[str]) -> dict[str, float]:
        predictions = [parse_entities(text) for text in self.predictions(examples, features, outputs)]
        golds = [[tuple(entity) for entity in example["entities"]] for example in examples]
        true_positives = sum(
            sum((Counter(p or []) & Counter(g)).values()) for p, g in zip(predictions, golds, strict=True)
        )
        predicted = sum(len(p or []) for p in predictions)
        gold = sum(len(g) for g in golds)
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "exact_match": 100.0 * sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(golds),
            "entity_precision": 100.0 * precision,
            "entity_recall": 100.0 * recall,
            "entity_f1": 100.0 * f1,
            "valid_json": 100.0 * sum(p is not None for p in predictions) / len(predictions),
        }


def parse_entities(text: str) -> list[tuple[str, str]] | None:
    """``[[text, type], ...]`` from generated JSON, or None when the output is not such a list."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    entities = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)):
            return None
        entities.append((item[0], item[1]))
    return entities


TASKS: list[type[Task]] = [CausalLmTask, Seq2SeqLmTask, SquadGenerativeTask, Conll2003JsonTask]
