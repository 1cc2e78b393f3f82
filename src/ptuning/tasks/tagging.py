"""Token classification tasks: CoNLL-2003/2004 and OntoNotes NER, any token/tag file, CoNLL-2005/2012 SRL.

Readers turn column files into sentences with IOB2 tags (see tag_schemes); features label the first
sub-token of each word and ignore the rest (-100), and scoring maps the head's per-token logits back to
words before running seqeval. Words lost to truncation are counted at featurization and predicted ``O`` at
scoring, so a cut sentence costs recall instead of silently leaving the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.readers import check_file, decode_utf8
from ptuning.tasks.tag_schemes import (
    Scheme,
    TagError,
    detect_scheme,
    entity_scores,
    entity_spans,
    iob2_labels,
    split_tag,
    to_iob2,
)

# every tagging task calls its held-out split "dev"; these names are accepted for it
SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev", "eval": "dev"}


@dataclass
class Sentence:
    """One labelled sentence as read, with the file line of each token for error messages."""

    tokens: list[str]
    tags: list[str]
    lines: list[int]
    doc_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- readers


def _read_lines(path: Path) -> list[str]:
    """The file's lines, or a DataError for a missing or empty file."""
    check_file(path)
    # split on "\n" only: str.splitlines() also breaks on characters such as U+2028 and shifts line numbers
    lines = [line.rstrip("\r") for line in decode_utf8(path).split("\n")]
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: empty file; expected sentences of one 'token ... tag' line per word")
    return lines


def read_column_file(
    path: Path,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    num_columns: int | None = None,
    separator: str | None = None,
    layout: str = "token ... tag",
    comment_prefix: str | None = None,
) -> tuple[list[Sentence], int]:
    """Read a CoNLL-style column file: one word per line, a blank line between sentences.

    ``-DOCSTART-`` lines are skipped and counted as documents. ``num_columns=None`` takes the column count
    of the first word line and holds every other line to it. ``separator=None`` splits on any whitespace.
    """
    sentences: list[Sentence] = []
    documents = 0
    current = Sentence([], [], [], None)
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip() or (comment_prefix and line.startswith(comment_prefix)):
            if current.tokens:
                sentences.append(current)
                current = Sentence([], [], [], current.doc_id)
            continue
        columns = line.split(separator) if separator else line.split()
        if columns[0] == "-DOCSTART-":
            documents += 1
            if current.tokens:
                sentences.append(current)
            current = Sentence([], [], [], str(documents))
            continue
        if num_columns is None:
            num_columns = len(columns)
            if num_columns < 2:
                raise DataError(
                    f"{path}, line {number}: expected at least 2 columns '{layout}', got 1: {line!r}"
                )
        if len(columns) != num_columns:
            raise DataError(
                f"{path}, line {number}: expected {num_columns} columns '{layout}', got {len(columns)}: {line!r}"
            )
        current.tokens.append(columns[token_column])
        current.tags.append(columns[tag_column])
        current.lines.append(number)
    if current.tokens:
        sentences.append(current)
    return sentences, documents


def read_gupta_file(path: Path) -> tuple[list[Sentence], int]:
    """Read the Gupta et al. CoNLL04 TSV: ``#doc N`` opens a sentence, then ``idx token tag relations heads``
    per word (tab-separated, idx counting from 0)."""
    sentences: list[Sentence] = []
    current: Sentence | None = None
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        if line.startswith("#doc"):
            current = Sentence([], [], [], line[len("#doc") :].strip())
            sentences.append(current)
            continue
        columns = line.split("\t")
        if current is None:
            raise DataError(f"{path}, line {number}: expected a '#doc N' header before the first word line")
        if len(columns) != 5:
            raise DataError(
                f"{path}, line {number}: expected 5 tab-separated columns 'idx token tag relations heads', "
                f"got {len(columns)}: {line!r}"
            )
        if columns[0] != str(len(current.tokens)):
            raise DataError(
                f"{path}, line {number}: expected word index {len(current.tokens)}, got {columns[0]!r}"
            )
        current.tokens.append(columns[1])
        current.tags.append(columns[2])
        current.lines.append(number)
    sentences = [sentence for sentence in sentences if sentence.tokens]
    return sentences, len(sentences)


def read_conll2004_file(path: Path) -> tuple[list[Sentence], int]:
    """CoNLL04 in either layout: the Gupta TSV when the first line is a ``#doc`` header or holds a tab, else
    space-separated ``token tag``."""
    first = next(line for line in _read_lines(path) if line.strip())
    if first.startswith("#doc") or "\t" in first:
        return read_gupta_file(path)
    return read_column_file(path, num_columns=2, separator=" ", layout="token tag")


