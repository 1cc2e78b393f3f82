"""Reading tagged sentences from files: CoNLL column files, CoNLL04 (Gupta TSV), the P-tuning v2 SRL
line format; every sentence keeps the file line of each token, and tags are rewritten as IOB2."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptuning.tasks.base import DataError
from ptuning.tasks.readers import check_file, decode_utf8, split_lines
from ptuning.tasks.tag_schemes import Scheme, TagError, detect_scheme, split_tag, to_iob2


@dataclass
class Sentence:
    """One labelled sentence as read, with the file line of each token for error messages."""

    tokens: list[str]
    tags: list[str]
    lines: list[int]
    doc_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_lines(path: Path) -> list[str]:
    """The file's lines, or a DataError for a missing or empty file."""
    check_file(path)
    lines = split_lines(decode_utf8(path))  # "\n" only: U+2028 inside a token must not split its line
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
    fixed_by = ""  # why num_columns is what it is, for the error that names a line breaking it
    if num_columns is not None:
        fixed_by = f" '{layout}'"
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
            fixed_by = f" (line {number}, the first word line, fixed the column count at {num_columns})"
        if len(columns) != num_columns:
            raise DataError(
                f"{path}, line {number}: expected {num_columns} columns{fixed_by}, got {len(columns)}: {line!r}"
            )
        if not all(-num_columns <= column < num_columns for column in (token_column, tag_column)):
            raise DataError(
                f"{path}, line {number}: token_column {token_column} / tag_column {tag_column} (from 0; negative "
                f"from the end) name a column this file's {num_columns} columns do not have"
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
