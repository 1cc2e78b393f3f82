"""Sentence(-pair) classification, regression and multiple choice: one or two texts in, one label out.

The base classes here read a table (by header name, with aliases), map labels, encode texts and score
outputs; the task families declare only their columns, label sets, split files and metrics by class
attributes: GLUE in ``glue.py``, SuperGLUE in ``superglue.py``, any CSV/JSONL in ``csv_tasks.py``.
Inputs follow the templates of the P-tuning v2 reference code (THUDM/P-tuning-v2, tasks/glue and
tasks/superglue), so scores stay comparable with the paper. Examples are plain dicts: the input fields,
``label`` (a label name, a float for STS-B, a choice index for COPA, or None when unlabelled), ``id`` and
``source`` ('file, line N', used in every error).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ptuning.core.config import ConfigError
from ptuning.tasks import metrics
from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.readers import (
    SPLIT_ALIASES,
    Table,
    check_single_label,
    is_hub_id,
    label_key,
    load_hub_table,
    map_label,
    read_table,
    row_id,
    split_file,
)

Example = dict[str, Any]
TextPair = tuple[str, str | None]

FROM_VAL_SEED = 42  # the 'seed' of the from-val split: it salts the SHA-256 rank of each example id
FROM_VAL_SPLITS = {"train-from-val": "train", "eval-from-val": "eval"}
HUB_UNLABELLED = "-1"  # datasets' ClassLabel value for "no label" (GLUE/SuperGLUE test splits)


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
        self, *, label_map: Mapping[Any, Any] | None = None, splits: Mapping[str, str] | None = None
    ):
        # keys and targets as the raw labels are read (true -> 'True', 1 / 1.0 -> '1'): a map keyed 'true'
        # never matched, and a numeric target ({"yes": 1} from JSON/YAML) was not the label '1'
        self.label_map = {
            label_key(key) or str(key): label_key(value) or str(value)
            for key, value in (label_map or {}).items()
        }
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
            path = split_file(source, self.splits[split])
            return read_table(path, headerless_columns=self.headerless_columns)
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
            self.label_columns, required=self.is_train_split(split), what="the label"
        )
        examples: list[Example] = []
        report = DataReport(skipped=table.blank_lines, notes=list(table.notes))
        textless: list[str] = []  # rows whose every text input is empty: kept, and counted
        for row in range(len(table.rows)):
            example: Example = {"id": row_id(table.rows[row], row), "source": table.where(row)}
            for name, column in columns.items():
                example[name] = self.check_field(name, table.value(row, column), table.where(row))
            example["label"] = self.read_label(table, row, label_column, split)
            report.unlabelled += example["label"] is None
            texts = [example[name] for name in columns if isinstance(example[name], str)]
            if texts and not any(text.strip() for text in texts):
                textless.append(table.where(row))
            examples.append(example)
        report.examples = len(examples)
        if table.blank_lines:
            report.notes.append(f"{table.source}: skipped {table.blank_lines} blank lines")
        if textless:
            report.notes.append(
                f"{len(textless)} example(s) with no text (every input field empty or blank), kept; the first at "
                f"{textless[0]}"
            )
        return examples, report

    def read_label(self, table: Table, row: int, column: str | None, split: str) -> Any:
        """The row's label (a name here), or None when it has none; train rows must have one. In a benchmark
        with a hub dataset (GLUE, SuperGLUE), -1 is the hub's mark of an unlabelled test row, kept as such by
        ``Dataset.to_json`` exports (``load_hub_table`` reads it as none too)."""
        if column:
            check_single_label(table.rows[row].get(column), table.where(row), column)
        key = label_key(table.rows[row].get(column)) if column else None
        if key == HUB_UNLABELLED and self.hub_dataset:
            key = None
        if key is None:
            if self.is_train_split(split):
                raise DataError(f"{table.where(row)}: no label in column {column!r}; a train split needs one")
            return None
        return self.parse_label(key, table.where(row))

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
            score = float(key)
        except ValueError:
            raise DataError(f"{where}: label {key!r} is not a number; expected a similarity score") from None
        if not math.isfinite(score):  # inf (or 1e400) would make the loss inf and every gradient NaN
            raise DataError(f"{where}: label {key!r} is not a finite number; expected a similarity score")
        return score

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

PAIR_SEPARATOR = "\n"  # between the two texts of a pair where the tokenizer puts nothing (decoders)


def joins_pairs_bare(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` encodes a pair as the two texts glued together, with nothing between them (GPT-2,
    Llama 3, SmolLM2, Qwen: no special tokens at all; BERT puts [SEP] there, T5 </s>, Llama 2 <s>). Left so,
    "on the mat.A cat is" would reach the model: pairs then get ``PAIR_SEPARATOR`` between the texts."""
    return tokenizer.num_special_tokens_to_add(pair=True) == tokenizer.num_special_tokens_to_add(pair=False)


