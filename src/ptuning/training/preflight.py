"""Checks a run must pass before anything heavy loads: where it writes, what the machine offers, what fits.

Why here and not where the failure would happen: a model takes seconds to minutes to load, and a wrong output
folder or an attention kernel that is not installed used to surface after that as a traceback. Each check
reads only the file system, the installed packages and the model's config.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import parse_flag_from_env

from ptuning.core.config import ConfigError, Method
from ptuning.core.geometry import PrefixGeometry, UnsupportedModelError
from ptuning.core.kinds import HeadKind
from ptuning.core.precision import resolve_auto
from ptuning.core.quantization import loading_kwargs
from ptuning.training.config import TrainConfig, flag_name

POOLED_KINDS = (HeadKind.CLASSIFICATION, HeadKind.REGRESSION, HeadKind.MULTIPLE_CHOICE)
LM_KINDS = (HeadKind.CAUSAL_LM, HeadKind.SEQ2SEQ_LM)  # no head of ours: the backbone's own LM head decodes
KERNEL_PACKAGES = {"flash_attention_2": "flash_attn"}


def check_run(config: TrainConfig, head_kinds: dict[str, HeadKind]) -> None:
    """Every check below; the first failure is a one-line ConfigError."""
    check_output_dir(Path(config.output_dir))
    check_attention(config.attn_implementation)
    check_backbone_options(config)
    check_sharding(config)
    check_mixed_precision(config)
    check_pooling(config, head_kinds)
    check_language_model_heads(config, head_kinds)
    check_positions(config)
    check_prompt_room(config, head_kinds)
    check_init_prefix(config)


def check_output_dir(output_dir: Path) -> None:
    """The folder is (or can become) a writable folder: not a file, not inside a file, not read-only.

    A folder that does not exist yet is not created here (the run creates it once data and model have
    loaded): its nearest existing parent must be writable, so a run that fails a later check leaves no
    empty folder behind."""
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == output_dir else f"is inside {existing}, which is a file"
        raise ConfigError(f"--output-dir {output_dir} {where}; expected a folder")
    where = "" if existing == output_dir else f" (it would be created in {existing})"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"--output-dir {output_dir} is not writable{where} ({error.strerror})") from None
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output-dir {output_dir} is not writable{where} (permission denied)")
    if existing == output_dir and _holds_a_model(output_dir):
        raise ConfigError(
            f"--output-dir {output_dir} holds a model (a config.json with a model_type, or weights): a run "
            "writes its own config.json and checkpoint there; choose another folder"
        )


def _holds_a_model(folder: Path) -> bool:
    """A Hugging Face model folder, which a run's config.json would overwrite (a run's own has no model_type)."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.gguf")):
        return True
    try:
        return "model_type" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_attention(implementation: str) -> None:
    package = KERNEL_PACKAGES.get(implementation)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"--attn-implementation {implementation} needs the {package!r} package, which is not installed; "
            f"use sdpa or eager"
        )


def check_backbone_options(config: TrainConfig) -> None:
    """A quantized backbone trains only through bitsandbytes on CUDA (int8 on CPU is for inference:
    ``ptuning predict/serve --backbone-quantization int8``); bf16 weights cannot run under fp16 autocast, nor
    fp16 weights under bf16 autocast (where that autocast is on: accelerate never turns fp16 on for the CPU). A
    backbone that trains (finetune) stays fp32: stored in bf16 or fp16 it has no fp32 master copy, and AdamW
    steps smaller than half a rounding step vanish (most of them at fine-tuning learning rates). ``auto`` is
    already fp32 there (``TrainConfig``)."""
    if config.backbone_quantization is not None:
        try:
            loading_kwargs(config.backbone_quantization)  # refuses without CUDA or bitsandbytes
        except ConfigError as error:
            raise ConfigError(
                f"{flag_name('backbone_quantization')} {config.backbone_quantization}: {error}"
            ) from None
    if config.backbone_dtype in ("bf16", "fp16") and not Method(config.method).freezes_backbone:
        raise ConfigError(
            f"{flag_name('backbone_dtype')} {config.backbone_dtype} stores the frozen backbone; method "
            f"{config.method} trains it, and trained weights stay fp32 (in {config.backbone_dtype} most "
            f"updates round away); use --backbone-dtype fp32 with --mixed-precision {config.backbone_dtype}"
        )
    stored = resolve_auto(config.backbone_dtype)
    autocast = "no" if config.mixed_precision == "fp16" and trains_on_cpu() else config.mixed_precision
    if stored in ("bf16", "fp16") and autocast in ("bf16", "fp16") and stored != autocast:
        chosen = stored if config.backbone_dtype == stored else f"auto ({stored} on this machine)"
        raise ConfigError(
            f"{flag_name('backbone_dtype')} {chosen} with {flag_name('mixed_precision')} {config.mixed_precision} "
            f"cannot run (LayerNorm gets {stored} weights and {config.mixed_precision} inputs); use "
            f"--mixed-precision {stored} or no"
        )


