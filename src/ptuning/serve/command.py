"""``ptuning serve``'s command-line options, kept here so that cli.py only wires them in."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ptuning.core.config import AUTO_DEVICE, BACKBONE_DTYPE_CHOICES, DEVICE_HELP, ConfigError

API_KEY_ENV = "PTUNING_API_KEY"


def _bounded(kind: type, low: float, high: float | None = None, what: str = "") -> Callable[[str], float]:
    """An argparse type: ``kind`` between ``low`` and ``high``, else a one-line usage error naming the range.
    NaN and infinities are refused too: ``float`` parses "nan" and "inf", NaN passes every comparison
    (a NaN wait never closes a batch, a NaN time limit is never reached), and an infinite one is no limit."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


POSITIVE = _bounded(int, 1, what="a positive integer")
PORT = _bounded(int, 0, 65535, what="a port number 0-65535")
NON_NEGATIVE = _bounded(float, 0.0, what="a finite number >= 0")
POSITIVE_SECONDS = _bounded(float, 1e-3, what="a finite positive number of seconds")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--checkpoints", required=True, help="folder whose subfolders are prompt checkpoints")
    add("--model", default="minilm", help="base model: folder, hub id or packaged name (default: minilm)")
    add(
        "--backbone-dtype",
        choices=BACKBONE_DTYPE_CHOICES,
        help="store the shared frozen backbone in this dtype (prefixes and heads stay fp32; auto: bf16 where "
        "the machine computes it natively)",
    )
    add(
        "--backbone-quantization",
        choices=("int8", "int8-dynamic", "nf4"),
        help="int8: weight-only int8 linear layers on CPU (bitsandbytes on CUDA); int8-dynamic: torch dynamic "
        "quantization (CPU, int8 activations with one scale per batch: an answer depends on its batch); nf4: CUDA + bitsandbytes",
    )
    add(
        "--compile",
        action="store_true",
        help="torch.compile the shared frozen backbone, its weights folded into the graph (encoder checkpoints "
        "only; compiled at start-up, a minute or more on a small CPU, before the server answers; "
        "docs/BENCHMARKS.md says when it pays)",
    )
    add("--device", default=AUTO_DEVICE, help=DEVICE_HELP)
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    add("--port", type=PORT, default=8000, help="(default: 8000)")
    add("--max-batch-size", type=POSITIVE, default=32, help="backbone rows per pass (default: 32)")
    add(
        "--max-wait-ms", type=NON_NEGATIVE, default=5.0, help="longest wait for batch companions (default: 5)"
    )
    add(
        "--max-queued-rows",
        type=POSITIVE,
        default=None,
        help="predict rows waiting for the model, 429 above (default: 32 x --max-batch-size; a request "
        "always gets in when nothing waits)",
    )
    add(
        "--max-length",
        type=POSITIVE,
        default=None,
        help="tokens per input, longer ones are cut (default: what each checkpoint was trained with, else 128)",
    )
    add(
        "--max-items",
        type=POSITIVE,
        default=64,
        help="inputs (or /generate messages) per request, 422 above (default: 64)",
    )
    add(
        "--max-text-length",
        type=POSITIVE,
        default=4000,
        help="characters per text (a /generate prompt or message too), 422 above (default: 4000)",
    )
    add(
        "--max-body-bytes",
        type=POSITIVE,
        default=1_000_000,
        help="request body, 413 above (default: 1000000)",
    )
    # generation (causal-LM checkpoints, POST /tasks/{task}/generate): see serve/generate.py
    add(
        "--max-new-tokens",
        type=POSITIVE,
        default=256,
        help="new tokens per generation, 422 above (default: 256)",
    )
    add("--max-prompt-tokens", type=POSITIVE, default=1024, help="prompt tokens, 413 above (default: 1024)")
    add("--max-sequences", type=POSITIVE, default=16, help="generations in flight, 429 above (default: 16)")
    add(
        "--max-seconds",
        type=POSITIVE_SECONDS,
        default=60.0,
        help="seconds per generation, checked between decoding steps (default: 60)",
    )
    add(
        "--api-key-env",
        default=API_KEY_ENV,
        help=f"environment variable holding the API key (default: {API_KEY_ENV}); unset: no key required",
    )
    add("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run_serve(args: argparse.Namespace) -> None:
    """Load the base model and every checkpoint, then serve until interrupted."""
    try:
        import fastapi  # noqa: F401 (checked here: the app module imports it deep inside)
        import uvicorn
    except ImportError as error:
        raise ConfigError(
            f"ptuning serve needs the serve extra ({error.name or 'fastapi/uvicorn'} is missing): "
            "pip install -e '.[serve]'"
        ) from None

    from ptuning.core.checkpoint import CONFIG_FILE
    from ptuning.serve.app import Limits, create_app
    from ptuning.serve.generate import GenerationLimits

    if not Path(args.checkpoints).is_dir():
        raise ConfigError(f"--checkpoints {args.checkpoints}: no such folder")
    if (Path(args.checkpoints) / CONFIG_FILE).is_file():  # one checkpoint, not the folder of them
        raise ConfigError(
            f"--checkpoints {args.checkpoints} is itself a checkpoint; pass the folder that holds it "
            f"({Path(args.checkpoints).resolve().parent}): each of its subfolders is served as a task"
        )
    try:
        limits = Limits(args.max_items, args.max_text_length, args.max_body_bytes)
        generation_limits = GenerationLimits(
            args.max_new_tokens, args.max_prompt_tokens, args.max_sequences, args.max_seconds
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    app = create_app(
        args.checkpoints,
        args.model,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queued_rows=args.max_queued_rows,
        max_length=args.max_length,
        api_key=os.environ.get(args.api_key_env) or None,
        limits=limits,
        generation_limits=generation_limits,
        backbone_dtype=args.backbone_dtype,
        backbone_quantization=args.backbone_quantization,
        compile=args.compile,
        device=args.device,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    """``python -m ptuning.serve.command``: ``ptuning serve`` itself, so a refusal is one line and exit 2 here
    too, not a traceback."""
    from ptuning.cli import main as cli_main  # the CLI imports this module: only when run as a program

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