# inputs per tokenizer call: one call over a whole split holds every input's records at once
ENCODE_CHUNK = 1000


def encode_pairs(
    tokenizer: Any, pairs: list[TextPair], max_length: int
) -> tuple[list[dict[str, list[int]]], list[bool]]:
    """Token ids of each (text, optional second text), cut to ``max_length``, and which ones were cut.

    Everything is encoded once without truncation (so the cut is counted, never silent), and only the
    inputs that are too long are encoded again with 'longest_first' truncation, from texts first cut to
    about what that truncation could keep of them (``_keepable_texts``): the same ids, far less work. Where
    the tokenizer would glue a pair's texts together (``joins_pairs_bare``), the second starts with
    ``PAIR_SEPARATOR``, which truncation (from each text's end) never cuts. The inputs are encoded
    ``ENCODE_CHUNK`` at a time: a fast tokenizer's records (offsets, words, ...) of a whole split in one call
    cost many times its ids, and each input's ids do not depend on the others in its call.
    """
    if max_length < tokenizer.num_special_tokens_to_add(pair=True) + 2:
        raise ConfigError(f"max_length={max_length} leaves no room for text after the special tokens")
    if not pairs:
        return [], []
    is_pair = pairs[0][1] is not None
    if any((second is not None) != is_pair for _, second in pairs):
        raise ValueError("encode_pairs: either every input is a pair or none is")
    glue = is_pair and joins_pairs_bare(tokenizer)
    encodings: list[dict[str, list[int]]] = []
    truncated: list[bool] = []
    for start in range(0, len(pairs), ENCODE_CHUNK):
        chunk_encodings, chunk_truncated = _encode_chunk(
            tokenizer, pairs[start : start + ENCODE_CHUNK], max_length, glue
        )
        encodings.extend(chunk_encodings)
        truncated.extend(chunk_truncated)
    return encodings, truncated


def _encode_chunk(
    tokenizer: Any, pairs: list[TextPair], max_length: int, glue: bool
) -> tuple[list[dict[str, list[int]]], list[bool]]:
    """``encode_pairs`` of one chunk (checked there); ``glue``: put ``PAIR_SEPARATOR`` before second texts."""
    firsts = [first for first, _ in pairs]
    seconds = [second for _, second in pairs]
    is_pair = seconds[0] is not None
    if glue:
        seconds = [PAIR_SEPARATOR + second for second in seconds]
    full = tokenizer(firsts, seconds if is_pair else None, truncation=False, verbose=False)
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in full]
    encodings = [{key: full[key][i] for key in keys} for i in range(len(pairs))]
    too_long = [i for i, encoding in enumerate(encodings) if len(encoding["input_ids"]) > max_length]
    if too_long:
        texts = [[firsts[i], seconds[i]] if is_pair else [firsts[i]] for i in too_long]
        # a fast (Rust) tokenizer says where each token came from; the cut keeps each text's start, which is
        # what truncation keeps only when it cuts from the right
        if full.encodings is not None and getattr(tokenizer, "truncation_side", "right") == "right":
            budget = max_length - tokenizer.num_special_tokens_to_add(pair=is_pair)
            texts = _keepable_texts(tokenizer, [full.encodings[i] for i in too_long], texts, budget)
        cut = tokenizer(
            [text[0] for text in texts],
            [text[1] for text in texts] if is_pair else None,
            truncation="longest_first",
            max_length=max_length,
        )
        for row, i in enumerate(too_long):
            encodings[i] = {key: cut[key][row] for key in keys}
    truncated = [False] * len(pairs)
    for i in too_long:
        truncated[i] = True
    return encodings, truncated


