"""Prompt checkpoints in a folder → prefixes and heads of ONE serving model over one frozen backbone.

Each subfolder of the checkpoint folder is one prompt checkpoint (``save_checkpoint``'s layout). Its
prefixes and heads move into a single ``PromptModel`` under private keys (``c<serial>_<name>``), so that
one backbone pass can mix every loaded task. A checkpoint with one task is served under its folder name;
one with several (an MPT-2 checkpoint) as ``<folder>.<task>`` for each of its tasks.

Safety at the boundary: checkpoint names are plain names (letters, digits, '_' and '-'), every path is
resolved and must stay inside the folder (symbolic links included), only JSON and safetensors are read
(``load_checkpoint``), and a checkpoint trained on another base model is refused before its weights load.
A damaged folder (truncated weights, a malformed config) is refused with its reason and never stops the
others from loading. Each task is rebuilt as its training run built it (``ptuning.tasks.rebuild``, shared
with ``ptuning predict``): the same options and the same ``max_length``.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ptuning.core.checkpoint import (
    CONFIG_FILE,
    PEFT_ADAPTER_FILES,
    WEIGHTS_FILES,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
)
from ptuning.core.config import Method, PrefixConfig
from ptuning.core.fingerprint import FINGERPRINT_VERSION, base_fingerprint, dtype_hint
from ptuning.core.kinds import HeadKind
from ptuning.core.model import PromptModel
from ptuning.core.precision import dtype_name, floating_dtype
from ptuning.core.quantization import is_quantized
from ptuning.generation import plain_greedy
from ptuning.serve.inputs import input_fields
from ptuning.serve.mixed import Group, mixed_outputs
from ptuning.tasks.base import Task
from ptuning.tasks.rebuild import rebuild_task
from ptuning.training.predict import check_positions

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}")  # fullmatch: "x\n" is not "x"
SERVED_METHODS = (Method.PTUNING_V2, Method.PREFIX_MLP)


class RegistryError(Exception):
    """A checkpoint cannot be (un)loaded or a task cannot be served; ``status`` is the HTTP answer."""

    status = 422


class InvalidName(RegistryError):
    status = 422


class OutsideRoot(RegistryError):
    status = 403


class NotFound(RegistryError):
    status = 404


class BaseMismatch(RegistryError):
    status = 409


class Incompatible(RegistryError):
    status = 422


class RootUnreadable(RegistryError):
    """The checkpoint folder itself is gone or unreadable: a server-side state, not the request's fault."""

    status = 503


class TaskUnavailable(RegistryError):
    """The task was removed or reloaded while a request waited for its batch; retrying is safe."""

    status = 503


def _check_name(name: Any) -> None:
    """A checkpoint name is a whole CHECKPOINT_NAME: it names a task in URLs and a subfolder of the root."""
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise InvalidName(
            f"checkpoint name {name!r} must be 1-100 letters, digits, '_' or '-', starting with a letter or digit"
        )


@dataclass(frozen=True)
class ServedTask:
    """One task as clients see it, and where its prefix and head live in the serving model."""

    name: str
    checkpoint: str
    head: str
    prefix: str
    task: Task
    kind: HeadKind
    prefix_length: int
    max_length: int  # tokens per input (window for QA), as in training unless the server overrides it

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "task": self.task.name,
            "kind": str(self.kind),
            "labels": self.task.label_names,
            "fields": input_fields(self.task) or None,
            "prefix_length": self.prefix_length,
            "max_length": self.max_length,
            "description": self.task.description,
        }


@dataclass
class Prepared:
    """A checkpoint read from disk and checked, not yet visible to requests."""

    name: str
    model: PromptModel
    tasks: dict[str, Task]  # head name in the checkpoint -> registry task that decodes it
    max_lengths: dict[str, int]  # head name -> tokens per input
    stamp: tuple
    settings: tuple
    info: dict[str, Any]


@dataclass
class _Loaded:
    name: str
    stamp: tuple
    settings: tuple
    served: list[str]
    prefix_keys: list[str]
    head_keys: list[str]
    info: dict[str, Any]


