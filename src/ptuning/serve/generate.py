"""``POST /tasks/{task}/generate``: causal-LM prompt checkpoints answered by one continuous decoding batch.

Every request becomes one ``Sequence`` of a single ``ContinuousDecoder`` over the server's backbone:
requests for different tasks (prefixes) decode in the same batch, joining and leaving it between steps.
The decoder's steps run on the server's one model thread, between the predict batches and checkpoint
loads, so nothing changes the model while a step runs. Prompts are tokenized on the server's tokenizer
thread, after their texts passed the character limit /predict's texts pass. Answers are JSON, or server-sent
events with ``"stream": true``; a client that hangs up, either way, ends its sequence at the next step and
frees its place (counted as 499). Greedy answers equal ``ptuning predict`` on the same checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ptuning.core.checkpoint import CONFIG_FILE
from ptuning.core.config import ConfigError, PositionMode
from ptuning.core.kinds import HeadKind
from ptuning.generation import ContinuousDecoder, SamplingParams, Sequence, StepEvent
from ptuning.generation.texts import generation_prompts, prompt_room, stop_ids
from ptuning.serve.inputs import ClientGone, encodable, unless_client_leaves
from ptuning.serve.registry import PromptRegistry, ServedTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationLimits:
    """What one generation request may ask for, and how many may be in flight at once."""

    max_new_tokens: int = 256  # per request -> 422 above
    max_prompt_tokens: int = 1024  # after the task's template -> 413 above
    max_sequences: int = 16  # decoding or waiting to join, all tasks together -> 429 above
    max_seconds: float = 60.0  # per request: decoding stops there with finish_reason "time"

    def __post_init__(self) -> None:
        # written so NaN fails too: a NaN (or infinite) time limit is never reached
        positive_seconds = 0 < self.max_seconds < math.inf
        if min(self.max_new_tokens, self.max_prompt_tokens, self.max_sequences) < 1 or not positive_seconds:
            raise ValueError(f"every generation limit must be positive (max_seconds finite), got {self}")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str


MAX_STOP_STRINGS = 16  # per /generate request (check_prompt_texts says why there is a limit)
MAX_STOP_LENGTH = 256  # characters of one stop string


class GenerateRequest(BaseModel):
    """A prompt (or chat messages ending with a user turn) and how to decode it; greedy by default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "what is the capital of france", "max_new_tokens": 16}]},
    )
    prompt: str | None = Field(None, description="the prompt, rendered with the task's own template")
    messages: list[Message] | None = Field(
        None, description="alternating user/assistant turns ending with a user turn (earlier turns = history)"
    )
    max_new_tokens: int | None = Field(None, ge=1, description="default: the task's own setting")
    temperature: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="0 = greedy (what ptuning predict does)"
    )
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] | str | None = Field(None, description="strings that end the answer (not included)")
    seed: int | None = Field(
        None, ge=-(2**63), lt=2**64, description="makes a sampled answer repeatable (torch's 64-bit range)"
    )
    stream: bool = Field(False, description="answer as server-sent events, one per new token")

    @model_validator(mode="after")
    def _exactly_one(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either 'prompt' or 'messages'")
        return self

    @model_validator(mode="after")
    def _valid_unicode(self) -> GenerateRequest:
        """JSON can spell a lone surrogate ("\\ud800"), which no UTF-8 encoder takes: the tokenizer refused a
        prompt with a message naming no field, and a stop string never matched (a 200)."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        texts = [("prompt", self.prompt)] + [
            (f"messages[{i}].content", message.content) for i, message in enumerate(self.messages or [])
        ]
        texts += [(f"stop[{i}]", text) for i, text in enumerate(stops)]
        for field, text in texts:
            if text is not None and not encodable(text):
                raise ValueError(f"field {field!r}: not valid Unicode (a lone surrogate)")
        return self


class GenerateResponse(BaseModel):
    task: str
    text: str = Field(description="the answer, cut at EOS or a stop string and stripped")
    finish_reason: str = Field(description="eos, length, stop or time")
    tokens: int = Field(description="new tokens generated (EOS not counted)")
    prompt_tokens: int = Field(description="the prompt's tokens the answer was generated from")
    prompt_cut_tokens: int = Field(
        0,
        description=(
            "tokens cut from the prompt's left to fit the checkpoint's max_length and leave max_new_tokens room "
            "in the model's positions, as ptuning predict cuts"
        ),
    )
    seed: int | None = Field(description="the sampling seed used (null when greedy)")


def wants_causal_lm(checkpoint_dir: str | Path) -> bool:
    """Whether the checkpoint folder holds causal-LM checkpoints, so the server must load a ``*ForCausalLM``."""
    for config_file in sorted(Path(checkpoint_dir).glob(f"*/{CONFIG_FILE}")):
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # the registry reports unreadable checkpoints when it loads them
        if isinstance(config, dict) and (config.get("base_model") or {}).get("causal_lm"):
            return True
    return False


class GenerationService:
    """Feeds requests into one ``ContinuousDecoder`` and hands each request its own events."""

    def __init__(
        self, registry: PromptRegistry, executor: Executor, limits: GenerationLimits, metrics: Any = None
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.executor = executor
        self.limits = limits
        self.decoder: ContinuousDecoder | None = None
        self._waiting: list[Sequence] = []
        self._cancelled: set[int] = set()
        self._queues: dict[int, asyncio.Queue] = {}
        self._pump: asyncio.Task | None = None
        self.peak_rows = 0  # the most sequences decoded in one step so far

    @property
    def in_flight(self) -> int:
        return len(self._queues)

    def submit(self, sequence: Sequence) -> asyncio.Queue:
        """Queue ``sequence`` to join the batch at the next step; its events arrive on the returned queue."""
        if self.in_flight >= self.limits.max_sequences:
            raise HTTPException(
                429,
                f"{self.in_flight} sequences are being generated, the limit is {self.limits.max_sequences}; "
                "retry shortly",
                headers={"Retry-After": "1"},
            )
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[sequence.id] = queue
        self._waiting.append(sequence)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())
        return queue

    def cancel(self, sequence: Sequence) -> None:
        """Stop generating for a client that went away."""
        if self._queues.pop(sequence.id, None) is None:
            return
        if sequence in self._waiting:
            self._waiting.remove(sequence)
        else:
            self._cancelled.add(sequence.id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting or (self.decoder is not None and self.decoder.rows):
            admit, self._waiting = self._waiting, []
            cancel, self._cancelled = self._cancelled, set()
            try:
                events, gone, held = await loop.run_in_executor(self.executor, self._step, admit, cancel)
            except Exception as error:  # a failed step fails every sequence in it; the next one starts clean
                logger.exception("generation step failed")
                running = self.decoder.rows if self.decoder is not None else []
                self.decoder = None
                for sequence in [*admit, *running]:
                    self._deliver(sequence.id, error)
                continue
            for sequence in gone:
                self._deliver(
                    sequence.id, HTTPException(503, "the task was unloaded before generation began")
                )
            for event in events:
                self._deliver(event.sequence.id, event)
            # first in line again, unless their client went away meanwhile
            self._waiting = [s for s in held if s.id in self._queues] + self._waiting

    def _deliver(self, sequence_id: int, item: StepEvent | Exception) -> None:
        queue = self._queues.get(sequence_id)
        if queue is None:
            return
        queue.put_nowait(item)
        if not isinstance(item, StepEvent) or item.finished:
            del self._queues[sequence_id]

    def _step(
        self, admit: list[Sequence], cancel: set[int]
    ) -> tuple[list[StepEvent], list[Sequence], list[Sequence]]:
        """One decoding step on the model thread: the step's events, the sequences refused because their prefix
        was unloaded meanwhile, and those held back because their prefix covers other layers than the running
        rows' (a checkpoint replaced while its generations ran); they join once those rows have finished."""
        if self.decoder is None:
            self.decoder = ContinuousDecoder(self.registry.model, self.registry.tokenizer)
        gone = [s for s in admit if s.prefix not in self.registry.model.prefixes]
        present = [s for s in admit if s.prefix in self.registry.model.prefixes]
        joining = self.decoder.admissible(s for s in present if s.id not in cancel)
        held = [s for s in present if s not in joining and s.id not in cancel]
        events = self.decoder.step(admit=joining, cancel=cancel)
        self.peak_rows = max(self.peak_rows, len({event.sequence.id for event in events}))
        return events, gone, held


def prompt_token_ids(
    served: ServedTask, tokenizer: Any, body: GenerateRequest, prompt_limit: int | None = None
) -> tuple[list[int], int]:
    """The prompt's tokens exactly as the task builds them for training and ``ptuning predict`` (cut from the
    left to the checkpoint's ``max_length``, and to ``prompt_limit``: what the model's positions leave beside
    the request's max_new_tokens), and how many tokens that cut."""
    if body.messages is not None:
        turns = [(m.role, m.content) for m in body.messages]
        roles = [role for role, _ in turns]
        if len(turns) % 2 == 0 or roles != ["user", "assistant"] * (len(turns) // 2) + ["user"]:
            raise HTTPException(
                422, f"messages must alternate user, assistant and end with user; got {roles}"
            )
        history = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 1, 2)]
        prompt = turns[-1][1]
    else:
        history, prompt = [], body.prompt
    example = {"id": 0, "source": "request", "prompt": prompt, "response": "", "history": history}
    example["references"] = [""]
    try:
        (whole,), _ = served.task.featurize([example], tokenizer, 1 << 30)
        (fitted,), _ = served.task.featurize([example], tokenizer, served.max_length, prompt_limit)
    except (ValueError, KeyError, TypeError) as error:
        raise HTTPException(422, f"task {served.name!r}: {error}") from None
    # the prompt evaluation and predict decode from: a task whose empty response still renders a token (" ")
    # shortened input_ids' prompt by one more
    prompt, uncut = (list(generation_prompts([feature])[0]) for feature in (fitted, whole))
    return prompt, len(uncut) - len(prompt)