def read_srl_file(path: Path) -> tuple[list[Sentence], int]:
    """Read the P-tuning v2 SRL line format: ``predicate_index tok1 ... tokN ||| tag1 ... tagN``, one
    predicate per line (a sentence with k predicates appears k times)."""
    sentences: list[Sentence] = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        words_part, bar, tags_part = line.partition("|||")
        fields, tags = words_part.split(), tags_part.split()
        if not bar or len(fields) < 2:
            raise DataError(
                f"{path}, line {number}: expected 'predicate_index tokens ||| tags', got {line!r}"
            )
        index_text, tokens = fields[0], fields[1:]
        if len(tokens) != len(tags):
            raise DataError(
                f"{path}, line {number}: token/tag count mismatch: {len(tokens)} tokens, {len(tags)} tags"
            )
        if not index_text.isdigit() or int(index_text) >= len(tokens):
            raise DataError(
                f"{path}, line {number}: expected a predicate index in 0..{len(tokens) - 1}, got {index_text!r}"
            )
        extra = {"predicate_index": int(index_text)}
        sentences.append(Sentence(tokens, tags, [number] * len(tokens), None, extra))
    return sentences, 0


def normalise_tags(sentences: list[Sentence], scheme: Scheme, path: Path) -> tuple[Scheme, int]:
    """Rewrite every sentence's tags as IOB2 in place; returns the scheme used and the repair count."""
    if scheme is Scheme.AUTO:
        for sentence in sentences:
            for tag, number in zip(sentence.tags, sentence.lines, strict=True):
                try:
                    split_tag(tag)
                except ValueError as error:
                    raise DataError(f"{path}, line {number}: {error}") from None
        scheme = detect_scheme([sentence.tags for sentence in sentences])
    repaired = 0
    for sentence in sentences:
        try:
            sentence.tags, fixed = to_iob2(sentence.tags, scheme)
        except TagError as error:
            raise DataError(f"{path}, line {sentence.lines[error.position]}: {error}") from None
        repaired += fixed
    return scheme, repaired


# ------------------------------------------------------------------------------------------------ tasks