def check_mixed_precision(config: TrainConfig) -> None:
    """--mixed-precision fp16 on the CPU changes nothing: accelerate turns fp16 autocast on only on a GPU, so
    the run was bit-identical to fp32 while its config.json said fp16. bf16 is the CPU's autocast."""
    if config.mixed_precision == "fp16" and trains_on_cpu():
        raise ConfigError(
            f"{flag_name('mixed_precision')} fp16: fp16 autocast runs on a GPU only, and this run trains on the "
            "CPU, where it would be the run --mixed-precision no trains; use --mixed-precision bf16 (the CPU's) "
            "or no"
        )


def trains_on_cpu() -> bool:
    """Whether accelerate will train on the CPU, as ``engine._accelerator`` builds it: told so (``accelerate
    launch --cpu`` sets ACCELERATE_USE_CPU; several processes without CUDA are told cpu=True), or no
    accelerator torch can use."""
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return True
    return torch.accelerator.current_accelerator(check_available=True) is None


def check_init_prefix(config: TrainConfig) -> None:
    """--init-prefix-from seeds this run's prefix: a method without one has nothing to seed. --prefix-init
    activations writes keys and values into a deep prefix's table: only ptuning-v2 has that table (prefix-mlp's
    passes through its MLP), and a prefix seeded from a checkpoint would be overwritten."""
    if config.init_prefix_from and not Method(config.method).uses_prefix:
        raise ConfigError(
            f"{flag_name('init_prefix_from')} seeds the prefix; method {config.method!r} has none (use "
            "ptuning-v2, prefix-mlp or prompt-tuning)"
        )
    if config.prefix_init == "activations":
        flag = f"{flag_name('prefix_init')} activations"
        if Method(config.method) is not Method.PTUNING_V2:
            raise ConfigError(
                f"{flag} writes keys and values into ptuning-v2's prefix table; method {config.method!r} has "
                "none (prefix-mlp's table passes through its MLP; prompt-tuning starts from vocabulary embeddings)"
            )
        if config.init_prefix_from:
            raise ConfigError(
                f"{flag} and {flag_name('init_prefix_from')} both set the starting prefix; drop one"
            )


