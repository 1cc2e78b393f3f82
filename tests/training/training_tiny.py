"""Builders for the command-line tests: a random 2-layer BERT with the packaged MiniLM tokenizer, hand-written
SST-2, CoNLL-2003 and SQuAD files each small enough to train on in about a second, and ways to run the CLI.

A module with a unique name (not conftest) so that every test file can import it.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from tiny_models import minilm_tokenizer_dir, save_tiny_bert  # noqa: F401 (re-exported for the tests)

from ptuning.cli import main

REPO = Path(__file__).resolve().parents[2]
POSITIVE = ["great fun", "a lovely film", "wonderful acting", "i loved it", "brilliant and warm", "superb"]
NEGATIVE = ["boring", "a dull mess", "awful acting", "i hated it", "tedious and cold", "terrible"]


def write_sst2(folder: Path) -> str:
    """SST-2 layout (train.tsv / dev.tsv / test.tsv): 32 train, 16 dev and 16 test phrases."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", 32, 0), ("dev", 16, 1), ("test", 16, 2)):
        rng = random.Random(seed)
        rows = []
        for index in range(count):
            label = index % 2
            words = rng.choice(POSITIVE if label else NEGATIVE)
            rows.append(f"{label}\t{words} {rng.choice(['indeed', 'really', 'so', 'overall'])}")
        (folder / f"{name}.tsv").write_text("label\tsentence\n" + "\n".join(rows) + "\n")
    return str(folder)


SENTENCES = [
    [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O")],
    [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("visits", "O"), ("London", "B-LOC")],
    [("Japan", "B-LOC"), ("beat", "O"), ("Syria", "B-LOC")],
    [("Reuters", "B-ORG"), ("reports", "O"), ("from", "O"), ("Paris", "B-LOC")],
]


def uneven_sentences(count: int = 12) -> list[list[tuple[str, str]]]:
    """Sentences of 1 to 9 words: batches then hold very different numbers of labelled tokens."""
    words = [word for sentence in SENTENCES for word in sentence]
    return [[words[(i + j) % len(words)] for j in range(1 + (i * 5) % 9)] for i in range(count)]


def write_conll2003(folder: Path, sentences: list[list[tuple[str, str]]] = SENTENCES) -> str:
    """CoNLL-2003 layout: 'token POS chunk NER' lines, a blank line between sentences."""
    body = "\n\n".join("\n".join(f"{word} NN O {tag}" for word, tag in sentence) for sentence in sentences)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.txt", "valid.txt", "test.txt"):
        (folder / name).write_text("-DOCSTART- -X- -X- O\n\n" + body + "\n")
    return str(folder)


def write_squad(folder: Path) -> str:
    """SQuAD 1.1 layout (train-v1.1.json / dev-v1.1.json): one paragraph, four answerable questions."""
    context = "The Eiffel Tower is in Paris. It was finished in 1889 by Gustave Eiffel's company."
    questions = [
        ("q1", "Where is the Eiffel Tower?", "Paris"),
        ("q2", "When was it finished?", "1889"),
        ("q3", "Whose company built it?", "Gustave Eiffel's company"),
        ("q4", "What is in Paris?", "The Eiffel Tower"),
    ]
    qas = [
        {
            "id": qid,
            "question": question,
            "answers": [{"text": answer, "answer_start": context.index(answer)}],
        }
        for qid, question, answer in questions
    ]
    article = {"title": "Eiffel", "paragraphs": [{"context": context, "qas": qas}]}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (folder / name).write_text(json.dumps({"version": "1.1", "data": [article]}))
    return str(folder)


def train_args(model: str, data: str, output_dir: Path | str, *extra: str, task: str = "sst2") -> list[str]:
    """``ptuning train`` on a tiny data set: batches of 8, 32 tokens, prefix length 4."""
    return [
        "train",
        "--task",
        task,
        "--model",
        model,
        "--data",
        data,
        "--output-dir",
        str(output_dir),
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--learning-rate",
        "3e-2",
        "--prefix-length",
        "4",
        "--no-log-tensorboard",
        *extra,
    ]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``ptuning argv`` run in this process."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: --help and usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_env() -> dict[str, str]:
    """One thread per process (the cores are shared) and no launcher variables inherited from outside."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env