def check_prompt_texts(body: GenerateRequest, max_text_length: int, max_messages: int) -> None:
    """Refuse (422) a prompt or message longer than ``max_text_length`` characters, or more than
    ``max_messages`` messages, before anything is tokenized: a prompt is cut to the checkpoint's max_length
    after tokenization, so without this a 1 MB prompt was tokenized (twice) before being cut or refused.
    Stop strings are held to ``MAX_STOP_STRINGS`` of ``MAX_STOP_LENGTH`` characters: every decoding step
    matches each against the text's tail, on the one model thread, so 240 of 4,000 characters made one
    request stall every other generation on the server ~10x."""
    if body.messages is not None and len(body.messages) > max_messages:
        raise HTTPException(422, f"{len(body.messages)} messages; at most {max_messages} per request")
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > MAX_STOP_STRINGS:
        raise HTTPException(422, f"{len(stops)} stop strings; at most {MAX_STOP_STRINGS} per request")
    for index, stop in enumerate(stops):
        if len(stop) > MAX_STOP_LENGTH:
            raise HTTPException(
                422,
                f"field 'stop[{index}]': a stop string of {len(stop)} characters is longer than the limit "
                f"{MAX_STOP_LENGTH}",
            )
    texts = [("prompt", body.prompt)] + [
        (f"messages[{i}].content", message.content) for i, message in enumerate(body.messages or [])
    ]
    for field, text in texts:
        if text is not None and len(text) > max_text_length:
            raise HTTPException(
                422,
                f"field {field!r}: a text of {len(text)} characters is longer than the limit "
                f"{max_text_length}",
            )