def check_sharding(config: TrainConfig) -> None:
    """A sharded backbone needs several processes to shard over and a backbone nothing updates (FSDP2 here
    only gathers layers for the forward and backward; it never steps backbone weights)."""
    if not config.shard_backbone:
        return
    flag = flag_name("shard_backbone")
    if config.method == "finetune":
        raise ConfigError(
            f"{flag} shards a frozen backbone; method finetune trains it (use ptuning-v2, prefix-mlp or "
            "linear-probe)"
        )
    if config.method == "prompt-tuning":  # the prompt is spliced into the embeddings outside the sharded root
        raise ConfigError(
            f"{flag} does not take method prompt-tuning (its prompts enter the input embeddings, which a "
            "process holds only a shard of); use ptuning-v2, prefix-mlp or linear-probe"
        )
    if config.backbone_quantization is not None:
        raise ConfigError(
            f"{flag} cannot shard a quantized backbone ({flag_name('backbone_quantization')} "
            f"{config.backbone_quantization}); use one or the other"
        )
    if _is_encoder_decoder(config.model):  # sharding.py wraps one list of layers; T5 and BART have two
        raise ConfigError(
            f"{flag} shards encoder-only and decoder-only backbones; {config.model} is an encoder-decoder "
            "(T5, BART...): train it without sharding"
        )
    if config.backbone_dtype == "fp16":  # measured: training/sharding.py, "What combines with sharding"
        raise ConfigError(
            f"{flag} with {flag_name('backbone_dtype')} fp16 does not train the same prompt as one process "
            "(each process's fp16 share rounds differently: 4e-2 in the prompt, measured); use --backbone-dtype bf16"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise ConfigError(
            f"{flag} needs several processes to shard over; launch with torchrun --nproc_per_node N or "
            "accelerate launch --num_processes N (N >= 2)"
        )


def check_pooling(config: TrainConfig, head_kinds: dict[str, HeadKind]) -> None:
    if config.pooling is None:
        return
    unpooled = {name: str(kind) for name, kind in head_kinds.items() if kind not in POOLED_KINDS}
    if unpooled:
        raise ConfigError(
            f"--pooling applies to classification, regression and multiple-choice heads; "
            f"{', '.join(f'{name} is {kind}' for name, kind in unpooled.items())}"
        )


def check_language_model_heads(config: TrainConfig, head_kinds: dict[str, HeadKind]) -> None:
    """A causal-lm or seq2seq-lm task decodes through the backbone's own LM head, frozen with it: linear-probe
    would train nothing (it failed after loading with "element 0 of tensors does not require grad"), and
    --head-dropout would be recorded for a head that is never built."""
    lm_tasks = {name: str(kind) for name, kind in head_kinds.items() if kind in LM_KINDS}
    named = ", ".join(f"task {name!r} is {kind}" for name, kind in lm_tasks.items())
    if lm_tasks and Method(config.method) is Method.LINEAR_PROBE:
        raise ConfigError(
            f"method linear-probe trains only task heads, and a language-model task has none ({named}: its LM "
            "head is the frozen backbone's), so nothing would train; use ptuning-v2, prefix-mlp, prompt-tuning "
            "or finetune"
        )
    default = TrainConfig.model_fields["head_dropout"].default
    if lm_tasks and len(lm_tasks) == len(head_kinds) and config.head_dropout != default:
        raise ConfigError(
            f"{flag_name('head_dropout')} {config.head_dropout:g} applies before classification, regression, "
            f"tagging, QA and multiple-choice heads; {named} (no head is built); leave it at {default:g}"
        )


def check_positions(config: TrainConfig) -> None:
    """max_length (plus the prefix, where it takes positions) fits the model's position table.

    Reads only the model's config.json (``_model_config``: a local folder, a prepared packaged model, a hub id
    cached locally); other models are checked by the model itself at the first forward pass.
    """
    geometry = _geometry(config.model)
    limit = geometry.usable_positions if geometry is not None else None
    if limit is None:
        return
    method = Method(config.method)
    slots = config.prefix_config().positions_taken(method)  # as PromptModel.prefix_positions counts them
    if slots and method is Method.PROMPT_TUNING:
        needed, why = config.max_length + slots, f"--max-length {config.max_length} + {slots} input prompts"
        advice = "shorten --max-length or --prefix-length"
    elif slots:
        needed = config.max_length + slots
        why = f"--max-length {config.max_length} + --prefix-length {slots} (position mode shift)"
        advice = "shorten --max-length or --prefix-length, or use --position-mode keep"
    else:
        needed, why = config.max_length, f"--max-length {config.max_length}"
        advice = f"use --max-length {limit} or less"
    if needed > limit:
        raise ConfigError(
            f"{why} needs {needed} positions but {config.model} ({geometry.model_type}) has {limit}; {advice}"
        )


def check_prompt_room(config: TrainConfig, head_kinds: dict[str, HeadKind]) -> None:
    """A causal-LM task's max_new_tokens (plus the prefix, where it takes positions) leave at least one
    position for a prompt: predict and the server cut prompts to what is left, so only a table that
    max_new_tokens alone fill could never decode. Read from config.json as ``check_positions`` reads it."""
    causal = [name for name, kind in head_kinds.items() if kind is HeadKind.CAUSAL_LM]
    geometry = _geometry(config.model) if causal else None
    limit = geometry.usable_positions if geometry is not None else None
    if limit is None:
        return
    slots = config.prefix_config().positions_taken(Method(config.method))
    for name in causal:
        new_tokens = _max_new_tokens(config, name)
        if new_tokens is not None and slots + new_tokens > limit:
            taken = f" ({slots} taken by the prefix)" if slots else ""
            raise ConfigError(
                f"task {name!r}: max_new_tokens {new_tokens} leaves no room for a prompt in {config.model} "
                f"({geometry.model_type})'s {limit} positions{taken}; set the task option max_new_tokens to "
                f"{limit - slots} or less"
            )


def _max_new_tokens(config: TrainConfig, name: str) -> int | None:
    """The task's max_new_tokens from its options as ``engine.plan_tasks`` reads them (keyed by task in a
    multi-task run whose keys are all task names); None where the options do not build it (plan_tasks says)."""
    from ptuning.tasks.registry import get_task

    options = config.task_options
    if config.is_multitask and options and set(options) <= set(config.task_names):
        options = options.get(name, {})
    try:
        return getattr(get_task(name, **options), "max_new_tokens", None)
    except (TypeError, ValueError):
        return None


def _is_encoder_decoder(model: str) -> bool:
    """Whether the model's config.json says encoder-decoder, as ``PrefixGeometry`` reads it (False where the
    config cannot be read before loading: a hub id not in the local cache)."""
    return bool(getattr(_model_config(model), "is_encoder_decoder", False))


def _model_config(model: str) -> Any | None:
    """The model's config (config.json only: no weights) where it is a local folder, a packaged model already
    prepared, or a hub id whose config.json is in the local Hugging Face cache; else None."""
    from transformers import AutoConfig

    folder = _local_model_folder(model)
    if folder is not None:
        try:
            return AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"{folder / 'config.json'}: cannot read the model's config ({error})") from None
    cached = _cached_hub_config(model)
    if cached is None:
        return None
    try:
        return AutoConfig.from_pretrained(cached.parent)
    except (OSError, ValueError, KeyError):  # e.g. remote code: loading reports it in the hub's own words
        return None