def _keepable_texts(
    tokenizer: Any, encodings: list[Any], texts: list[list[str]], budget: int
) -> list[list[str]]:
    """Each input's texts (one, or a pair) cut to about the tokens that 'longest_first' truncation to
    ``budget`` text tokens could keep of them, chosen so that it keeps exactly what it keeps of the whole.

    Why: HF tokenizers build every overflow window of a cut text and, for a pair, every window of one text
    against every window of the other, so the cost grows with the square of the tokens cut away (two
    2000-token texts to 128: ~200 ms). What truncation keeps depends only on each text's length up to
    ``budget`` and on which text is the longer (ties included), so a text over the budget is cut to
    ``budget`` + 1 tokens when it is the longer one, else to ``budget``. The cut is made at the end of a
    token, which leaves the tokens before it as they were (WordPiece and BPE never merge across a token
    boundary; Unigram's best path to a boundary is the prefix's best path); it is checked by encoding the
    cut texts, and an input whose cut keeps other tokens or lengths (``_same_truncation``) stays whole.
    """
    wholes, cuts = [], []
    for encoding, row in zip(encodings, texts, strict=True):
        sides = _side_tokens(encoding, len(row))
        counts = [len(ids) for ids, _ in sides]
        longer = [len(counts) == 2 and count > counts[1 - k] for k, count in enumerate(counts)]
        caps = [min(count, budget + more) for count, more in zip(counts, longer, strict=True)]
        cuts.append(
            [
                text if cap == len(ids) else text[: offsets[cap - 1][1]]
                for text, cap, (ids, offsets) in zip(row, caps, sides, strict=True)
            ]
        )
        wholes.append([ids for ids, _ in sides])
    second = [row[1] for row in cuts] if len(texts[0]) == 2 else None
    check = tokenizer([row[0] for row in cuts], second, truncation=False, verbose=False).encodings
    kept = []
    for row, cut, whole, encoding in zip(texts, cuts, wholes, check, strict=True):
        cut_ids = [ids for ids, _ in _side_tokens(encoding, len(row))]
        prefixes = all(ids == whole_ids[: len(ids)] for ids, whole_ids in zip(cut_ids, whole, strict=True))
        lengths = ([len(ids) for ids in whole], [len(ids) for ids in cut_ids])
        kept.append(cut if prefixes and _same_truncation(*lengths, budget) else row)
    return kept


def _side_tokens(encoding: Any, sides: int) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """The token ids and character offsets (in its own text) of each text of an encoded input."""
    ids, offsets, sequence = encoding.ids, encoding.offsets, encoding.sequence_ids
    found: list[tuple[list[int], list[tuple[int, int]]]] = [([], []) for _ in range(sides)]
    for token, side in enumerate(sequence):
        if side is not None:
            found[side][0].append(ids[token])
            found[side][1].append(offsets[token])
    return found


def _same_truncation(whole: list[int], cut: list[int], budget: int) -> bool:
    """Whether 'longest_first' truncation to ``budget`` keeps as many tokens of texts of the ``cut`` token
    counts as of texts of the ``whole`` counts: a text within the budget is whole, one over it still has at
    least the budget, and the longer text of a pair stays the longer one (or both stay equal)."""
    fits = all(c == w if w <= budget else c >= budget for w, c in zip(whole, cut, strict=True))
    if len(whole) == 1:
        return fits
    return fits and (whole[0] > whole[1], whole[0] < whole[1]) == (cut[0] > cut[1], cut[0] < cut[1])


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
