"""GLUE and SuperGLUE tasks (plus generic CSV tasks): one or two texts in, one label (or score) out.

Each task is declared by class attributes: the columns it reads (by header name, with aliases), its
label set, its split files and its metrics. Inputs follow the templates of the P-tuning v2 reference
code (THUDM/P-tuning-v2, tasks/glue and tasks/superglue), so scores stay comparable with the paper.
Examples are plain dicts: the input fields, ``label`` (a label name, a float for STS-B, a choice index
for COPA, or None when unlabelled), ``id`` and ``source`` ('file, line N', used in every error).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptuning.core.config import ConfigError
from ptuning.tasks import metrics
from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.readers import Table, is_hub_id, label_key, load_hub_table, map_label, read_table

Example = dict[str, Any]
TextPair = tuple[str, str | None]

SPLIT_ALIASES = {"validation": "dev", "val": "dev", "eval": "dev"}
FROM_VAL_SEED = 42  # the 'seed' of the from-val split: it salts the SHA-256 rank of each example id
FROM_VAL_SPLITS = {"train-from-val": "train", "eval-from-val": "eval"}
GLUE_HUB = "nyu-mll/glue"
SUPERGLUE_HUB = "aps/super_glue"


class ClassificationTask(Task):
    """One label per input; the input is one text or a pair rendered from named fields.

    ``fields`` maps each input field to the header names accepted for it (first one canonical).
    Constructor options: ``label_map`` maps extra raw label values to label names (the only way a
    label outside ``label_names`` is accepted); ``splits`` overrides split file names.
    """

    head = HeadKind.CLASSIFICATION
    primary_metric = "accuracy"
    metric_names: tuple[str, ...] = ("accuracy",)
    fields: dict[str, tuple[str, ...]] = {}
    label_columns: tuple[str, ...] = ("label",)
    headerless_columns: tuple[str, ...] | None = None  # for files that may lack a header (CoLA)
    hub_dataset: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = {"train": "train", "dev": "validation", "test": "test"}
    train_split = "train"
    eval_split = "dev"

    def __init__(
        self, *, label_map: Mapping[str, str] | None = None, splits: Mapping[str, str] | None = None
    ):
        self.label_map = dict(label_map or {})
        self.splits = {**type(self).splits, **(splits or {})}
        names = self.label_names or []
        unknown = sorted(set(self.label_map.values()) - set(names)) if names else []
        if unknown:
            raise ConfigError(f"{self.name}: label_map targets {unknown} are not labels of the task {names}")

    # --- reading ------------------------------------------------------------------------------------

    def read(self, data_dir: str, split: str) -> tuple[list[Example], DataReport]:
        """Examples of one split from a folder (file named by ``splits``), one file, or a hub id."""
        split = self.split_name(split)
        table = self.load_table(data_dir, split)
        table = self.flatten(table)
        examples, report = self.examples_from_table(table, split)
        if split in FROM_VAL_SPLITS:
            examples, report = take_from_val(examples, report, FROM_VAL_SPLITS[split], table.source)
        return examples, report

    def split_name(self, split: str) -> str:
        """The split's canonical name ('validation' -> 'dev'); an unknown split lists the known ones."""
        split = SPLIT_ALIASES.get(split, split) if split not in self.splits else split
        if split not in self.splits:
            raise DataError(f"task {self.name!r} has no split {split!r}; known splits: {sorted(self.splits)}")
        return split

    def load_table(self, data_dir: str | Path, split: str) -> Table:
        source = Path(data_dir).expanduser()
        if source.is_file():
            return read_table(source, headerless_columns=self.headerless_columns)
        if source.is_dir():
            return read_table(source / self.splits[split], headerless_columns=self.headerless_columns)
        if is_hub_id(str(data_dir)) and self.hub_dataset:
            files = sorted(set(self.splits.values()))
            base_split = self.eval_split if split in FROM_VAL_SPLITS else split
            if base_split not in self.hub_splits:
                raise DataError(f"{self.name}: split {split!r} exists only as local files {files}")
            hub_split = self.hub_splits[base_split]
            return load_hub_table(str(data_dir), self.hub_config, hub_split, local_hint=f" ({files})")
        raise DataError(
            f"{data_dir}: no such file or folder (expected a folder holding {self.splits[split]})"
        )

    def flatten(self, table: Table) -> Table:
        """One row per model example; tasks with nested records (MultiRC, ReCoRD, WSC) override this."""
        return table

    def examples_from_table(self, table: Table, split: str) -> tuple[list[Example], DataReport]:
        columns = {
            name: table.find_column(aliases, what=f"the {name} input")
            for name, aliases in self.fields.items()
        }
        label_column = table.find_column(
            self.label_columns, required=split.startswith("train"), what="the label"
        )
        examples: list[Example] = []
        report = DataReport(skipped=table.blank_lines, notes=list(table.notes))
        for row in range(len(table.rows)):
            example: Example = {"id": self.example_id(table.rows[row], row), "source": table.where(row)}
            for name, column in columns.items():
                example[name] = self.check_field(name, table.value(row, column), table.where(row))
            example["label"] = self.read_label(table, row, label_column, split)
            report.unlabelled += example["label"] is None
            examples.append(example)
        report.examples = len(examples)
        if table.blank_lines:
            report.notes.append(f"{table.source}: skipped {table.blank_lines} blank lines")
        return examples, report

    def read_label(self, table: Table, row: int, column: str | None, split: str) -> Any:
        """The row's label (a name here), or None when it has none; train rows must have one."""
        key = label_key(table.rows[row].get(column)) if column else None
        if key is None:
            if split.startswith("train"):
                raise DataError(f"{table.where(row)}: no label in column {column!r}; a train split needs one")
            return None
        return self.parse_label(key, table.where(row))

    def example_id(self, row: Mapping[str, Any], position: int) -> Any:
        for key in ("idx", "id", "index"):
            if key in row and row[key] not in (None, ""):
                return row[key]
        return position

    def check_field(self, name: str, value: Any, where: str) -> Any:
        """Input fields are text unless a task says otherwise."""
        if not isinstance(value, str):
            raise DataError(f"{where}: field {name!r} should be text, found {type(value).__name__} {value!r}")
        return value

    def parse_label(self, key: str, where: str) -> Any:
        """A raw label key as a label name; GLUE/SuperGLUE integer codes map to names in order."""
        assert self.label_names is not None
        codes = {str(index): name for index, name in enumerate(self.label_names)}
        return map_label(key, self.label_names, {**codes, **self.label_map}, where)

    # --- features -----------------------------------------------------------------------------------

    def render(self, example: Example) -> list[TextPair]:
        """The model inputs of one example: by default the first field, paired with the second if any."""
        names = list(self.fields)
        return [(example[names[0]], example[names[1]] if len(names) > 1 else None)]

    def featurize(
        self, examples: list[Example], tokenizer: Any, max_length: int
    ) -> tuple[Features, DataReport]:
        rendered = [self.render(example) for example in examples]
        encodings, truncated = encode_pairs(
            tokenizer, [pair for pairs in rendered for pair in pairs], max_length
        )
        features: Features = []
        report = DataReport(examples=len(examples))
        start = 0
        for index, (example, pairs) in enumerate(zip(examples, rendered, strict=True)):
            stop = start + len(pairs)
            features.extend(self.features_of(index, example, encodings[start:stop]))
            report.truncated += any(truncated[start:stop])
            start = stop
        if report.truncated:
            report.notes.append(
                f"{self.name}: {report.truncated} of {len(examples)} examples were longer than "
                f"max_length={max_length} tokens and were truncated (longest text first)"
            )
        return features, report

    def features_of(self, index: int, example: Example, encodings: list[dict[str, list[int]]]) -> Features:
        feature: dict[str, Any] = {**encodings[0], "example_index": index}
        if example["label"] is not None:
            feature["labels"] = self.label_index(example["label"])
        return [feature]

    def label_index(self, label: Any) -> Any:
        assert self.label_names is not None
        return self.label_names.index(label)

    # --- predictions --------------------------------------------------------------------------------

    def predict(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[Any]:
        """One prediction per example (a label index here), from the outputs of its single feature."""
        check_outputs(examples, features, outputs)
        return [int(np.argmax(np.asarray(output))) for output in outputs]

    def score(self, examples: list[Example], features: Features, outputs: list[Any]) -> dict[str, float]:
        predictions = self.predict(examples, features, outputs)
        labelled = [i for i, example in enumerate(examples) if example["label"] is not None]
        if not labelled:
            raise DataError(f"{self.name}: cannot score, none of the {len(examples)} examples has a label")
        predicted = [predictions[i] for i in labelled]
        gold = [self.label_index(examples[i]["label"]) for i in labelled]
        return compute_metrics(self.metric_names, predicted, gold)

    def decode(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[dict[str, Any]]:
        check_outputs(examples, features, outputs)
        assert self.label_names is not None
        decoded = []
        for output in outputs:
            probabilities = softmax(np.asarray(output, dtype=np.float64))
            best = int(np.argmax(probabilities))
            decoded.append(
                {
                    "label": self.label_names[best],
                    "probabilities": {
                        name: float(p) for name, p in zip(self.label_names, probabilities, strict=True)
                    },
                }
            )
        return decoded


class RegressionTask(ClassificationTask):
    """One float per input (STS-B): the label is a number, the output a scalar."""

    head = HeadKind.REGRESSION
    label_names = None

    def parse_label(self, key: str, where: str) -> float:
        try:
            return float(key)
        except ValueError:
            raise DataError(f"{where}: label {key!r} is not a number; expected a similarity score") from None

    def label_index(self, label: Any) -> float:
        return float(label)

    def predict(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[float]:
        check_outputs(examples, features, outputs)
        return [float(np.asarray(output, dtype=np.float64).reshape(-1)[0]) for output in outputs]

    def decode(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[dict[str, Any]]:
        return [{"score": score} for score in self.predict(examples, features, outputs)]


class MultipleChoiceTask(ClassificationTask):
    """One score per choice; the example's label is the index of the right choice."""

    head = HeadKind.MULTIPLE_CHOICE
    choice_fields: tuple[str, ...] = ()

    def parse_label(self, key: str, where: str) -> int:
        return self.label_names.index(super().parse_label(key, where))

    def label_index(self, label: Any) -> int:
        return int(label)

    def features_of(self, index: int, example: Example, encodings: list[dict[str, list[int]]]) -> Features:
        # one row per choice: input_ids etc. become (C, T) lists
        feature: dict[str, Any] = {key: [choice[key] for choice in encodings] for key in encodings[0]}
        feature["example_index"] = index
        if example["label"] is not None:
            feature["labels"] = example["label"]
        return [feature]

    def decode(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[dict[str, Any]]:
        check_outputs(examples, features, outputs)
        decoded = []
        for example, output in zip(examples, outputs, strict=True):
            probabilities = softmax(np.asarray(output, dtype=np.float64))
            best = int(np.argmax(probabilities))
            decoded.append(
                {
                    "label": self.label_names[best],
                    "choice": example[self.choice_fields[best]],
                    "probabilities": {
                        name: float(p) for name, p in zip(self.label_names, probabilities, strict=True)
                    },
                }
            )
        return decoded


# --- shared helpers -----------------------------------------------------------------------------------


def encode_pairs(
    tokenizer: Any, pairs: list[TextPair], max_length: int
) -> tuple[list[dict[str, list[int]]], list[bool]]:
    """Token ids of each (text, optional second text), cut to ``max_length``, and which ones were cut.

    Everything is encoded once without truncation (so the cut is counted, never silent), and only the
    inputs that are too long are encoded again with 'longest_first' truncation.
    """
    if max_length < tokenizer.num_special_tokens_to_add(pair=True) + 2:
        raise ConfigError(f"max_length={max_length} leaves no room for text after the special tokens")
    if not pairs:
        return [], []
    firsts = [first for first, _ in pairs]
    seconds = [second for _, second in pairs]
    is_pair = seconds[0] is not None
    if any((second is not None) != is_pair for second in seconds):
        raise ValueError("encode_pairs: either every input is a pair or none is")
    full = tokenizer(firsts, seconds if is_pair else None, truncation=False, verbose=False)
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in full]
    encodings = [{key: full[key][i] for key in keys} for i in range(len(pairs))]
    too_long = [i for i, encoding in enumerate(encodings) if len(encoding["input_ids"]) > max_length]
    if too_long:
        cut = tokenizer(
            [firsts[i] for i in too_long],
            [seconds[i] for i in too_long] if is_pair else None,
            truncation="longest_first",
            max_length=max_length,
        )
        for row, i in enumerate(too_long):
            encodings[i] = {key: cut[key][row] for key in keys}
    truncated = [False] * len(pairs)
    for i in too_long:
        truncated[i] = True
    return encodings, truncated


def check_outputs(examples: list[Example], features: Features, outputs: list[Any]) -> None:
    if len(outputs) != len(features):
        raise ValueError(f"{len(outputs)} outputs for {len(features)} features; expected one per feature")
    if len(features) != len(examples):
        raise ValueError(f"{len(features)} features for {len(examples)} examples; expected one per example")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def compute_metrics(names: tuple[str, ...], predicted: list[Any], gold: list[Any]) -> dict[str, float]:
    """The named metrics over label indices (or floats for regression)."""
    functions = {
        "accuracy": metrics.accuracy,
        "f1": metrics.f1_binary,  # positive class = label index 1 (equivalent, duplicate)
        "macro_f1": metrics.f1_macro,
        "mcc": metrics.matthews_correlation,
        "pearson": metrics.pearson,
        "spearman": metrics.spearman,
    }
    return {name: functions[name](predicted, gold) for name in names}


def take_from_val(
    examples: list[Example], report: DataReport, part: str, source: str
) -> tuple[list[Example], DataReport]:
    """A fixed 2/3 (train) or 1/3 (eval) share of a validation file, for tasks without a train file.

    Examples are ranked by SHA-256 of f"{FROM_VAL_SEED}:{id}" (the file's idx, or the row position if
    ids repeat); the first round(2n/3) form 'train-from-val', the rest 'eval-from-val'. The rule is
    independent of file order and of any random number generator, so it never changes.
    """
    ids = [example["id"] for example in examples]
    keys = ids if len({str(i) for i in ids}) == len(ids) else list(range(len(examples)))
    ranked = sorted(
        range(len(examples)), key=lambda i: hashlib.sha256(f"{FROM_VAL_SEED}:{keys[i]}".encode()).hexdigest()
    )
    train_size = round(len(examples) * 2 / 3)
    chosen = set(ranked[:train_size] if part == "train" else ranked[train_size:])
    subset = [example for i, example in enumerate(examples) if i in chosen]
    note = (
        f"{source}: {part}-from-val holds {len(subset)} of {len(examples)} examples "
        f"(SHA-256 rank, seed {FROM_VAL_SEED})"
    )
    unlabelled = sum(example["label"] is None for example in subset)
    return subset, DataReport(
        len(subset), report.skipped, unlabelled, report.truncated, [*report.notes, note]
    )


# --- GLUE ---------------------------------------------------------------------------------------------
# Column aliases accept both the GLUE TSV headers and the Hugging Face column names, so a TSV from the
# GLUE download and a JSONL export of the hub dataset read the same way.

GLUE_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


class GlueTask(ClassificationTask):
    hub_dataset = GLUE_HUB
    splits = GLUE_SPLITS


class Sst2(GlueTask):
    name = "sst2"
    description = "SST-2 sentiment of a movie-review phrase (GLUE)"
    label_names = ["negative", "positive"]
    fields = {"sentence": ("sentence", "content", "text")}  # this copy's dev/test header says 'content'
    hub_config = "sst2"


class Cola(GlueTask):
    name = "cola"
    description = "CoLA grammatical acceptability (GLUE); metric Matthews correlation"
    label_names = ["unacceptable", "acceptable"]
    fields = {"sentence": ("sentence", "text")}
    headerless_columns = ("source", "label", "label_notes", "sentence")  # GLUE's train/dev have no header
    primary_metric = "mcc"
    metric_names = ("mcc", "accuracy")
    hub_config = "cola"


class Mrpc(GlueTask):
    name = "mrpc"
    description = "MRPC paraphrase of two news sentences (GLUE)"
    label_names = ["not_equivalent", "equivalent"]
    fields = {"sentence1": ("sentence1", "#1 String"), "sentence2": ("sentence2", "#2 String")}
    label_columns = ("label", "Quality")
    metric_names = ("accuracy", "f1")
    hub_config = "mrpc"


class Qqp(GlueTask):
    name = "qqp"
    description = "QQP duplicate Quora questions (GLUE)"
    label_names = ["not_duplicate", "duplicate"]
    fields = {"question1": ("question1",), "question2": ("question2",)}
    label_columns = ("label", "is_duplicate")
    metric_names = ("accuracy", "f1")
    hub_config = "qqp"


class Stsb(RegressionTask):
    name = "stsb"
    description = "STS-B sentence similarity score 0-5 (GLUE), regression"
    fields = {"sentence1": ("sentence1",), "sentence2": ("sentence2",)}
    label_columns = ("label", "score")
    primary_metric = "pearson"
    metric_names = ("pearson", "spearman")
    hub_dataset = GLUE_HUB
    hub_config = "stsb"
    splits = GLUE_SPLITS


class Mnli(GlueTask):
    name = "mnli"
    description = "MultiNLI entailment (GLUE); dev/test come matched and mismatched"
    label_names = ["entailment", "neutral", "contradiction"]
    fields = {"premise": ("premise", "sentence1"), "hypothesis": ("hypothesis", "sentence2")}
    label_columns = ("label", "gold_label")
    splits = {
        "train": "train.tsv",
        "dev": "dev_matched.tsv",
        "dev-matched": "dev_matched.tsv",
        "dev-mismatched": "dev_mismatched.tsv",
        "test-matched": "test_matched.tsv",
        "test-mismatched": "test_mismatched.tsv",
    }
    hub_config = "mnli"
    hub_splits = {
        "train": "train",
        "dev": "validation_matched",
        "dev-matched": "validation_matched",
        "dev-mismatched": "validation_mismatched",
        "test-matched": "test_matched",
        "test-mismatched": "test_mismatched",
    }


class Qnli(GlueTask):
    name = "qnli"
    description = "QNLI: does the sentence answer the question (GLUE)"
    label_names = ["entailment", "not_entailment"]
    fields = {"question": ("question",), "sentence": ("sentence",)}
    hub_config = "qnli"


class Rte(GlueTask):
    name = "rte"
    description = "RTE entailment, GLUE TSV layout (for SuperGLUE's JSONL files use 'superglue-rte')"
    label_names = ["entailment", "not_entailment"]
    fields = {"sentence1": ("sentence1", "premise"), "sentence2": ("sentence2", "hypothesis")}
    hub_config = "rte"


class Wnli(GlueTask):
    name = "wnli"
    description = "WNLI pronoun-resolution entailment (GLUE)"
    label_names = ["not_entailment", "entailment"]
    fields = {"sentence1": ("sentence1",), "sentence2": ("sentence2",)}
    hub_config = "wnli"


# --- SuperGLUE ----------------------------------------------------------------------------------------

SUPERGLUE_SPLITS = {"train": "train.jsonl", "dev": "val.jsonl", "test": "test.jsonl"}
BOOLEAN_LABELS = ["False", "True"]  # JSON false/true and 0/1 both map here


class SuperGlueTask(ClassificationTask):
    hub_dataset = SUPERGLUE_HUB
    splits = SUPERGLUE_SPLITS


class BoolQ(SuperGlueTask):
    """BoolQ has no full train file here: 'train-from-val'/'eval-from-val' split val.jsonl 2:1."""

    name = "boolq"
    description = "BoolQ yes/no question about a passage (SuperGLUE); input = question + passage"
    label_names = BOOLEAN_LABELS
    fields = {"question": ("question",), "passage": ("passage",)}
    splits = {
        **SUPERGLUE_SPLITS,
        "train-from-val": "val.jsonl",
        "eval-from-val": "val.jsonl",
        "fewglue-train": "train_fewglue32.jsonl",
        "fewglue-dev32": "dev32_fewglue.jsonl",
    }
    hub_config = "boolq"


class Cb(SuperGlueTask):
    name = "cb"
    description = "CommitmentBank three-way entailment (SuperGLUE); accuracy and macro F1"
    label_names = ["entailment", "contradiction", "neutral"]
    fields = {"premise": ("premise",), "hypothesis": ("hypothesis",)}
    metric_names = ("accuracy", "macro_f1")
    hub_config = "cb"


class SuperGlueRte(SuperGlueTask):
    name = "superglue-rte"
    description = "RTE entailment, SuperGLUE JSONL layout (premise/hypothesis; train/val/test.jsonl)"
    label_names = ["entailment", "not_entailment"]
    fields = {"premise": ("premise", "sentence1"), "hypothesis": ("hypothesis", "sentence2")}
    hub_config = "rte"


class Wic(SuperGlueTask):
    """Input as the reference's BERT template: ('word: sentence1', 'word: sentence2')."""

    name = "wic"
    description = "WiC: is the word used in the same sense in both sentences (SuperGLUE)"
    label_names = BOOLEAN_LABELS
    fields = {"word": ("word",), "sentence1": ("sentence1",), "sentence2": ("sentence2",)}
    splits = {
        **SUPERGLUE_SPLITS,
        "train-from-val": "val.jsonl",
        "eval-from-val": "val.jsonl",
        "fewglue-train": "train_fewglue32.jsonl",
    }
    hub_config = "wic"

    def render(self, example: Example) -> list[TextPair]:
        word = example["word"]
        return [(f"{word}: {example['sentence1']}", f"{word}: {example['sentence2']}")]


class Wsc(SuperGlueTask):
    """Input as the reference's marked template: the text with the pronoun wrapped in '*', paired
    with the candidate noun phrase (span1). Does the pronoun refer to it?"""

    name = "wsc"
    description = "WSC coreference: does the *pronoun* refer to the given noun phrase (SuperGLUE)"
    label_names = BOOLEAN_LABELS
    fields = {
        "text": ("text",),
        "span1_text": ("span1_text",),
        "span2_text": ("span2_text",),
        "span2_index": ("span2_index",),
    }
    hub_config = "wsc.fixed"

    def flatten(self, table: Table) -> Table:
        """SuperGLUE nests the spans under 'target'; lift them to the top like the hub's columns."""
        if "target" not in table.columns:
            return table
        rows = []
        for row_index, row in enumerate(table.rows):
            target = row.get("target")
            if not isinstance(target, dict):
                raise DataError(f"{table.where(row_index)}: 'target' should be an object with the spans")
            rows.append({**{k: v for k, v in row.items() if k != "target"}, **target})
        columns = [c for c in table.columns if c != "target"] + [
            c for c in self.fields if c not in table.columns
        ]
        return Table(table.source, columns, rows, table.locations, table.blank_lines, table.notes)

    def check_field(self, name: str, value: Any, where: str) -> Any:
        if name == "span2_index":
            if not isinstance(value, int) or isinstance(value, bool):
                raise DataError(f"{where}: span2_index should be a word index, found {value!r}")
            return value
        return super().check_field(name, value, where)

    def render(self, example: Example) -> list[TextPair]:
        words = example["text"].split()
        start = locate_span(words, example["span2_text"], example["span2_index"])
        stop = start + max(len(example["span2_text"].split()), 1)
        marked = [*words[:start], "*" + " ".join(words[start:stop]) + "*", *words[stop:]]
        return [(" ".join(marked), example["span1_text"])]


def locate_span(words: list[str], span_text: str, index: int) -> int:
    """Where ``span_text`` starts among ``words``: at ``index`` if it matches there (ignoring case and
    punctuation), else the nearest match (WSC has a few off-by-n indices), else ``index`` itself."""

    def plain(text: str) -> str:
        return "".join(char for char in text.lower() if char.isalnum() or char == " ")

    target = plain(span_text)
    width = max(len(span_text.split()), 1)
    starts = [i for i in range(len(words) - width + 1) if plain(" ".join(words[i : i + width])) == target]
    if not starts:
        return min(max(index, 0), max(len(words) - 1, 0))
    return min(starts, key=lambda i: abs(i - index))


class Copa(MultipleChoiceTask):
    """Each choice is paired with the premise followed by 'because' (cause) or 'so' (effect), as in
    the reference code; the model scores the two pairs and picks the higher one."""

    name = "copa"
    description = "COPA: which of two alternatives is the cause / effect of the premise (SuperGLUE)"
    label_names = ["choice1", "choice2"]  # raw labels 0/1 index these
    fields = {
        "premise": ("premise",),
        "question": ("question",),
        "choice1": ("choice1",),
        "choice2": ("choice2",),
    }
    choice_fields = ("choice1", "choice2")
    hub_dataset = SUPERGLUE_HUB
    hub_config = "copa"
    splits = SUPERGLUE_SPLITS

    def check_field(self, name: str, value: Any, where: str) -> Any:
        value = super().check_field(name, value, where)
        if name == "question" and value not in ("cause", "effect"):
            raise DataError(f"{where}: question should be 'cause' or 'effect', found {value!r}")
        return value

    def render(self, example: Example) -> list[TextPair]:
        joiner = "because" if example["question"] == "cause" else "so"
        context = f"{example['premise']} {joiner}"
        return [(context, example[choice]) for choice in self.choice_fields]


class MultiRc(SuperGlueTask):
    """One example per answer option: (paragraph, 'question answer') -> is this answer true.

    Reads SuperGLUE's nested records (passage.questions[].answers[]) or the hub's flat rows.
    """

    name = "multirc"
    description = "MultiRC: is each candidate answer to a question about a paragraph true (SuperGLUE)"
    label_names = BOOLEAN_LABELS
    fields = {"paragraph": ("paragraph",), "question": ("question",), "answer": ("answer",)}
    primary_metric = "f1a"
    hub_config = "multirc"

    def flatten(self, table: Table) -> Table:
        if "passage" not in table.columns:
            return table
        rows, locations = [], []
        for row_index, row in enumerate(table.rows):
            passage = row.get("passage")
            if not isinstance(passage, dict) or not isinstance(passage.get("questions"), list):
                raise DataError(
                    f"{table.where(row_index)}: expected 'passage' as "
                    "{text, questions: [{question, answers}]}"
                )
            for q_pos, question in enumerate(passage["questions"]):
                for a_pos, answer in enumerate(question.get("answers", [])):
                    rows.append(
                        {
                            "paragraph": passage.get("text"),
                            "question": question.get("question"),
                            "answer": answer.get("text"),
                            "label": answer.get("label"),
                            "idx": answer.get("idx", a_pos),
                            "question_id": f"{row.get('idx', row_index)}-{question.get('idx', q_pos)}",
                        }
                    )
                    locations.append(f"{table.locations[row_index]}, question {q_pos}, answer {a_pos}")
        columns = ["paragraph", "question", "answer", "label", "idx", "question_id"]
        return Table(table.source, columns, rows, locations, table.blank_lines, table.notes)

    def examples_from_table(self, table: Table, split: str) -> tuple[list[Example], DataReport]:
        examples, report = super().examples_from_table(table, split)
        for example, row in zip(examples, table.rows, strict=True):
            index = row.get("idx")
            if "question_id" in row:
                example["question_id"] = row["question_id"]
            elif isinstance(index, dict):  # the hub's flat layout: idx = {paragraph, question, answer}
                example["question_id"] = f"{index.get('paragraph')}-{index.get('question')}"
            else:
                raise DataError(f"{example['source']}: cannot tell which question this answer belongs to")
        return examples, report

    def render(self, example: Example) -> list[TextPair]:
        return [(example["paragraph"], f"{example['question']} {example['answer']}")]

    def score(self, examples: list[Example], features: Features, outputs: list[Any]) -> dict[str, float]:
        predictions = self.predict(examples, features, outputs)
        labelled = [i for i, example in enumerate(examples) if example["label"] is not None]
        if not labelled:
            raise DataError(f"{self.name}: cannot score, none of the {len(examples)} examples has a label")
        return metrics.multirc_scores(
            [predictions[i] for i in labelled],
            [self.label_index(examples[i]["label"]) for i in labelled],
            [examples[i]["question_id"] for i in labelled],
        )


class Record(SuperGlueTask):
    """One model input per candidate entity: (passage, query with @placeholder := entity), each
    classified 'is the answer' (label True) or not; the best-scored entity is the prediction.

    An example's ``label`` is its list of gold answer texts. Reads SuperGLUE's nested records
    (entities as inclusive character spans) or the hub's flat rows (entities as strings).
    """

    name = "record"
    description = "ReCoRD: fill the @placeholder of a query with an entity of the passage (SuperGLUE)"
    label_names = BOOLEAN_LABELS
    fields = {"passage": ("passage",), "query": ("query",), "entities": ("entities",)}
    label_columns = ("answers",)
    primary_metric = "f1"
    hub_config = "record"

    def flatten(self, table: Table) -> Table:
        if "qas" not in table.columns:
            return table
        rows, locations = [], []
        for row_index, row in enumerate(table.rows):
            where = table.where(row_index)
            passage = row.get("passage")
            if not isinstance(passage, dict) or not isinstance(row.get("qas"), list):
                raise DataError(
                    f"{where}: expected 'passage' {{text, entities}} and a 'qas' list (SuperGLUE ReCoRD)"
                )
            text = passage.get("text", "")
            entities = [span_text(text, span, where) for span in passage.get("entities", [])]
            for q_pos, qa in enumerate(row["qas"]):
                answers = [answer.get("text") for answer in qa.get("answers", [])]
                rows.append(
                    {
                        "passage": text,
                        "query": qa.get("query"),
                        "entities": entities,
                        "answers": answers or None,
                        "idx": qa.get("idx", f"{row.get('idx', row_index)}-{q_pos}"),
                    }
                )
                locations.append(f"{table.locations[row_index]}, query {q_pos}")
        columns = ["passage", "query", "entities", "answers", "idx"]
        return Table(table.source, columns, rows, locations, table.blank_lines, table.notes)

    def check_field(self, name: str, value: Any, where: str) -> Any:
        if name == "entities":
            if not isinstance(value, list) or not all(isinstance(entity, str) for entity in value):
                raise DataError(f"{where}: 'entities' should be a list of strings, found {value!r}")
            return list(dict.fromkeys(value))  # the same entity twice is one candidate
        return super().check_field(name, value, where)

    def read_label(self, table: Table, row: int, column: str | None, split: str) -> list[str] | None:
        """The gold answer texts of one query, or None for an unlabelled (test) query."""
        answers = table.rows[row].get(column) if column else None
        if answers is not None and not (
            isinstance(answers, list) and all(isinstance(a, str) for a in answers)
        ):
            raise DataError(f"{table.where(row)}: 'answers' should be a list of strings, found {answers!r}")
        if not answers:
            if split.startswith("train"):
                raise DataError(f"{table.where(row)}: no answers; a train split needs them")
            return None
        return list(answers)

    def examples_from_table(self, table: Table, split: str) -> tuple[list[Example], DataReport]:
        examples, report = super().examples_from_table(table, split)
        for example in examples:
            if not example["entities"]:
                report.notes.append(f"{example['source']}: no candidate entities; it will be scored as wrong")
        return examples, report

    def render(self, example: Example) -> list[TextPair]:
        passage = example["passage"].replace("@highlight\n", "- ")
        return [(passage, example["query"].replace("@placeholder", entity)) for entity in example["entities"]]

    def features_of(self, index: int, example: Example, encodings: list[dict[str, list[int]]]) -> Features:
        features = []
        for candidate, (entity, encoding) in enumerate(zip(example["entities"], encodings, strict=True)):
            feature: dict[str, Any] = {**encoding, "example_index": index, "candidate_index": candidate}
            if example["label"] is not None:
                feature["labels"] = int(entity in example["label"])
            features.append(feature)
        return features

    def candidate_probabilities(
        self, examples: list[Example], features: Features, outputs: list[Any]
    ) -> list[dict[str, float]]:
        """P(entity is the answer) for every candidate of every example."""
        if len(outputs) != len(features):
            raise ValueError(f"{len(outputs)} outputs for {len(features)} features; expected one per feature")
        per_example: list[dict[str, float]] = [{} for _ in examples]
        for feature, output in zip(features, outputs, strict=True):
            entity = examples[feature["example_index"]]["entities"][feature["candidate_index"]]
            per_example[feature["example_index"]][entity] = float(
                softmax(np.asarray(output, dtype=np.float64))[1]
            )
        return per_example

    def predict(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[str]:
        probabilities = self.candidate_probabilities(examples, features, outputs)
        return [max(candidates, key=candidates.get) if candidates else "" for candidates in probabilities]

    def score(self, examples: list[Example], features: Features, outputs: list[Any]) -> dict[str, float]:
        predictions = self.predict(examples, features, outputs)
        labelled = [i for i, example in enumerate(examples) if example["label"]]
        if not labelled:
            raise DataError(f"{self.name}: cannot score, none of the {len(examples)} examples has answers")
        return metrics.record_scores(
            [predictions[i] for i in labelled], [examples[i]["label"] for i in labelled]
        )

    def decode(self, examples: list[Example], features: Features, outputs: list[Any]) -> list[dict[str, Any]]:
        probabilities = self.candidate_probabilities(examples, features, outputs)
        return [
            {
                "label": max(candidates, key=candidates.get) if candidates else None,
                "probabilities": candidates,
            }
            for candidates in probabilities
        ]


def span_text(text: str, span: Any, where: str) -> str:
    """The passage text of a ReCoRD entity span {start, end} (end inclusive)."""
    start, end = (span.get("start"), span.get("end")) if isinstance(span, dict) else (None, None)
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end < len(text):
        raise DataError(
            f"{where}: entity span {span!r} is not an inclusive {{start, end}} inside the passage"
        )
    return text[start : end + 1]


# --- generic CSV / JSONL tasks ------------------------------------------------------------------------


class CsvClassification(ClassificationTask):
    """Text classification from any CSV/TSV/JSONL with named columns; the label set is learned from
    the train split (or given as ``label_names``), and any other split may only use those labels."""

    name = "csv-classification"
    description = "generic single-text classification; columns and label set configurable"
    label_names = None
    splits = {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"}
    default_text_fields: tuple[str, ...] = ("text", "sentence")
    default_pair_fields: tuple[str, ...] | None = None

    def __init__(
        self,
        *,
        text_field: str | tuple[str, ...] | None = None,
        text_pair_field: str | tuple[str, ...] | None = None,
        label_field: str | tuple[str, ...] = "label",
        label_names: list[str] | None = None,
        label_map: Mapping[str, str] | None = None,
        splits: Mapping[str, str] | None = None,
    ):
        self.fields = {"text": as_aliases(text_field) or self.default_text_fields}
        pair = as_aliases(text_pair_field) or self.default_pair_fields
        if pair:
            self.fields["text_pair"] = pair
        self.label_columns = as_aliases(label_field)
        self.label_names = list(label_names) if label_names else None
        super().__init__(label_map=label_map, splits=splits)

    def read(self, data_dir: str, split: str) -> tuple[list[Example], DataReport]:
        if self.label_names is None and self.split_name(split) != "train":
            if not Path(data_dir).expanduser().is_dir():
                raise DataError(
                    f"{self.name}: the label set is unknown; "
                    "read the train split first or pass label_names=[...]"
                )
            self.read(data_dir, "train")  # learns the label set
        return super().read(data_dir, split)

    def examples_from_table(self, table: Table, split: str) -> tuple[list[Example], DataReport]:
        if self.label_names is None:
            column = table.find_column(self.label_columns, what="the label")
            keys = {label_key(row.get(column)) for row in table.rows} - {None}
            names = {self.label_map.get(key, key) for key in keys}
            self.label_names = sorted(names, key=natural_order)
            table.notes.append(f"{table.source}: label set learned from this file: {self.label_names}")
        return super().examples_from_table(table, split)

    def parse_label(self, key: str, where: str) -> str:
        return map_label(key, self.label_names or [], self.label_map, where)  # no integer codes here


class PairClassification(CsvClassification):
    name = "pair-classification"
    description = "generic sentence-pair classification; columns and label set configurable"
    default_text_fields = ("sentence1", "text_a", "premise", "question1")
    default_pair_fields = ("sentence2", "text_b", "hypothesis", "question2")


def as_aliases(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def natural_order(name: str) -> tuple[int, float, str]:
    """Numbers in numeric order first ('2' before '10'), then other names alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


TASKS: list[type[Task]] = [
    Sst2,
    Cola,
    Mrpc,
    Qqp,
    Stsb,
    Mnli,
    Qnli,
    Rte,
    Wnli,
    BoolQ,
    Cb,
    SuperGlueRte,
    Wic,
    Wsc,
    Copa,
    MultiRc,
    Record,
    CsvClassification,
    PairClassification,
]