def _geometry(model: str) -> PrefixGeometry | None:
    config = _model_config(model)
    if config is None:
        return None
    from transformers import AutoModel

    try:
        # The position table is a fact of the built model (from_model); a skeleton on the meta device
        # shows it without reading or allocating any weight.
        with torch.device("meta"):
            skeleton = AutoModel.from_config(config)
        return PrefixGeometry.from_model(skeleton)
    except UnsupportedModelError as error:
        raise ConfigError(str(error)) from None
    except (ValueError, KeyError):  # a config AutoModel has no class for: the first forward checks it
        return None


def _local_model_folder(model: str) -> Path | None:
    """A folder holding the model's config.json: a local folder, or a packaged model's (``core.packaged``)
    where it is already prepared. Never prepared here: unzipping MPNet or converting SmolLM2 takes tens of
    seconds, which the run spends on loading anyway."""
    from ptuning.core.backbones import PACKAGED_MINILM, PACKAGED_MPNET, PACKAGED_SMOLLM2, packaged_minilm_path
    from ptuning.core.packaged import MPNET_FOLDER, SMOLLM2_FOLDER, cache_root

    if model == PACKAGED_MINILM:
        try:
            return packaged_minilm_path()
        except FileNotFoundError:
            return None
    if model in (PACKAGED_MPNET, PACKAGED_SMOLLM2):
        folder = cache_root() / (MPNET_FOLDER if model == PACKAGED_MPNET else SMOLLM2_FOLDER)
        return folder if (folder / "config.json").is_file() else None
    path = Path(model).expanduser()
    return path if (path / "config.json").is_file() else None


def _cached_hub_config(model: str) -> Path | None:
    """The config.json of hub id ``model`` in the local Hugging Face cache, or None (not cached, or not a hub
    id): preflight reads what is there and never downloads."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id (a folder path that does not exist)
        return None
    return Path(found) if isinstance(found, str) else None