class TaggingTask(Task):
    """Named-entity style tagging: one IOB2 label per word, scored by entity F1.

    Subclasses name the task, its split files, its entity types and how a file is read (``read_file``).
    Options: ``mode`` selects seqeval's ``conlleval`` (default) or ``strict`` IOB2 entity matching;
    ``scheme`` declares the files' tag scheme (default: the task's, often ``auto``); ``splits`` overrides
    split file names; ``entity_types`` overrides the label set. With no entity types at all (ner-generic),
    the first file read fixes the label set (sorted types) and later files must stay inside it.
    """

    head = HeadKind.TOKEN_CLASSIFICATION
    primary_metric = "f1"
    entity_types: list[str] | None = None
    scheme: Scheme = Scheme.AUTO

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.entity_types is not None:  # label names are visible on the class, before any instance
            cls.label_names = iob2_labels(cls.entity_types)

    def __init__(
        self,
        *,
        mode: str = "conlleval",
        scheme: Scheme | str | None = None,
        splits: dict[str, str] | None = None,
        entity_types: list[str] | None = None,
    ) -> None:
        if mode not in ("conlleval", "strict"):
            raise ValueError(f"mode must be 'conlleval' or 'strict', got {mode!r}")
        self.mode = mode
        self.scheme = Scheme(scheme) if scheme is not None else type(self).scheme
        self.splits = {**type(self).splits, **(splits or {})}
        types = entity_types if entity_types is not None else type(self).entity_types
        self.entity_types = list(types) if types is not None else None
        self.label_names = iob2_labels(self.entity_types) if self.entity_types is not None else None

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        """Sentences (raw tags) and the number of documents of one file."""
        raise NotImplementedError

    # reading

    def resolve_path(self, data_dir: str | Path, split: str) -> Path:
        """A split name (aliases: validation, valid -> dev) or a file name relative to ``data_dir``."""
        split = SPLIT_ALIASES.get(split, split)
        if split in self.splits:
            return Path(data_dir) / self.splits[split]
        candidate = Path(data_dir) / split
        if candidate.is_file():
            return candidate
        raise DataError(
            f"{self.name}: unknown split {split!r}; expected one of {sorted(self.splits)} or a file"
        )

    def read(self, data_dir: str, split: str) -> tuple[list[dict[str, Any]], DataReport]:
        path = self.resolve_path(data_dir, split)
        sentences, documents = self.read_file(path)
        scheme, repaired = normalise_tags(sentences, self.scheme, path)
        self._check_types(sentences, path)
        examples = [self._example(i, sentence) for i, sentence in enumerate(sentences)]
        tokens = sum(len(sentence.tokens) for sentence in sentences)
        notes = [
            f"{path}: {len(examples)} sentences, {tokens} tokens, {documents} documents, scheme {scheme}"
        ]
        if repaired and scheme in (Scheme.IOB2, Scheme.BIO):
            notes.append(f"{path}: {repaired} I- tags opened an entity and were read as B- (malformed IOB2)")
        elif repaired:
            notes.append(f"{path}: {repaired} tags rewritten from {scheme} to IOB2")
        return examples, DataReport(examples=len(examples), notes=notes)

    def _example(self, index: int, sentence: Sentence) -> dict[str, Any]:
        example = {
            "id": str(index),
            "tokens": sentence.tokens,
            "tags": sentence.tags,
            "doc_id": sentence.doc_id,
        }
        example.update(sentence.extra)
        return example

    def _check_types(self, sentences: list[Sentence], path: Path) -> None:
        """Every entity type must be in the label set; with no label set yet, this file defines it."""
        if self.entity_types is None:
            found = {split_tag(tag)[1] for sentence in sentences for tag in sentence.tags if tag != "O"}
            self.entity_types = sorted(found)
            self.label_names = iob2_labels(self.entity_types)
            return
        known = set(self.entity_types)
        for sentence in sentences:
            for tag, number in zip(sentence.tags, sentence.lines, strict=True):
                if tag != "O" and split_tag(tag)[1] not in known:
                    raise DataError(
                        f"{path}, line {number}: unknown entity type in tag {tag!r}; expected one of {sorted(known)}"
                    )

    # features

    def _encode(self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int) -> Any:
        return tokenizer(
            [example["tokens"] for example in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
        )

    def featurize(
        self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int
    ) -> tuple[Features, DataReport]:
        """One feature per sentence; labels on each word's first sub-token, -100 elsewhere."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{self.name} needs a fast tokenizer (word_ids() aligns labels to words)")
        if self.label_names is None:
            raise ValueError(f"{self.name}: the label set is unknown; read a split first")
        label_ids = {label: i for i, label in enumerate(self.label_names)}
        features: Features = []
        report = DataReport(examples=len(examples))
        words_lost = no_subtokens = 0
        for start in range(0, len(examples), 1000):
            chunk = examples[start : start + 1000]
            encoding = self._encode(chunk, tokenizer, max_length)
            for offset, example in enumerate(chunk):
                word_ids = self._first_segment_word_ids(encoding, offset)
                seen = {word for word in word_ids if word is not None}
                last = max(seen, default=-1)
                lost = len(example["tokens"]) - 1 - last
                if lost:
                    report.truncated += 1
                    words_lost += lost
                no_subtokens += last + 1 - len(seen)
                feature = {key: encoding[key][offset] for key in encoding}
                feature["labels"] = self._labels(example, word_ids, label_ids)
                feature["word_ids"] = word_ids
                feature["example_index"] = start + offset
                features.append(feature)
        if report.truncated:
            report.notes.append(
                f"{self.name}: {report.truncated} sentences cut at max_length={max_length}, {words_lost} words "
                "lost (predicted O when scoring)"
            )
        if no_subtokens:
            report.notes.append(f"{self.name}: {no_subtokens} words produced no sub-token (predicted O)")
        return features, report

    def _first_segment_word_ids(self, encoding: Any, index: int) -> list[int | None]:
        """Word index per token; None for special tokens and anything outside the labelled sentence."""
        sequence_ids = encoding.sequence_ids(index)
        return [
            word if segment == 0 else None
            for word, segment in zip(encoding.word_ids(index), sequence_ids, strict=True)
        ]

    def _labels(
        self, example: dict[str, Any], word_ids: list[int | None], label_ids: dict[str, int]
    ) -> list[int]:
        labels = []
        for position, word in enumerate(word_ids):
            if word is None or (position > 0 and word_ids[position - 1] == word):
                labels.append(-100)
                continue
            tag = example["tags"][word]
            if tag not in label_ids:
                raise DataError(f"{self.name}: example {example['id']}: tag {tag!r} is not in the label set")
            labels.append(label_ids[tag])
        return labels

    # predictions

    def predict_tags(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[list[str]]:
        """Per-word tags from token logits (T, C): argmax at each word's first sub-token; uncovered words: O."""
        predicted = [["O"] * len(example["tokens"]) for example in examples]
        for feature, logits in zip(features, outputs, strict=True):
            best = np.asarray(logits).argmax(axis=-1)
            tags = predicted[feature["example_index"]]
            word_ids = feature["word_ids"]
            for position, word in enumerate(word_ids):
                if word is not None and (position == 0 or word_ids[position - 1] != word):
                    tags[word] = self.label_names[int(best[position])]
        return predicted

    def score(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> dict[str, float]:
        """seqeval entity precision/recall/F1 (micro, fractions 0..1), token accuracy and ``f1_<TYPE>``."""
        predicted = self.predict_tags(examples, features, outputs)
        return entity_scores([example["tags"] for example in examples], predicted, self.mode)

    def decode(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[dict[str, Any]]:
        """Per example: id, per-word tags and entities [{type, start_word, end_word (inclusive), text}]."""
        predicted = self.predict_tags(examples, features, outputs)
        results = []
        for example, tags in zip(examples, predicted, strict=True):
            entities = [
                {
                    "type": entity_type,
                    "start_word": start,
                    "end_word": end,
                    "text": " ".join(example["tokens"][start : end + 1]),
                }
                for entity_type, start, end in entity_spans(tags, self.mode)
            ]
            results.append(
                {"id": example["id"], "tokens": example["tokens"], "tags": tags, "entities": entities}
            )
        return results


class SrlTask(TaggingTask):
    """Semantic role labelling, one predicate per example, in the P-tuning v2 reference line format.

    The predicate is marked as the reference does, by appending it as a second segment
    (``[CLS] tokens [SEP] predicate [SEP]``), but through the tokenizer's own pair encoding rather than a
    literal "[SEP]" word: the separator is right for every tokenizer, and BERT-style models get
    token_type_ids 1 on the predicate segment (the reference feeds 0 everywhere). Only the first segment is
    labelled. Scores exclude the predicate's own ``V`` span, as CoNLL's srl-eval.pl does; ``f1_with_v``
    is the seqeval figure over all spans that the reference code reports.
    """

    scheme = Scheme.IOB2

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        return read_srl_file(path)

    def read(self, data_dir: str, split: str) -> tuple[list[dict[str, Any]], DataReport]:
        """As for NER, plus a note on predicate indices that do not point at a V tag (e.g. 1-based files)."""
        examples, report = super().read(data_dir, split)
        missed = sum(1 for e in examples if e["tags"][e["predicate_index"]] not in ("B-V", "I-V"))
        if missed:
            report.notes.append(f"{self.name}: {missed} predicates whose index does not point at a V tag")
        return examples, report

    def _example(self, index: int, sentence: Sentence) -> dict[str, Any]:
        example = super()._example(index, sentence)
        example["predicate"] = sentence.tokens[example["predicate_index"]]
        return example

    def _encode(self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int) -> Any:
        return tokenizer(
            [example["tokens"] for example in examples],
            [[example["predicate"]] for example in examples],
            is_split_into_words=True,
            truncation="only_first",
            max_length=max_length,
        )

    def score(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> dict[str, float]:
        predicted = self.predict_tags(examples, features, outputs)
        gold = [example["tags"] for example in examples]
        scores = entity_scores([_without_v(t) for t in gold], [_without_v(t) for t in predicted], self.mode)
        scores["f1_with_v"] = entity_scores(gold, predicted, self.mode)["f1"]
        return scores

    def decode(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[dict[str, Any]]:
        results = super().decode(examples, features, outputs)
        for result, example in zip(results, examples, strict=True):
            result["predicate_index"] = example["predicate_index"]
        return results


def _without_v(tags: list[str]) -> list[str]:
    return ["O" if tag in ("B-V", "I-V") else tag for tag in tags]


def srl_roles(core: list[str], modifiers: list[str]) -> list[str]:
    """A role inventory: core and modifier roles, V, and the continuation (C-) and reference (R-) forms."""
    base = core + modifiers
    return base + ["V"] + [f"C-{role}" for role in base + ["V"]] + [f"R-{role}" for role in base]


_CONLL2005_MODIFIERS = ["ADV", "CAU", "DIR", "DIS", "EXT", "LOC", "MNR", "MOD", "NEG", "PNC", "PRD", "REC"]
_CONLL2005_MODIFIERS += ["TM", "TMP"]
_CONLL2012_MODIFIERS = ["ADJ", "ADV", "CAU", "COM", "DIR", "DIS", "DSP", "EXT", "GOL", "LOC", "LVB", "MNR"]
_CONLL2012_MODIFIERS += ["MOD", "NEG", "PNC", "PRD", "PRP", "PRR", "PRX", "REC", "TMP"]
CONLL2005_ROLES = srl_roles(
    ["A0", "A1", "A2", "A3", "A4", "A5", "AA"], ["AM"] + [f"AM-{m}" for m in _CONLL2005_MODIFIERS]
)
CONLL2012_ROLES = srl_roles(
    ["ARG0", "ARG1", "ARG2", "ARG3", "ARG4", "ARG5", "ARGA"], [f"ARGM-{m}" for m in _CONLL2012_MODIFIERS]
)
ONTONOTES_TYPES = ["CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP"]
ONTONOTES_TYPES += ["ORDINAL", "ORG", "PERCENT", "PERSON", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART"]


class Conll2003Task(TaggingTask):
    name = "conll2003"
    description = "CoNLL-2003 English NER (Reuters); 4 space-separated columns, IOB1 or IOB2 tags"
    splits = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}
    entity_types = ["PER", "ORG", "LOC", "MISC"]

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        return read_column_file(path, num_columns=4, separator=" ", layout="token POS chunk NER")


class Conll2004Task(TaggingTask):
    name = "conll2004"
    description = (
        "CoNLL04 entities: SpERT split as 'token tag' (train/dev/test) or Gupta et al. TSV (gupta-*)"
    )
    splits = {
        "train": "derived_bio/train.txt",
        "dev": "derived_bio/dev.txt",
        "test": "derived_bio/test.txt",
        "gupta-train": "gupta_split/train.txt",
        "gupta-dev": "gupta_split/dev.txt",
        "gupta-test": "gupta_split/test.txt",
    }
    entity_types = ["Loc", "Peop", "Org", "Other"]
    scheme = Scheme.IOB2

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        return read_conll2004_file(path)


class OntoNotesTask(TaggingTask):
    """OntoNotes 5.0 NER in the CoNLL-X-like ``*.sd.conllx`` layout: 11 tab-separated columns
    ``ID FORM LEMMA CPOS POS FEATS HEAD DEPREL PHEAD PDEPREL NER``; the word is column 1, the tag column 10
    (0-based; ``token_column``/``tag_column``/``num_columns`` override them)."""

    name = "ontonotes"
    description = "OntoNotes 5.0 NER (18 types), CoNLL-X columns: word in column 1, tag in column 10"
    splits = {"train": "train.sd.conllx", "dev": "dev.sd.conllx", "test": "test.sd.conllx"}
    entity_types = ONTONOTES_TYPES

    def __init__(self, *, token_column: int = 1, tag_column: int = 10, num_columns: int = 11, **options: Any):
        super().__init__(**options)
        self.columns = {"token_column": token_column, "tag_column": tag_column, "num_columns": num_columns}

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        layout = "ID FORM LEMMA CPOS POS FEATS HEAD DEPREL PHEAD PDEPREL NER"
        return read_column_file(path, separator="\t", layout=layout, comment_prefix="#", **self.columns)


class GenericNerTask(TaggingTask):
    """Any column file with a token and a tag per line (default: first and last column, any whitespace);
    the column count of the first word line holds for the whole file. The tag scheme is detected."""

    name = "ner-generic"
    description = "any 'token ... tag' column file; columns configurable, scheme detected, labels from data"
    splits = {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}

    def __init__(
        self, *, token_column: int = 0, tag_column: int = -1, separator: str | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.columns = {"token_column": token_column, "tag_column": tag_column, "separator": separator}

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        return read_column_file(path, **self.columns)


class Conll2005SrlTask(SrlTask):
    name = "conll2005-srl"
    description = "CoNLL-2005 SRL (PropBank), one predicate per line; WSJ and Brown test sets"
    splits = {
        "train": "conll05.train.txt",
        "dev": "conll05.devel.txt",
        "test-wsj": "conll05.test.wsj.txt",
        "test-brown": "conll05.test.brown.txt",
    }
    entity_types = CONLL2005_ROLES


class Conll2012SrlTask(SrlTask):
    name = "conll2012-srl"
    description = "CoNLL-2012 SRL (OntoNotes 5.0), one predicate per line"
    splits = {"train": "conll2012.train.txt", "dev": "conll2012.devel.txt", "test": "conll2012.test.txt"}
    entity_types = CONLL2012_ROLES


# task classes: the registry builds a fresh instance per request, with its options
TASKS: list[type[Task]] = [
    Conll2003Task,
    Conll2004Task,
    OntoNotesTask,
    GenericNerTask,
    Conll2005SrlTask,
    Conll2012SrlTask,
]