class PromptRegistry:
    """The loaded checkpoints and the serving model that holds their prefixes and heads.

    ``prepare`` (read and check files) may run on any thread; ``commit``, ``unload`` and ``run`` change or
    use the serving model and must run on the one model thread, so that they never overlap. Routes read
    ``tasks`` and ``checkpoints`` from other threads without a lock: those two mappings are never changed
    in place but replaced whole, so a reader sees the old or the new one, never a reload half done.
    """

    def __init__(
        self, root: str | Path, backbone: nn.Module, tokenizer: Any, max_length: int | None = None
    ) -> None:
        """``max_length`` None: each task uses the max_length it was trained with; an int overrides all."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotFound(f"checkpoint folder {root} does not exist")
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.fingerprint = base_fingerprint(backbone)
        self._fingerprints = {FINGERPRINT_VERSION: self.fingerprint}  # version -> this base's fingerprint
        self.base_name = getattr(backbone, "ptuning_source", None) or backbone.config.name_or_path
        self.model = PromptModel(backbone, Method.PTUNING_V2, PrefixConfig()).eval()
        if max_length is not None:  # an override no checkpoint could use: refused at start, not per request
            check_positions(self.model, max_length, explicit=True)
        self.tasks: dict[str, ServedTask] = {}
        self.checkpoints: dict[str, _Loaded] = {}
        self.failed: dict[str, str] = {}  # checkpoint -> why the last attempt to load it failed
        self._serial = itertools.count(1)
        self._lock = threading.RLock()

    @property
    def causal_lm(self) -> bool:
        """Whether the backbone generates (its checkpoints are served by serve/generate.py)."""
        return _is_causal_lm(self.backbone)

    # ------------------------------------------------------------------------------------------ paths
    def resolve(self, name: str) -> Path:
        """The folder of checkpoint ``name``, refusing names and links that would leave the root."""
        _check_name(name)
        try:
            path = (self.root / name).resolve()
            files = [(file, path / file) for file in (CONFIG_FILE, *WEIGHTS_FILES, *PEFT_ADAPTER_FILES)]
            file_targets = [(file, target.resolve()) for file, target in files if target.exists()]
        except (RuntimeError, OSError) as error:  # a symlink loop (RuntimeError before Python 3.13)
            raise NotFound(f"checkpoint {name!r} cannot be resolved ({error})") from None
        if path == self.root or not path.is_relative_to(self.root):
            raise OutsideRoot(f"checkpoint {name!r} resolves outside the checkpoint folder")
        if not path.is_dir():
            raise NotFound(f"no checkpoint folder {name!r} in the checkpoint folder")
        for file, target in file_targets:
            if not target.is_relative_to(self.root):
                raise OutsideRoot(f"checkpoint {name!r}: {file} links outside the checkpoint folder")
        return path

    def names_on_disk(self) -> list[str]:
        """Subfolders that look like checkpoints (hidden ones, e.g. save_checkpoint's staging, skipped)."""
        return [name for name in self._checkpoint_folders() if CHECKPOINT_NAME.fullmatch(name)]

    def misnamed_on_disk(self) -> list[str]:
        """Checkpoint folders whose name cannot be a task's name (``sst2.v2``): listed as failed, not skipped."""
        return [
            name
            for name in self._checkpoint_folders()
            if not CHECKPOINT_NAME.fullmatch(name) and not name.startswith(".")
        ]

    def _checkpoint_folders(self) -> list[str]:
        try:
            entries = list(self.root.iterdir())
        except OSError as error:  # the root removed or unreadable: nothing can be judged, so nothing changes
            raise RootUnreadable(
                f"the checkpoint folder {self.root} cannot be read ({error.strerror}); the served tasks are unchanged"
            ) from None
        return sorted(
            entry.name
            for entry in entries
            if (entry / CONFIG_FILE).is_file() or (entry / PEFT_ADAPTER_FILES[0]).is_file()
        )

    # ------------------------------------------------------------------------------------------ loading
    def prepare(self, name: str) -> Prepared:
        """Read and check checkpoint ``name`` without touching what is being served.

        Whatever is wrong with the folder is a ``RegistryError`` with the reason (422 unless a status says
        otherwise); an error this code did not foresee is logged with its traceback and reported the same
        way, so one damaged folder never takes the server down.
        """
        path = self.resolve(name)
        try:
            return self._prepare(name, path)
        except RegistryError:
            raise
        except Exception as error:
            logger.exception("checkpoint %s: unexpected error while loading", name)
            raise Incompatible(
                f"checkpoint {name!r} cannot be loaded: {type(error).__name__}: {error}"
            ) from None

    def _note_dtype(self, name: str, trained: str | None) -> None:
        """Log a checkpoint trained on another backbone dtype than the one served: its answers move by bf16's
        rounding (the server has one backbone; ``ptuning eval`` loads each checkpoint's own dtype)."""
        served = dtype_name(floating_dtype(self.backbone))
        if trained in ("fp32", "bf16", "fp16") and trained != served and not is_quantized(self.backbone):
            logger.warning(
                "checkpoint %s was trained on a %s backbone and is served on this %s one: its answers may "
                "differ slightly from ptuning eval/predict's (serve with --backbone-dtype %s to match)",
                name,
                trained,
                served,
                trained,
            )

    def _prepare(self, name: str, path: Path) -> Prepared:
        try:
            config = read_checkpoint_config(path)  # validated: every field has the expected type
            method = Method(config["method"])
            base = config["base_model"]
            version = base.get("fingerprint_version", 1)
            # A PEFT adapter has no fingerprint (None): load_checkpoint checks its prefix's shape instead.
            if base["fingerprint"] is not None and base["fingerprint"] != self._fingerprint(version):
                raise BaseMismatch(
                    f"checkpoint {name!r} was trained on {base['name_or_path']!r} (fingerprint "
                    f"{base['fingerprint']}) but this server's base model is {self.base_name!r} (fingerprint "
                    f"{self._fingerprint(version)}); serve it with that base model"
                    f"{dtype_hint(self.model.backbone, base.get('dtype'))}"
                )
            if method not in SERVED_METHODS:
                raise Incompatible(
                    f"checkpoint {name!r} uses method {method}; the server mixes deep prefixes only "
                    f"({', '.join(m.value for m in SERVED_METHODS)})"
                )
            self._note_dtype(name, base.get("dtype"))
            built = {head: self._task_for(name, path, config, head) for head in config["tasks"]}
            stamp = _stamp(path)
            model = load_checkpoint(path, backbone=self.backbone)
            for _, length in built.values():  # as predict refuses it: before a long request fails mid-batch
                check_positions(model, length, explicit=self.max_length is not None)
        except RegistryError:
            raise
        except (CheckpointError, OSError, KeyError, TypeError, ValueError) as error:
            raise Incompatible(f"checkpoint {name!r} cannot be loaded: {error}") from None
        tasks = {head: task for head, (task, _) in built.items()}
        max_lengths = {head: length for head, (_, length) in built.items()}
        model.collapse_prefixes()  # prefix-mlp: keep the table it produces, drop the training-only MLP
        model.eval()
        encoders = list(model.prefixes.values())
        layers = encoders[0].layer_indices
        if any(encoder.layer_indices != layers for encoder in encoders):
            raise Incompatible(f"checkpoint {name!r}: its prefixes cover different layers")
        position_mode = model.prefix_config.position_mode
        info = {
            "method": str(method),
            "tasks": list(tasks),
            "prefix_lengths": {key: encoder.prefix_length for key, encoder in model.prefixes.items()},
            "position_mode": str(position_mode),
            "max_lengths": max_lengths,
            "extra": config.get("extra", {}),
        }
        return Prepared(name, model, tasks, max_lengths, stamp, (str(position_mode), layers), info)

    def _fingerprint(self, version: int) -> str:
        """This base's fingerprint in the version a checkpoint recorded (old checkpoints: version 1)."""
        if version not in self._fingerprints:
            self._fingerprints[version] = base_fingerprint(self.backbone, version=version)
        return self._fingerprints[version]

    def _task_for(self, checkpoint: str, path: Path, config: dict[str, Any], head: str) -> tuple[Task, int]:
        """The head's task and max_length, rebuilt as ``ptuning predict`` rebuilds them."""
        kind = HeadKind(config["tasks"][head]["head"]["kind"])
        if kind is HeadKind.SEQ2SEQ_LM:  # loaded, it would answer 422 on /predict and /generate alike
            raise Incompatible(
                f"checkpoint {checkpoint!r}: head {head!r} is {kind}; the server generates with decoder-only "
                "models only (an encoder-decoder needs its encoder pass per request): use ptuning predict"
            )
        if (kind is HeadKind.CAUSAL_LM) != self.causal_lm:  # generation: serve/generate.py
            raise Incompatible(
                f"checkpoint {checkpoint!r}: head {head!r} is {kind} but the server's backbone "
                + (
                    "is a causal LM (it serves causal-lm checkpoints only)"
                    if self.causal_lm
                    else "has no LM head (a server loads one when its folder holds causal-lm checkpoints)"
                )
            )
        rebuilt = rebuild_task(path, config, head)
        task = rebuilt.task
        settings = getattr(task, "generate_kwargs", None) or {}
        # its stop ids (eos_token_id) each of its sequences carries to the decoder (serve/generate.py)
        if kind is HeadKind.CAUSAL_LM and not plain_greedy(settings):
            raise Incompatible(  # predict would decode with them; answering greedy instead would be silent
                f"checkpoint {checkpoint!r}: head {head!r} decodes with generate_kwargs {settings}, which the "
                "server's continuous decoder does not apply (it decodes greedy, or samples with each request's "
                "temperature, top_p, seed and stop); use ptuning predict for it"
            )
        # QA: whether doc_stride fits a window depends on each request's longest question (as in training,
        # which accepts what its data's questions allow); one that does not fit is answered 422 with the reason
        return task, rebuilt.length(self.max_length)

    def commit(self, prepared: Prepared) -> list[str]:
        """Make a prepared checkpoint servable (replacing one of the same name); its task names."""
        with self._lock:
            others = {c.settings for n, c in self.checkpoints.items() if n != prepared.name}
            if others and others != {prepared.settings}:
                (mode, layers) = next(iter(others))
                raise Incompatible(
                    f"checkpoint {prepared.name!r} cannot share batches with the loaded ones: they use "
                    f"position_mode {mode!r}, layers {list(layers)}; it uses {prepared.settings[0]!r}, "
                    f"layers {list(prepared.settings[1])}"
                )
            serial = next(self._serial)
            prefix_keys = {}
            for name, encoder in prepared.model.prefixes.items():
                prefix_keys[name] = f"c{serial}_{name}"
                self.model.prefixes[prefix_keys[name]] = encoder
            single = len(prepared.tasks) == 1
            served: dict[str, ServedTask] = {}
            for head, task in prepared.tasks.items():
                key = f"c{serial}_{head}"
                if head in prepared.model.heads:  # causal-lm tasks use the backbone's own LM head
                    self.model.heads[key] = prepared.model.heads[head]
                self.model.head_specs[key] = prepared.model.head_specs[head]
                prefix = prefix_keys[prepared.model.task_prefix[head]]
                self.model.task_prefix[key] = prefix
                public = prepared.name if single else f"{prepared.name}.{head}"
                length = self.model.prefixes[prefix].prefix_length
                served[public] = ServedTask(
                    public, prepared.name, key, prefix, task, task.head, length, prepared.max_lengths[head]
                )
            loaded = _Loaded(
                prepared.name,
                prepared.stamp,
                prepared.settings,
                list(served),
                list(prefix_keys.values()),
                [task.head for task in served.values()],
                prepared.info,
            )
            old = self.checkpoints.get(prepared.name)
            if old is not None:
                self._drop_modules(old)
            dropped = set(old.served) if old is not None else set()
            self.tasks = {name: task for name, task in self.tasks.items() if name not in dropped} | served
            self.checkpoints = {**self.checkpoints, prepared.name: loaded}
            self.model.prefix_config = prepared.model.prefix_config  # its position_mode, shared by all
            self.failed.pop(prepared.name, None)
            return list(served)

    def load(self, name: str) -> list[str]:
        return self.commit(self.prepare(name))

    def unload(self, name: str) -> list[str]:
        """Stop serving checkpoint ``name`` (its files stay); the task names it served."""
        _check_name(name)
        with self._lock:
            loaded = self.checkpoints.get(name)
            if loaded is None:
                raise NotFound(f"checkpoint {name!r} is not loaded")
            self.tasks = {public: task for public, task in self.tasks.items() if public not in loaded.served}
            self.checkpoints = {other: c for other, c in self.checkpoints.items() if other != name}
            self._drop_modules(loaded)
            return loaded.served

    def _drop_modules(self, loaded: _Loaded) -> None:
        """Remove a checkpoint's prefixes and heads from the serving model (model thread only); requests
        still queued for them are answered 503 by ``run``."""
        for key in loaded.head_keys:
            if key in self.model.heads:  # causal-lm tasks have none
                del self.model.heads[key]
            del self.model.head_specs[key]
            del self.model.task_prefix[key]
        for key in loaded.prefix_keys:
            del self.model.prefixes[key]

    def changes(self) -> tuple[list[str], list[str]]:
        """(new or modified checkpoints on disk, loaded checkpoints whose folder is gone)."""
        on_disk = self.names_on_disk()
        changed = []
        for name in on_disk:
            loaded = self.checkpoints.get(name)
            if loaded is None or loaded.stamp != _stamp(self.root / name):
                changed.append(name)
        # a loaded checkpoint whose folder is still there but no longer holds one (its config removed, a copy
        # in progress) went bad, not away: reloading it reports why while the loaded version serves on
        went_bad = [name for name in self.checkpoints if name not in on_disk and (self.root / name).is_dir()]
        gone = [name for name in self.checkpoints if name not in on_disk and name not in went_bad]
        return changed + went_bad, gone

    def refresh_failures(self) -> dict[str, str]:
        """Before a scan: forget the failures whose folder is gone, and list checkpoint folders whose name
        cannot name a task as failed (rather than skip them unsaid). Returns those."""
        misnamed = {
            name: f"folder {name!r} is not a checkpoint name: letters, digits, '_' and '-' (up to 100, starting "
            "with a letter or digit), since it names the task in URLs; rename it"
            for name in self.misnamed_on_disk()
        }
        for name in set(self.failed) - set(self.names_on_disk()) - set(misnamed):
            del self.failed[name]
        self.failed.update(misnamed)
        return misnamed

    def scan(self) -> dict[str, Any]:
        """Bring the served set in line with the folder (startup and rescan on one thread)."""
        changed, gone = self.changes()
        report: dict[str, Any] = {"loaded": [], "removed": [], "failed": self.refresh_failures()}
        for name in gone:
            self.unload(name)
            report["removed"].append(name)
        for name in changed:
            try:
                self.load(name)
                report["loaded"].append(name)
            except RegistryError as error:  # one bad folder never stops the others
                self.failed[name] = str(error)
                report["failed"][name] = str(error)
        return report

    # ------------------------------------------------------------------------------------------ serving
    def run(self, groups: list[Group]) -> list[list[Any] | TaskUnavailable]:
        """Head outputs per group from one mixed backbone pass (model thread only). A group whose task was
        removed or reloaded while it queued gets a ``TaskUnavailable`` in place of its outputs (the batcher
        hands it to that request), and the pass runs without it: the others' pass has not failed."""
        stale = [g.head not in self.model.heads or g.prefix not in self.model.prefixes for g in groups]
        live = [group for group, gone in zip(groups, stale, strict=True) if not gone]
        outputs = iter(mixed_outputs(self.model, live, self.tokenizer.pad_token_id) if live else [])
        return [
            TaskUnavailable("the task was removed or reloaded while the request waited; retry")
            if gone
            else next(outputs)
            for gone in stale
        ]

    def warm_up(self) -> int:
        """Passes over a short text, as requests make them: a compiled backbone builds its inference graphs
        here, at start-up, instead of in the first requests. Per readout (first-token heads, and heads that
        read every token) one row and two rows of different lengths: torch.compile specialises a batch of
        one, and a padded batch takes another mask path than an unpadded one. Returns the passes run."""
        chosen: dict[bool, str] = {}
        for key, spec in self.model.head_specs.items():
            if key in self.model.heads and spec.kind is not HeadKind.MULTIPLE_CHOICE:
                chosen.setdefault(self.model.reads_first_token(key), key)
        encoded = self.tokenizer(["warm up the compiled graphs", "warm up"])
        features = [{name: values[row] for name, values in encoded.items()} for row in (0, 1)]
        passes = 0
        for key in chosen.values():
            spec, prefix = self.model.head_specs[key], self.model.task_prefix[key]
            for rows in (features[:1], features):
                mixed_outputs(self.model, [Group(key, prefix, spec.kind, rows)], self.tokenizer.pad_token_id)
                passes += 1
        return passes

    def describe(self) -> dict[str, Any]:
        return {
            "base_model": self.base_name,
            "fingerprint": self.fingerprint,
            "loaded": {
                name: {**loaded.info, "served_as": loaded.served}
                for name, loaded in sorted(self.checkpoints.items())
            },
            "failed": dict(sorted(self.failed.items())),
        }


def _is_causal_lm(backbone: nn.Module) -> bool:
    """A ``*ForCausalLM`` (an LM head to generate with), not a bare encoder/decoder stack."""
    output_embeddings = getattr(backbone, "get_output_embeddings", None)
    return callable(output_embeddings) and output_embeddings() is not None


def _stamp(path: Path) -> tuple:
    """Changes whenever either checkpoint file is replaced (save_checkpoint swaps the whole folder)."""
    stamps = []
    for file in (CONFIG_FILE, *WEIGHTS_FILES, *PEFT_ADAPTER_FILES):
        stat = (path / file).stat() if (path / file).exists() else None
        stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else None)
    return tuple(stamps)
