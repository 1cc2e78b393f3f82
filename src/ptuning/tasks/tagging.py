"""Token classification tasks: CoNLL-2003/2004 and OntoNotes NER, any token/tag file (SRL: ``srl.py``).

Readers turn column files into sentences with IOB2 tags (see tag_schemes); features label the first
sub-token of each word and ignore the rest (-100), and scoring maps the head's per-token logits back to
words before running seqeval. Words lost to truncation are counted at featurization and predicted ``O`` at
scoring, so a cut sentence costs recall instead of silently leaving the evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.pretokenized import as_in_running_text, needs_prefix_space
from ptuning.tasks.readers import SPLIT_ALIASES, split_file
from ptuning.tasks.tag_files import (
    Sentence,
    normalise_tags,
    read_column_file,
    read_conll2004_file,
)
from ptuning.tasks.tag_schemes import (
    Scheme,
    entity_scores,
    entity_spans,
    iob2_labels,
    split_tag,
)

# every tagging task calls its held-out split "dev"; these names are accepted for it


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
        self.train_scheme: Scheme | None = None  # the scheme of the file the entity types were learned from

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        """Sentences (raw tags) and the number of documents of one file."""
        raise NotImplementedError

    # reading

    def resolve_path(self, data_dir: str | Path, split: str) -> Path:
        """A split name (aliases: validation, valid -> dev) or a file name relative to ``data_dir``; when
        ``data_dir`` is one file, that file holds the split."""
        split = SPLIT_ALIASES.get(split, split)
        if split in self.splits:
            return split_file(data_dir, self.splits[split])
        candidate = Path(data_dir) / split
        if candidate.is_file():
            return candidate
        raise DataError(
            f"{self.name}: unknown split {split!r}; expected one of {sorted(self.splits)} or a file"
        )

    def read(self, data_dir: str, split: str) -> tuple[list[dict[str, Any]], DataReport]:
        """Sentences of one split. A task without a label set learns it from the train split: reading another
        split of a folder first reads train (reading another split of one file is an error)."""
        if self.entity_types is None and not self.is_train_split(SPLIT_ALIASES.get(split, split)):
            if not Path(data_dir).expanduser().is_dir():
                raise DataError(
                    f"{self.name}: the entity types are unknown; read the train split first or pass "
                    "entity_types=[...]"
                )
            self.read(data_dir, self.train_split)  # learns the entity types
        path = self.resolve_path(data_dir, split)
        sentences, documents = self.read_file(path)
        if not sentences:  # a split of none would be scored as 0 F1 (or a checkpoint chosen by it)
            raise DataError(
                f"{path}: no sentences ({documents} document marker(s), no word lines); expected word lines "
                "with their tags, sentences separated by blank lines"
            )
        scheme, repaired = normalise_tags(sentences, self.scheme, path)
        learning = self.entity_types is None
        self._check_types(sentences, path)
        examples = [self._example(i, sentence) for i, sentence in enumerate(sentences)]
        tokens = sum(len(sentence.tokens) for sentence in sentences)
        notes = [
            f"{path}: {len(examples)} sentences, {tokens} tokens, {documents} documents, scheme {scheme}"
        ]
        if repaired and scheme is Scheme.IOB1:  # IOB1 opens entities with I-: the scheme's own form
            notes.append(f"{path}: {repaired} tags rewritten from {scheme} to IOB2")
        elif repaired:  # IOB2, BIO, BILOU, IOBES open with B-/U-/S-: an I- opener is malformed there
            notes.append(
                f"{path}: {repaired} I- tags opened an entity and were read as B- (malformed {scheme})"
            )
        if learning:
            self.train_scheme = scheme
            notes.append(
                f"{path}: entity types learned from this file: {self.entity_types} (scheme {scheme})"
            )
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
        space = needs_prefix_space(tokenizer)
        return tokenizer(
            [as_in_running_text(example["tokens"], space) for example in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
        )

    def _encode_cut(self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int) -> Any:
        """``_encode`` of the examples' first ``max_length`` words: a row holds at most that many words with a
        token, and encoding a longer sentence whole only to cut it blocked a server on one long request. Words are
        tokenized one by one, so the kept tokens are the same; a row left short although words were dropped
        (some gave no token) has the whole chunk encoded again. A tokenizer that cuts on the left keeps the last
        tokens: it gets the whole sentences."""
        longest = max((len(example["tokens"]) for example in examples), default=0)
        if longest <= max_length or getattr(tokenizer, "truncation_side", "right") != "right":
            return self._encode(examples, tokenizer, max_length)
        firsts = [{**example, "tokens": example["tokens"][:max_length]} for example in examples]
        encoding = self._encode(firsts, tokenizer, max_length)
        short = any(
            len(ids) < max_length and len(example["tokens"]) > max_length
            for ids, example in zip(encoding["input_ids"], examples, strict=True)
        )
        return self._encode(examples, tokenizer, max_length) if short else encoding

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
            encoding = self._encode_cut(chunk, tokenizer, max_length)
            word_ids = [self._first_segment_word_ids(encoding, offset) for offset in range(len(chunk))]
            seen = [{word for word in ids if word is not None} for ids in word_ids]
            trailing = [  # the words after the last one with a token
                example["tokens"][max(words, default=-1) + 1 :]
                for example, words in zip(chunk, seen, strict=True)
            ]
            full = [len(ids) >= max_length for ids in word_ids]
            # a full row lost the trailing words that have tokens; the others (a final zero-width space) would
            # have produced none anyway
            cut_words = [
                word for words, cut_off in zip(trailing, full, strict=True) if cut_off for word in words
            ]
            with_tokens = words_with_tokens(cut_words, tokenizer)
            for offset, example in enumerate(chunk):
                cut = sum(word in with_tokens for word in trailing[offset]) if full[offset] else 0
                if cut:
                    report.truncated += 1
                    words_lost += cut
                last = max(seen[offset], default=-1)
                no_subtokens += last + 1 - len(seen[offset]) + len(trailing[offset]) - cut
                feature = {key: encoding[key][offset] for key in encoding}
                feature["labels"] = self._labels(example, word_ids[offset], label_ids)
                feature["word_ids"] = word_ids[offset]
                feature["example_index"] = start + offset
                features.append(feature)
        if report.truncated:
            report.notes.append(
                f"{self.name}: {report.truncated} sentences cut at max_length={max_length}, {words_lost} words "
                "lost (predicted O when scoring)"
            )
        if no_subtokens:
            report.notes.append(
                f"{self.name}: {no_subtokens} words produced no sub-token (predicted inside an entity when "
                "the words around them are, else O; an entity they open starts at the next word)"
            )
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
        covered = {word for word in word_ids if word is not None}
        for position, word in enumerate(word_ids):
            if word is None or (position > 0 and word_ids[position - 1] == word):
                labels.append(-100)
                continue
            tag = example["tags"][word]
            if tag not in label_ids:
                raise DataError(f"{self.name}: example {example['id']}: tag {tag!r} is not in the label set")
            if opened_by_lost_word(example["tags"], word, covered):
                tag = "B-" + split_tag(tag)[1]  # the model never sees the opener: this word opens the entity
            labels.append(label_ids[tag])
        return labels

    # predictions

    def predict_tags(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[list[str]]:
        """Per-word tags from token logits (T, C): argmax at each word's first sub-token. A word without a
        sub-token is bridged (``bridge_lost_words``); words cut by truncation are O."""
        predicted = [["O"] * len(example["tokens"]) for example in examples]
        covered: list[set[int]] = [set() for _ in examples]
        for feature, logits in zip(features, outputs, strict=True):
            best = np.asarray(logits).argmax(axis=-1)
            tags = predicted[feature["example_index"]]
            word_ids = feature["word_ids"]
            for position, word in enumerate(word_ids):
                if word is not None and (position == 0 or word_ids[position - 1] != word):
                    tags[word] = self.label_names[int(best[position])]
                    covered[feature["example_index"]].add(word)
        for tags, words in zip(predicted, covered, strict=True):
            bridge_lost_words(tags, words)
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


def words_with_tokens(words: list[str], tokenizer: Any) -> set[str]:
    """The distinct ``words`` that give a token on their own (``tokenizer.tokenize(word)`` is not empty), from
    one call that encodes them as one pre-split sequence (each word is tokenized apart there too): a Python
    call per word blocked a server for seconds on one request of many words."""
    distinct = list(dict.fromkeys(words))
    if not distinct:
        return set()
    encoding = tokenizer([distinct], is_split_into_words=True, add_special_tokens=False, verbose=False)
    return {distinct[word] for word in encoding.word_ids(0) if word is not None}


def opened_by_lost_word(tags: list[str], word: int, covered: set[int]) -> bool:
    """True when ``word`` is I-X and the B-X opening its entity is a word without sub-tokens (a zero-width
    space, a soft hyphen): trained as I-X, it would teach I-X straight after [CLS] or O."""
    prefix, entity_type = split_tag(tags[word])
    if prefix != "I":
        return False
    previous = word - 1
    while previous >= 0 and previous not in covered and tags[previous] == f"I-{entity_type}":
        previous -= 1
    return previous >= 0 and previous not in covered and tags[previous] == f"B-{entity_type}"


def bridge_lost_words(tags: list[str], covered: set[int]) -> None:
    """Tag each word without a prediction I-X when the predicted words around it are B-X/I-X and I-X, so
    "John <zero-width space> Smith" stays one entity; otherwise it keeps O (as do words cut by truncation).
    One pass over the predicted words: a run of k lost words (OCR'd text full of soft hyphens) is bridged as
    a whole, where a search for each one's right neighbour cost k^2 (14 s for 32,000 of them)."""
    before, previous = "O", -1  # the tag and index of the nearest predicted word to the left
    for index in sorted(covered):  # words after the last predicted one have no right neighbour
        after = tags[index]
        before_prefix, before_type = split_tag(before)
        if index > previous + 1 and before_prefix in ("B", "I") and after == f"I-{before_type}":
            tags[previous + 1 : index] = [after] * (index - previous - 1)
        before, previous = after, index


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


# task classes: the registry builds a fresh instance per request, with its options
TASKS: list[type[Task]] = [Conll2003Task, Conll2004Task, OntoNotesTask, GenericNerTask]