def add_generate_routes(
    app: FastAPI,
    router: APIRouter,
    registry: PromptRegistry,
    executor: Executor,
    limits: GenerationLimits,
    tokenizer_thread: Executor | None = None,
    max_text_length: int = 4000,
    max_messages: int = 64,
) -> GenerationService:
    """Add ``POST /tasks/{task}/generate`` to ``router`` (the server's, so its API key applies).

    Prompts are tokenized on ``tokenizer_thread`` (None: the event loop's default executor); their texts
    are refused above ``max_text_length`` characters and ``max_messages`` messages (the server's
    ``--max-text-length`` and ``--max-items``)."""
    service = GenerationService(registry, executor, limits, app.state.metrics)
    app.state.generation = service

    @router.post(
        "/tasks/{task}/generate",
        tags=["tasks"],
        response_model=GenerateResponse,
        responses={
            200: {"description": "the answer (JSON), or with stream=true server-sent events"},
            404: {"description": "unknown task"},
            413: {"description": "prompt longer than the server's max prompt tokens"},
            422: {
                "description": "not a causal-LM task, bad settings, a text too long, or more new tokens "
                "than allowed or fit"
            },
            429: {"description": "too many sequences in flight; retry after the Retry-After seconds"},
            503: {"description": "the task was unloaded while the request waited"},
        },
    )
    async def generate(task: str, body: GenerateRequest, request: Request):
        started = time.perf_counter()
        metrics = service.metrics
        try:
            sequence, served, cut = await _sequence(task, body)
            queue = service.submit(sequence)
        except HTTPException as error:
            metrics.record_request(
                task if task in registry.tasks else "(unknown task)", error.status_code, 0.0
            )
            raise
        if body.stream:
            events = _server_sent_events(service, sequence, queue, task, started, cut)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            await unless_client_leaves(request, _finished(queue))
        except ClientGone:
            metrics.record_request(task, 499, time.perf_counter() - started)
            raise HTTPException(499, "the client disconnected before its answer was ready") from None
        except HTTPException as error:
            metrics.record_request(task, error.status_code, time.perf_counter() - started)
            raise
        finally:
            service.cancel(sequence)  # no-op once finished; stops decoding if the client went away
        metrics.record_request(task, 200, time.perf_counter() - started, 1)
        return _summary(task, sequence, cut)

    async def _sequence(task: str, body: GenerateRequest) -> tuple[Sequence, ServedTask, int]:
        served = registry.tasks.get(task)
        if served is None:
            raise HTTPException(404, f"unknown task {task!r}; GET /tasks lists the served ones")
        if served.kind is not HeadKind.CAUSAL_LM:
            raise HTTPException(422, f"task {task!r} is a {served.kind} task; use POST /tasks/{task}/predict")
        check_prompt_texts(body, max_text_length, max_messages)
        wanted = body.max_new_tokens or min(served.task.max_new_tokens, limits.max_new_tokens)
        if wanted > limits.max_new_tokens:
            raise HTTPException(
                422, f"max_new_tokens={wanted}; this server allows at most {limits.max_new_tokens}"
            )
        stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        try:
            params = SamplingParams(wanted, body.temperature, body.top_p, body.seed, stops)
        except ConfigError as error:
            raise HTTPException(422, str(error)) from None
        positions = registry.model.geometry.usable_positions  # learned position tables end somewhere
        shifted = registry.model.prefix_config.position_mode is PositionMode.SHIFT  # one mode per server
        # PEFT's numbering ("shift"): the prompt's tokens come after the prefix's positions
        slots = served.prefix_length if shifted else 0
        room = prompt_room(positions, slots, wanted)  # the prompt is cut to it, as predict cuts
        if room is not None and room < 1:
            raise HTTPException(
                422,
                f"max_new_tokens={wanted} leaves no room for a prompt in the model's {positions} positions"
                f"{f' ({slots} taken by the prefix)' if slots else ''}; ask for at most {positions - slots}",
            )
        loop = asyncio.get_running_loop()
        prompt, cut = await loop.run_in_executor(
            tokenizer_thread, prompt_token_ids, served, registry.tokenizer, body, room
        )
        if not prompt:
            raise HTTPException(422, "the prompt is empty after tokenization; give at least one token")
        if len(prompt) > limits.max_prompt_tokens:
            kept = (
                f" ({len(prompt)} after the cut to the checkpoint's max_length and positions)" if cut else ""
            )
            raise HTTPException(
                413,
                f"the prompt has {len(prompt) + cut} tokens{kept}; this server allows at most "
                f"{limits.max_prompt_tokens}",
            )
        deadline = time.monotonic() + limits.max_seconds
        ends = stop_ids(getattr(served.task, "generate_kwargs", None) or {})  # the task's own, as predict's
        return Sequence(prompt, served.prefix, params, deadline=deadline, eos_ids=ends), served, cut

    return service


