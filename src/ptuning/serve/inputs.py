"""What a client sends, turned into the examples a task featurizes, the same way ``ptuning predict`` reads
JSONL records (``training.predict.examples_from_records``), so both give the same answers.

An input is an object of the task's own fields ({"premise": ..., "hypothesis": ...}, {"tokens": [...]},
{"question": ..., "context": ...}), or a shorthand for one:

* a string: the only field of a single-text task, or a sentence split on whitespace for tagging;
* a list of strings: the fields in order for classification tasks, the words for tagging.

Texts longer than the limit, inputs nested deeper than any task's format (``MAX_DEPTH``), strings that are
not valid Unicode (JSON's lone surrogates, which neither the tokenizer nor the response can encode) are
refused here, before any tokenization; ids are checked as ``ptuning predict`` checks them (``record_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from ptuning.core.kinds import HeadKind
from ptuning.tasks.base import DataError, Task
from ptuning.tasks.readers import Table
from ptuning.training.predict import examples_from_records

Example = dict[str, Any]
T = TypeVar("T")
MAX_DEPTH = 8  # an input is at most an object of lists of strings; deeper ones are refused (422)


class InputError(ValueError):
    """A request input that does not fit its task; the message names the input and what was expected."""


class ClientGone(Exception):
    """The client hung up before its answer was ready (counted as 499, nginx's code; nothing is sent)."""


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientGone`` as soon as the client disconnects, ``work`` then cancelled.

    Starlette never cancels a handler whose client went away, so without this a request nobody waits for
    still holds its place (a generation slot, rows in the predict queue) until its answer is computed. The
    body is read before the handler runs, so the next message the server gets is the disconnect."""
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done():
            raise ClientGone
        return job.result()
    finally:
        for task in (job, watcher):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def examples_from_inputs(task: Task, inputs: list[Any], max_text_length: int) -> list[Example]:
    """One unlabelled example per input, in the task's own example format."""
    records = []
    for index, value in enumerate(inputs):
        where = f"input {index}"
        _check_lengths(value, max_text_length, where)
        records.append(_record(task, value, where))
    columns = list(dict.fromkeys(key for record in records for key in record))
    table = Table("request", columns, records, [f"input {i}" for i in range(len(records))])
    try:
        return examples_from_records(task, table, "jsonl")
    except DataError as error:
        raise InputError(str(error)) from None


def input_fields(task: Task) -> list[str]:
    """The names an input object gives the task's fields, in order: a field's own name where the task reads it
    under that name, else the first column it reads it from (a csv task's ``text_field``, pair-classification's
    ``sentence1``), as ``ptuning predict`` names a text line's column."""
    names = []
    for name, columns in getattr(task, "fields", {}).items():
        names.append(name if not columns or name in columns else columns[0])
    return names


def _record(task: Task, value: Any, where: str) -> dict[str, Any]:
    """The JSONL record an input stands for."""
    if isinstance(value, dict):
        return dict(value)
    fields = input_fields(task)
    words = task.head is HeadKind.TOKEN_CLASSIFICATION
    if isinstance(value, str):
        if words:
            return {"tokens": value.split()}
        if len(fields) == 1:
            return {fields[0]: value}
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        if words:
            return {"tokens": value}
        if fields and len(value) == len(fields):
            return dict(zip(fields, value, strict=True))
    expected = (
        "a sentence, a list of words or {'tokens': [...]}"
        if words
        else f"an object of the fields {fields}" + (" or a list of them in that order" if fields else "")
    )
    raise InputError(f"{where}: task {task.name!r} takes {expected}")


def _check_lengths(value: Any, limit: int, where: str) -> None:
    """Every text within ``limit`` characters and valid Unicode, nesting within ``MAX_DEPTH``, without
    recursion. JSON lets a body spell a lone surrogate (``"\\ud800"``), which no UTF-8 encoder takes: refused
    here with its place, rather than by the tokenizer with a message naming no input, or by the response."""
    pending = [(value, where, 1)]
    while pending:
        item, place, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels; no task reads such input")
        if isinstance(item, str):
            if len(item) > limit:
                raise InputError(
                    f"{place}: a text of {len(item)} characters is longer than the limit {limit}"
                )
            if not encodable(item):
                raise InputError(f"{place}: not valid Unicode (a lone surrogate)")
        elif isinstance(item, list | tuple):
            pending.extend((child, place, depth + 1) for child in item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not encodable(key):
                    raise InputError(
                        f"{place}: the field name {key!r} is not valid Unicode (a lone surrogate)"
                    )
                pending.append((child, f"{place}, field {key!r}", depth + 1))


def encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
