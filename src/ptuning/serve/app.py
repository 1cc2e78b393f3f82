"""The HTTP API: one frozen backbone, every prompt checkpoint of a folder, requests batched across tasks.

docs/SERVING.md documents the endpoints, the limits and every status code. Validation stays on the event
loop; tokenization and decoding run on one tokenizer thread (a long request's tokenization takes a while,
and the loop must keep answering meanwhile; one thread, so requests keep their arrival order and the fast
tokenizer is never entered twice at once); the backbone runs on one model thread, fed by the dynamic
batcher, and loading/unloading checkpoints runs on that same thread between passes. A client that hangs
up stops its request (``unless_client_leaves``), counted as 499 in /metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from torch import nn

from ptuning import __version__
from ptuning.core.backbones import load_backbone
from ptuning.core.compilation import CompileStats, compile_backbone, is_compiled
from ptuning.core.config import ConfigError
from ptuning.core.devices import inference_device
from ptuning.core.kinds import HeadKind
from ptuning.core.quantization import (
    backbone_storage,
    check_quantization,
    quantize_backbone,
)
from ptuning.serve.batcher import DynamicBatcher, QueueFull, check_batching
from ptuning.serve.generate import GenerationLimits, add_generate_routes, wants_causal_lm
from ptuning.serve.inputs import ClientGone, InputError, examples_from_inputs, unless_client_leaves
from ptuning.serve.metrics import ServerMetrics
from ptuning.serve.mixed import Group
from ptuning.serve.registry import InvalidName, NotFound, OutsideRoot, PromptRegistry, RegistryError
from ptuning.training.predict import jsonable

logger = logging.getLogger(__name__)
INT8_DYNAMIC_SHARES_SCALES = (
    "int8-dynamic quantizes each pass's activations with one scale, so an answer depends on the requests "
    "batched with it; int8 (weight-only) answers each input alike"
)

API_KEY_HEADER = "X-API-Key"
_TASK_ROUTE = re.compile(r"/tasks/([^/]+)/(?:predict|generate)")
UNKNOWN_TASK_KEY = "(unknown task)"  # /metrics bucket for 404s, so made-up names cannot grow the counters


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests are refused before any model work."""

    max_items: int = 64  # inputs per request -> 422 above
    max_text_length: int = 4000  # characters in any one text of an input -> 422 above
    max_body_bytes: int = 1_000_000  # request body -> 413 above

    def __post_init__(self) -> None:
        if min(self.max_items, self.max_text_length, self.max_body_bytes) < 1:
            raise ValueError("every limit must be >= 1")


Input = str | list[str] | dict[str, Any]