async def _finished(queue: asyncio.Queue) -> None:
    """Wait for a sequence's last event; a failure arrives as an exception, raised as its HTTP error."""
    while True:
        item = await queue.get()
        if isinstance(item, Exception):
            raise _http_error(item)
        if item.finished:
            return


async def _server_sent_events(
    service: GenerationService, sequence: Sequence, queue: asyncio.Queue, task: str, started: float, cut: int
) -> AsyncIterator[str]:
    """``data: {"token", "text"}`` per new token, then ``data: {...summary, "done": true}``; errors as
    ``event: error``. A client that disconnects cancels its sequence."""
    status = 200
    try:
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                error = _http_error(item)
                status = error.status_code
                yield f"event: error\ndata: {json.dumps({'status': status, 'detail': error.detail})}\n\n"
                return
            ended_at_eos = item.finished and sequence.finish_reason == "eos"
            token = None if ended_at_eos else item.token  # EOS is not part of the answer
            if token is not None or item.delta:
                yield f"data: {json.dumps({'token': token, 'text': item.delta})}\n\n"
            if item.finished:
                yield f"data: {json.dumps({**_summary(task, sequence, cut), 'done': True})}\n\n"
                return
    finally:
        service.cancel(sequence)
        if status == 200 and (sequence.finish_reason == "cancelled" or not sequence.finished):
            status = 499  # the client went away (nginx's code; never sent); an error sent keeps its status
        if service.metrics is not None:
            service.metrics.record_request(task, status, time.perf_counter() - started, 1)


def _summary(task: str, sequence: Sequence, cut: int) -> dict[str, Any]:
    return {
        "task": task,
        "text": sequence.answer,
        "finish_reason": sequence.finish_reason,
        "tokens": len(sequence.tokens),
        "prompt_tokens": len(sequence.prompt),
        "prompt_cut_tokens": cut,
        "seed": sequence.seed,
    }


def _http_error(error: Exception) -> HTTPException:
    if isinstance(error, HTTPException):
        return error
    return HTTPException(
        500,
        f"generation failed ({type(error).__name__}); the sequences decoding beside it failed with it, "
        "later requests start afresh",
    )
