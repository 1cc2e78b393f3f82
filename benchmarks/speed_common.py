"""What every speed benchmark shares: the workloads, their data, the PEFT check, where results go."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from packaging.version import Version

from ptuning.core.backbones import resolve_model_path
from ptuning.core.kinds import HeadKind
from ptuning.tasks.registry import get_task

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results" / "speed"
DATA_ROOT = REPO.parent / "shared" / "data"
PREFIX_LENGTH = 16
MAX_LENGTH = 128
LEARNING_RATE = 1e-2
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")
PEFT_MISSING = (
    "PEFT cannot run here (not installed: pip install --no-deps peft==0.22.0; or PEFT 0.21 on transformers "
    ">= 5.24, whose `cache` argument PEFT 0.21 does not know): its rows are skipped"
)
BERT_BASE = "bert-base-random"


@dataclass(frozen=True)
class Workload:
    """Which data and backbone a throughput measurement runs on, and how much of it per round."""

    name: str
    task: str  # sst2 | conll2003
    backbone: str  # minilm | bert-base-random (BERT-base shape, random weights, MiniLM's tokenizer)
    train_examples: int  # a fixed random sample of the train split, processed once per round
    eval_examples: int  # the first N of the dev split
    repeats: int
    warmup: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64


WORKLOADS = {
    w.name: w
    for w in (
        Workload("sst2-minilm", "sst2", "minilm", train_examples=256, eval_examples=512, repeats=5),
        Workload("conll2003-minilm", "conll2003", "minilm", train_examples=256, eval_examples=512, repeats=5),
        Workload("sst2-bert-base", "sst2", BERT_BASE, train_examples=64, eval_examples=128, repeats=3),
        Workload("conll2003-bert-base", "conll2003", BERT_BASE, train_examples=64, eval_examples=128, repeats=3),
    )
}  # fmt: skip


def peft_available() -> bool:
    """PEFT is installed and can run prefix tuning here. transformers 5.24 renamed the forward argument that
    carries the prefix from ``past_key_values`` to ``cache``: PEFT 0.21 passes the old name only (and then
    raises "Model does not support past key values"), PEFT 0.22 the name the model takes (checked on 5.25)."""
    if importlib.util.find_spec("peft") is None:
        return False
    if Version(importlib.metadata.version("peft")) >= Version("0.22.0"):
        return True
    from transformers import BertModel

    return "past_key_values" in inspect.signature(BertModel.forward).parameters


# ------------------------------------------------------------------------------------------- data
@dataclass
class Data:
    task: Any
    label_names: list[str]
    kind: HeadKind
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    pad_id: int
    # the sizes of the splits ``train`` and ``dev`` were sampled from (0: they are the whole splits): HF's
    # length grouping sizes its megabatches by the dataset, so a benchmark sample must tell it the real size
    split_sizes: tuple[int, int] = (0, 0)


def load_data(workload: Workload, tokenizer: Any, data_root: Path) -> Data:
    """Features of a fixed random train sample and of the first dev examples, max_length 128."""
    task = get_task(workload.task)
    data_dir = str(data_root / workload.task)
    train_examples, _ = task.read(data_dir, "train")
    sample = np.random.default_rng(0).permutation(len(train_examples))[: workload.train_examples]
    train, _ = task.featurize([train_examples[i] for i in sorted(sample)], tokenizer, MAX_LENGTH)
    dev_examples, _ = task.read(data_dir, "dev")
    dev, _ = task.featurize(dev_examples[: workload.eval_examples], tokenizer, MAX_LENGTH)
    strip = lambda features: [{k: f[k] for k in MODEL_KEYS if k in f} for f in features]  # noqa: E731
    return Data(
        task,
        list(task.label_names),
        task.head,
        strip(train),
        strip(dev),
        tokenizer.pad_token_id,
        (len(train_examples), len(dev_examples)),
    )


def pad_features(
    features: list[dict[str, Any]], pad_id: int, length: int = MAX_LENGTH
) -> list[dict[str, Any]]:
    """Every sequence padded to ``length`` (what ``padding="max_length"`` gives), labels with -100."""
    values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "labels": -100}
    padded = []
    for feature in features:
        row = dict(feature)
        size = len(row["input_ids"])
        row.setdefault("attention_mask", [1] * size)
        for key, pad in values.items():
            if key in row and isinstance(row[key], list):
                row[key] = row[key] + [pad] * (length - len(row[key]))
        padded.append(row)
    return padded


def model_label(folder: str) -> str:
    """How a result file names the model: the packaged short name, else the folder's own name (a machine's
    absolute path would tie the committed results to one checkout)."""
    if Path(folder).resolve() == Path(resolve_model_path("minilm")).resolve():
        return "minilm"
    return Path(folder).name


def model_folder(backbone: str, work_dir: Path) -> str:
    """A folder from_pretrained can read: the packaged MiniLM, or a random BERT-base saved once."""
    if backbone != BERT_BASE:
        return resolve_model_path(backbone)
    folder = work_dir / BERT_BASE
    if not (folder / "config.json").is_file():
        from transformers import AutoTokenizer, BertConfig, BertModel

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tokenizer)), add_pooling_layer=True).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def load_average() -> float:
    return os.getloadavg()[0]


def environment() -> dict[str, Any]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if peft_available():
        import peft

        versions["peft"] = peft.__version__
    return {
        "versions": versions,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "cpu": cpu_description(),
    }


# The CPU features that decide which GEMM kernels run: AMX tiles and AVX-512 bf16 for bf16, AVX-512 for fp32.
CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def cpu_description() -> dict[str, Any]:
    """The CPU model and which of ``CPU_FLAGS`` it reports: results measured on two machines differ by
    these (on 2026-12-02 one 2-core machine had AMX, a later one did not: its bf16 GEMM ran 3.5x slower)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def cold_compile_start(work_dir: Path) -> None:
    """Compile as on a first run: no Dynamo graph of an earlier system or workload, no Inductor kernels on disk
    from an earlier run (a fresh cache folder under ``work_dir``), so the start-up measured is the whole cost."""
    import tempfile

    torch._dynamo.reset()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=work_dir)


def interleaved(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call for each function: one warm-up each, then ``repeats`` rounds in rotating order."""
    for function in functions.values():
        function()
    names = list(functions)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        for offset in range(len(names)):
            name = names[(round_index + offset) % len(names)]
            start = time.perf_counter()
            functions[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def write(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", flush=True)


def kernel_ab_parser(description: str, rounds: int, kernel_rounds: int) -> argparse.ArgumentParser:
    """The options every attention A/B shares (attention_path_ab.py, attention_training_ab.py)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=["sst2-minilm", "conll2003-minilm"])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--kernel-rounds", type=int, default=kernel_rounds)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--smoke", metavar="MODEL_DIR", help="tiny model folder: a seconds-long run (CI)")
    return parser


def kernel_ab_setup(args: argparse.Namespace, **smoke_sizes: int) -> tuple[list[Workload], Path]:
    """The workloads (a seconds-long one under ``--smoke``, sized by ``smoke_sizes``), torch's threads and the
    results folder set, and the work folder where model copies go."""
    workloads = [WORKLOADS[name] for name in args.workloads]
    if args.smoke:
        workloads = [Workload("smoke", "sst2", args.smoke, 8, 8, repeats=1, **smoke_sizes)]
        args.rounds, args.kernel_rounds = 1, 1
    torch.set_num_threads(args.threads)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    return workloads, Path(tempfile.gettempdir()) / "ptuning-speed"