class PredictRequest(BaseModel):
    """Either ``inputs`` (a list, answered by ``predictions``) or ``input`` (one, answered by ``prediction``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["a gripping, funny film", "dull and far too long"]}]},
    )
    inputs: list[Input] | None = Field(
        None, description="texts, lists of fields in order, or objects of named fields (see GET /tasks)"
    )
    input: Input | None = Field(None, description="one input, as in `inputs`")

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.inputs is None) == (self.input is None):
            raise ValueError("give either 'inputs' (a list) or 'input' (one input)")
        return self


class PredictResponse(BaseModel):
    task: str
    predictions: list[dict[str, Any]] | None = None
    prediction: dict[str, Any] | None = None
    truncated: int = Field(description="inputs cut to the task's max_length tokens (GET /tasks)")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming (chunked uploads)."""

    def __init__(
        self, app: Callable, max_bytes: int, on_refused: Callable[[str, int], None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused  # (path, status) of a body refused before routing: counted in /metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body is larger than the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            if self.on_refused is not None:
                self.on_refused(scope["path"], status)
            await JSONResponse({"detail": detail if status == 413 else "bad Content-Length"}, status)(
                scope, receive, send
            )
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited_receive, send)


def create_app(
    checkpoint_dir: str | Path,
    model: str = "minilm",
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_queued_rows: int | None = None,
    max_length: int | None = None,
    api_key: str | None = None,
    limits: Limits | None = None,
    backbone: nn.Module | None = None,
    tokenizer: Any = None,
    generation_limits: GenerationLimits | None = None,
    backbone_dtype: str | None = None,
    backbone_quantization: str | None = None,
    compile: bool = False,
    device: str | None = None,
) -> FastAPI:
    """The server for every checkpoint under ``checkpoint_dir`` on base ``model`` (or a given backbone).

    ``backbone_dtype`` (bf16/fp16) stores the shared frozen backbone smaller; prefixes and heads stay fp32.
    ``backbone_quantization``: ``int8`` (weight-only) or ``int8-dynamic`` quantize the shared backbone's
    linear layers on CPU (``core.quantization``; a given ``backbone`` too), ``int8``/``nf4`` on CUDA load it
    through bitsandbytes. Checkpoints trained on the unquantized model load onto it, at startup and later.
    ``compile`` compiles the shared backbone (``core.compilation``: its frozen weights folded into the
    inference graph) for encoder checkpoints, at start-up: a few passes over a short text build the graphs
    before the first request (``/health`` reports their seconds as ``backbone.compile_warm_up``).

    ``max_batch_size`` is in backbone rows per pass and ``max_wait_ms`` the longest a request waits for
    companions; ``max_queued_rows`` (None: ``batcher.default_queued_rows``, 32 passes' worth) the most
    rows waiting for the model before /predict answers 429; ``max_length`` (tokens per input) overrides
    what each checkpoint was trained with (None: each task uses its own); ``api_key`` (if set) is required
    in the X-API-Key header of every endpoint but /health. ``device`` (``core.devices``) is where the shared backbone and every prompt run: None means
    auto (CUDA when there is one) for a backbone loaded here, and where a given ``backbone`` already is.
    """
    limits = limits or Limits()
    check_batching(max_batch_size, max_wait_ms, max_queued_rows)  # before the model loads, not after
    if (backbone is None) != (tokenizer is None):
        raise ValueError("pass both backbone= and tokenizer=, or neither")
    given = backbone is not None and device is None
    target = next(backbone.parameters()).device if given else inference_device(device)
    after_loading = check_quantization(
        backbone_quantization, target, None if backbone is not None else backbone_dtype
    )
    if backbone_quantization is not None and not after_loading and backbone is not None:
        raise ConfigError(f"{backbone_quantization} is applied while loading: pass no backbone=")
    if backbone is None:
        backbone, tokenizer = load_backbone(
            model,
            causal_lm=wants_causal_lm(checkpoint_dir),
            dtype=backbone_dtype,
            quantization=None if after_loading else backbone_quantization,
            device=target,
        )
    elif device is not None:
        backbone.to(target)
    if after_loading:
        quantize_backbone(backbone, backbone_quantization)  # records the unquantized fingerprints first
    if backbone_quantization == "int8-dynamic":
        logger.warning(INT8_DYNAMIC_SHARES_SCALES)
    storage = backbone_storage(backbone)
    registry = PromptRegistry(checkpoint_dir, backbone, tokenizer, max_length)
    if compile:
        if registry.causal_lm:
            raise ConfigError(
                "--compile serves encoder checkpoints (classification, tagging, QA); a causal LM generates "
                "through a growing cache that the compiled graph was not built for: serve it without --compile"
            )
        compile_backbone(registry.model)
    storage["compiled"] = is_compiled(registry.model)
    report = registry.scan()
    for name, reason in report["failed"].items():
        logger.warning("checkpoint %s not served: %s", name, reason)
    if compile:
        before = CompileStats.now()
        passes = registry.warm_up()
        storage["compile_warm_up"] = asdict(CompileStats.now().since(before)) | {"passes": passes}
        logger.info("compiled at start-up: %s", storage["compile_warm_up"])
    if registry.tasks:
        logger.info("serving %d tasks from %s", len(registry.tasks), checkpoint_dir)
    else:  # a server that answers every task with 404: say so where it starts
        logger.warning(
            "serving no tasks: %s holds no loadable checkpoint folder (add some and POST /rescan)",
            checkpoint_dir,
        )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptuning-model")
    tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptuning-tokenize")
    metrics = ServerMetrics()
    batcher = DynamicBatcher(
        registry.run, executor, max_batch_size, max_wait_ms, metrics.record_batch, max_queued_rows
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()
        executor.shutdown(wait=False)
        tokenizer_thread.shutdown(wait=False)

    app = FastAPI(
        title="ptuning serve",
        version=__version__,
        description="One frozen backbone, many P-tuning v2 prompt checkpoints; requests for different "
        "tasks share one backbone pass. Limits and status codes: docs/SERVING.md.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.limits = limits

    def count_refused(task: str | None, status: int) -> None:
        """A request refused before its route ran counts under its task (or the unknown-task bucket)."""
        if task is not None:
            metrics.record_request(task if task in registry.tasks else UNKNOWN_TASK_KEY, status, 0.0)

    def count_refused_body(path: str, status: int) -> None:
        match = _TASK_ROUTE.fullmatch(path)
        count_refused(match.group(1) if match else None, status)

    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes, on_refused=count_refused_body)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=error)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    def count_invalid(request: Request, status: int = 422) -> None:
        """A refused predict body counts under its task (or the unknown-task bucket) in /metrics."""
        count_refused(request.path_params.get("task"), status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each input back, which fails with 500 when it holds NaN or Infinity
        # (not JSON) and recurses through deeply nested ones: answer where and what, not the input
        count_invalid(request)
        errors = [{key: e[key] for key in ("type", "loc", "msg") if key in e} for e in error.errors()]
        return JSONResponse({"detail": _json_safe(jsonable_encoder(errors))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 for a body it cannot decode (invalid UTF-8, nesting too deep for the JSON
        # parser); that is a malformed body like any other: 422
        cause = error.__cause__
        if error.status_code == 400 and isinstance(cause, UnicodeDecodeError | RecursionError | ValueError):
            count_invalid(request)
            reason = "not UTF-8" if isinstance(cause, UnicodeDecodeError) else "nested too deeply"
            return JSONResponse({"detail": f"malformed JSON body: {reason}"}, status_code=422)
        if error.status_code == 413:  # a streamed body past the limit (BodyLimitMiddleware)
            count_invalid(request, 413)
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)

    async def on_model_thread(function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    async def on_tokenizer_thread(function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(tokenizer_thread, function, *args)

    router = APIRouter(dependencies=[Depends(_key_check(api_key))] if api_key else [])

    @app.get("/health", tags=["status"])
    def health() -> dict[str, Any]:
        """Liveness: always answers, without an API key."""
        return {
            "status": "ok",
            "tasks": len(registry.tasks),
            "base_model": registry.base_name,
            "fingerprint": registry.fingerprint,
            "backbone": storage,
        }

    @router.get("/tasks", tags=["tasks"])
    def list_tasks() -> dict[str, Any]:
        tasks = registry.tasks  # one mapping: a reload swaps in another between two reads
        return {"tasks": [tasks[name].describe() for name in sorted(tasks)]}

    @router.get("/tasks/{task}", tags=["tasks"], responses={404: {"description": "unknown task"}})
    def describe_task(task: str) -> dict[str, Any]:
        served = registry.tasks.get(task)
        if served is None:
            raise HTTPException(404, f"unknown task {task!r}; GET /tasks lists the served ones")
        return served.describe()

    @router.post(
        "/tasks/{task}/predict",
        tags=["tasks"],
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses={
            404: {"description": "unknown task"},
            413: {"description": "body too large"},
            422: {"description": "malformed input, too many inputs or a text too long"},
            429: {"description": "too many rows wait for the model; retry after the Retry-After seconds"},
            500: {"description": "the model failed on this request (others are unaffected)"},
            503: {"description": "the task was unloaded while the request waited"},
        },
    )
    async def predict(task: str, body: PredictRequest, request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        served = registry.tasks.get(task)
        if served is None:
            metrics.record_request(UNKNOWN_TASK_KEY, 404, 0.0)
            raise HTTPException(404, f"unknown task {task!r}; GET /tasks lists the served ones")
        inputs = body.inputs if body.inputs is not None else [body.input]
        try:
            result = await unless_client_leaves(request, _predict(served, inputs))
        except ClientGone:
            metrics.record_request(task, 499, time.perf_counter() - started)
            raise HTTPException(499, "the client disconnected before its answer was ready") from None
        except HTTPException as error:
            metrics.record_request(task, error.status_code, time.perf_counter() - started)
            raise
        metrics.record_request(task, 200, time.perf_counter() - started, len(inputs))
        many = body.inputs is not None
        return {
            "task": task,
            "predictions" if many else "prediction": result["predictions"]
            if many
            else result["predictions"][0],
            "truncated": result["truncated"],
        }

    async def _predict(served, inputs: list[Any]) -> dict[str, Any]:
        if served.kind in (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM):
            raise HTTPException(422, f"{served.name!r} generates text: POST /tasks/{served.name}/generate")
        if not inputs:
            raise HTTPException(422, "inputs is empty")
        if len(inputs) > limits.max_items:
            raise HTTPException(422, f"{len(inputs)} inputs; at most {limits.max_items} per request")
        if batcher.full:  # refused before its tokenization costs anything
            waiting, limit = batcher.queued_rows, batcher.max_queued_rows
            raise _queue_full(
                QueueFull(f"{waiting} rows are waiting for the model, the limit is {limit}; retry")
            )

        def featurize() -> tuple[list[dict[str, Any]], Any, Any]:
            examples = examples_from_inputs(served.task, inputs, limits.max_text_length)
            return examples, *served.task.featurize(examples, tokenizer, served.max_length)

        try:
            examples, features, report = await on_tokenizer_thread(featurize)
        except (InputError, ValueError, KeyError, TypeError) as error:
            raise HTTPException(422, f"task {served.name!r}: {error}") from None
        try:
            outputs = await batcher.submit(Group(served.head, served.prefix, served.kind, features))
            predictions = await on_tokenizer_thread(served.task.decode, examples, features, outputs)
        except QueueFull as error:
            raise _queue_full(error) from None
        except RegistryError as error:
            raise HTTPException(error.status, str(error)) from None
        except Exception as error:
            logger.exception("task %s: request failed", served.name)
            raise HTTPException(
                500,
                f"the model failed on this request ({type(error).__name__}); other requests are unaffected",
            ) from None
        predictions = [  # as ``ptuning predict`` writes them: the example's id first
            prediction if "id" in prediction else {"id": example.get("id"), **prediction}
            for example, prediction in zip(examples, predictions, strict=True)
        ]
        return {"predictions": jsonable(predictions), "truncated": report.truncated}

    @router.get("/metrics", tags=["status"])
    def get_metrics() -> dict[str, Any]:
        """Request counts per task and status, batch sizes and composition, latency percentiles (ms)."""
        return {**metrics.snapshot(), "tasks_served": len(registry.tasks)}

    @router.get("/checkpoints", tags=["checkpoints"])
    def list_checkpoints() -> dict[str, Any]:
        return registry.describe()

    @router.post(
        "/checkpoints/{name}",
        tags=["checkpoints"],
        status_code=201,
        responses={
            403: {"description": "the name resolves outside the checkpoint folder"},
            404: {"description": "no such folder"},
            409: {"description": "trained on another base model"},
            422: {"description": "invalid name, or not a servable checkpoint"},
        },
    )
    async def add_checkpoint(name: str) -> dict[str, Any]:
        """Load (or reload) the checkpoint in subfolder ``name`` of the checkpoint folder."""
        try:
            prepared = await run_in_threadpool(registry.prepare, name)
            served = await on_model_thread(registry.commit, prepared)
        except RegistryError as error:
            if not isinstance(error, InvalidName | OutsideRoot | NotFound):
                registry.failed[name] = str(error)
            raise HTTPException(error.status, str(error)) from None
        return {"checkpoint": name, "tasks": served}

    @router.delete(
        "/checkpoints/{name}", tags=["checkpoints"], responses={404: {"description": "not loaded"}}
    )
    async def remove_checkpoint(name: str) -> dict[str, Any]:
        """Stop serving checkpoint ``name``; its files are left alone."""
        try:
            served = await on_model_thread(registry.unload, name)
        except RegistryError as error:
            raise HTTPException(error.status, str(error)) from None
        return {"checkpoint": name, "removed_tasks": served}

    @router.post("/rescan", tags=["checkpoints"])
    async def rescan() -> dict[str, Any]:
        """Load new and changed checkpoint folders, unload those that disappeared."""
        try:
            changed, gone = registry.changes()
            result: dict[str, Any] = {"loaded": [], "removed": [], "failed": registry.refresh_failures()}
        except RegistryError as error:  # the folder itself unreadable: nothing is judged, nothing changes
            raise HTTPException(error.status, str(error)) from None
        for name in gone:
            try:
                await on_model_thread(registry.unload, name)
                result["removed"].append(name)
            except NotFound:  # unloaded meanwhile by a DELETE
                pass
        for name in changed:
            try:
                prepared = await run_in_threadpool(registry.prepare, name)
                await on_model_thread(registry.commit, prepared)
                result["loaded"].append(name)
            except RegistryError as error:
                registry.failed[name] = result["failed"][name] = str(error)
        return result

    add_generate_routes(
        app,
        router,
        registry,
        executor,
        generation_limits or GenerationLimits(),
        tokenizer_thread=tokenizer_thread,
        max_text_length=limits.max_text_length,
        max_messages=limits.max_items,
    )
    app.include_router(router)
    return app


def _queue_full(error: QueueFull) -> HTTPException:
    return HTTPException(429, str(error), headers={"Retry-After": "1"})


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities spelled as strings (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _key_check(expected: str) -> Callable:
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    async def require_key(given: str | None = Security(header)) -> None:
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    return require_key
