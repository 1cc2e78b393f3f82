"""Reading task files, with errors that say which file, which line and what was expected.

Real data is messy (swapped columns, renamed headers, bool or string labels, stray bytes), so every
reader keeps the line (or record) each row came from, and columns are found by header name, never by
position. JSONL, CSV, TSV and TXT are parsed with the standard library because it can report line
numbers; Parquet goes through pyarrow (the Arrow backend of ``datasets``), and a hub dataset id goes
through ``datasets.load_dataset`` when the hub can be reached.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ptuning.tasks.base import DataError

TEXT_FORMATS = ("jsonl", "json", "csv", "tsv", "txt")
FORMATS = (*TEXT_FORMATS, "parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
_INTEGRAL_DECIMAL = re.compile(r"[+-]?\d+\.0+")  # "1.0", the way a spreadsheet writes the label 1
_TRUTHY = {"1", "true", "yes", "on"}
DEV_FILE_STEMS = ("dev", "valid", "validation", "val", "eval")  # names a held-out split's file goes by
# other names of the dev split, in --split and in a run's split names (every task kind takes the same)
SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev", "eval": "dev"}
# a TSV is read as GLUE writes it, so a file that csv.writer or pandas quoted needs this
TSV_QUOTING_HINT = (
    "TSV is read without quoting (GLUE style: a quote is a character); write it unquoted (pandas "
    "to_csv(sep='\\t', quoting=csv.QUOTE_NONE); csv.writer also quotechar=None) or as a .csv, read with quoting"
)


@dataclass
class Table:
    """Rows of one file, each with where it came from, so that later errors can point at a line."""

    source: str  # the file path (or hub id) named in every error
    columns: list[str]
    rows: list[dict[str, Any]]
    locations: list[str]  # "line 12" for text files, "record 3" for Parquet and hub data
    blank_lines: int = 0
    notes: list[str] = field(default_factory=list)

    def where(self, row_index: int) -> str:
        """'path, line N': the prefix of every error about one row."""
        return f"{self.source}, {self.locations[row_index]}"

    def find_column(self, aliases: Sequence[str], *, required: bool = True, what: str = "") -> str | None:
        """The first column named like one of ``aliases`` (case-insensitive), or a DataError.

        The error lists the columns found and the closest one to what was expected, so that a
        misspelled header ('sentense') is fixed in one step.
        """
        by_lower = {column.lower(): column for column in self.columns}
        for alias in aliases:
            if alias.lower() in by_lower:
                return by_lower[alias.lower()]
        if not required:
            return None
        wanted = " or ".join(repr(alias) for alias in aliases)
        closest = difflib.get_close_matches(aliases[0].lower(), list(by_lower), n=1, cutoff=0.6)
        for alias in aliases[1:]:
            closest = closest or difflib.get_close_matches(alias.lower(), list(by_lower), n=1, cutoff=0.6)
        hint = f"; did you mean {by_lower[closest[0]]!r}?" if closest else ""
        purpose = f" ({what})" if what else ""
        raise DataError(f"{self.source}: no column {wanted}{purpose}; columns found: {self.columns}{hint}")

    def value(self, row_index: int, column: str) -> Any:
        """The value of ``column`` in one row; a row (JSON line) lacking the field is an error."""
        row = self.rows[row_index]
        if column not in row:
            raise DataError(
                f"{self.where(row_index)}: field {column!r} is missing (fields on this line: {sorted(row)})"
            )
        return row[column]


def data_format(path: Path) -> str:
    """The file format from its extension ('.jsonl' -> 'jsonl'); unknown extensions are an error."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "ndjson":
        return "jsonl"
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unsupported file extension {path.suffix!r}; expected one of {list(FORMATS)}"
        )
    return suffix


def read_table(path: str | Path, *, headerless_columns: Sequence[str] | None = None) -> Table:
    """Read one local file into a Table.

    ``headerless_columns`` names the columns of a CSV/TSV that may come without a header row (GLUE's
    CoLA train/dev): it is used only when the first row holds none of those names and has exactly
    that many fields.
    """
    path = Path(path)
    check_file(path)
    fmt = data_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    text = decode_utf8(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty (expected {fmt.upper()} rows)")
    if fmt == "jsonl":
        table = parse_jsonl(path, text)
    elif fmt == "json":
        table = _read_json(path, text)
    elif fmt == "txt":
        table = parse_text_lines(path, text)
    else:
        table = _read_delimited(path, text, "\t" if fmt == "tsv" else ",", headerless_columns)
    if not table.rows:
        raise DataError(f"{path}: no rows after the header (columns: {table.columns})")
    return table


def split_file(data_dir: str | Path, file_name: str) -> Path:
    """The file that holds a split: ``data_dir`` itself when it is one file, else ``data_dir / file_name``.

    Data sets name their held-out file in several ways (CoNLL-2003 ``valid.txt``, SuperGLUE ``val.jsonl``, many
    CSV sets ``dev.csv``): when ``file_name`` starts with one of DEV_FILE_STEMS and is missing, a file with
    another of those stems and the same rest of the name is taken (``dev.txt`` -> ``valid.txt``). Otherwise the
    missing path is returned, and reading it gives the usual "file not found" error listing the folder.
    """
    source = Path(data_dir).expanduser()
    if source.is_file():
        return source
    path = source / file_name
    if path.exists():
        return path
    stem, dot, rest = path.name.partition(".")
    if stem.lower() in DEV_FILE_STEMS:
        for alias in DEV_FILE_STEMS:
            candidate = path.with_name(alias + dot + rest)
            if candidate.is_file():
                return candidate
    return path


def check_file(path: Path) -> None:
    """A missing file, or a folder where a file was expected, is an error that lists what is there."""
    if path.is_file():
        return
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a data file")
    parent = path.parent
    if parent.is_dir():
        present = sorted(entry.name for entry in parent.iterdir() if not entry.name.startswith("."))
        raise DataError(f"{path}: file not found; files in {parent}: {present}")
    raise DataError(f"{path}: file not found (the folder {parent} does not exist either)")


def decode_utf8(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 are an error naming the line and byte offset."""
    return decode_utf8_bytes(path.read_bytes(), path)


def decode_utf8_bytes(data: bytes, path: Path | str) -> str:
    """``data`` (read from ``path``, or ``<stdin>``) as text, checked as ``decode_utf8`` checks a file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        bad = data[error.start : error.end]
        raise DataError(
            f"{path}, line {line}: bytes {bad!r} at byte offset {error.start} "
            f"(column {error.start - line_start + 1})"
            " are not valid UTF-8; expected UTF-8 text (re-encode the file, e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return text.removeprefix("\ufeff")


def split_lines(text: str) -> list[str]:
    """The lines of ``text``, split at "\n" (a trailing "\r" dropped) and nowhere else.

    ``str.splitlines()`` also splits at U+2028, U+2029, U+0085, U+000B, U+000C and U+001C-U+001E, which may
    stand inside a JSON string or a sentence: one record would become two and every later line number and id
    would shift. A final newline does not make an extra (blank) line.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


class _RepeatedKey(ValueError):
    pass


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a key given twice is an error (JSON would keep the last value, losing the first)."""
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _RepeatedKey(key)
        record[key] = value
    return record


def load_json_document(path: Path | str, text: str) -> Any:
    """A whole JSON document (SQuAD's file), with a key given twice in one object refused as in JSON lines:
    ``json.loads`` would keep the last value and lose the first silently."""
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeats)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}, line {error.lineno} column {error.colno}: not valid JSON ({error.msg})"
        ) from None
    except _RepeatedKey as error:
        raise DataError(f"{path}: {_repeated(error)}") from None


def _repeated(error: _RepeatedKey) -> str:
    return (
        f"the key {error.args[0]!r} appears twice in one object (JSON keeps only the last, so the first value "
        "would be lost); give each field once"
    )


def _has_lone_surrogate(record: dict[str, Any]) -> bool:
    """Whether a parsed JSON value holds half of a surrogate pair (json accepts ``"\\ud800"`` alone), which no
    tokenizer can encode."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_jsonl(path: Path | str, text: str) -> Table:
    """One JSON object per non-blank line; blank lines are skipped and counted. ``path`` names the source."""
    rows: list[dict[str, Any]] = []
    locations: list[str] = []
    columns: dict[str, None] = {}
    blank = 0
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            blank += 1
            continue
        try:
            record = json.loads(line, object_pairs_hook=_object_without_repeats)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}, line {number}: invalid JSON ({error.msg} at column {error.colno}); "
                "expected one JSON object per line"
            ) from None
        except _RepeatedKey as error:
            raise DataError(f"{path}, line {number}: {_repeated(error)}") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}, line {number}: expected a JSON object per line, found {type(record).__name__}"
            )
        if "\\u" in line and _has_lone_surrogate(record):
            raise DataError(
                f"{path}, line {number}: a \\uD800-\\uDFFF escape without its pair is not a character; "
                "expected text (write the character itself, or both halves of its escape)"
            )
        columns.update(dict.fromkeys(record))
        rows.append(record)
        locations.append(f"line {number}")
    return Table(str(path), list(columns), rows, locations, blank_lines=blank)


def _read_json(path: Path, text: str) -> Table:
    """A JSON array of objects, an object with a 'data' list, or (despite the extension) JSON lines."""
    try:
        document = json.loads(text, object_pairs_hook=_object_without_repeats)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            return parse_jsonl(path, text)
        raise DataError(
            f"{path}, line {error.lineno}: invalid JSON ({error.msg} at column {error.colno})"
        ) from None
    except _RepeatedKey as error:  # as in JSON lines: the first value would be lost
        raise DataError(f"{path}: {_repeated(error)}") from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise DataError(f"{path}: expected a JSON array of objects, found {type(document).__name__}")
    columns: dict[str, None] = {}
    for number, record in enumerate(document):
        if not isinstance(record, dict):
            raise DataError(f"{path}, record {number}: expected a JSON object, found {type(record).__name__}")
        columns.update(dict.fromkeys(record))
    return Table(str(path), list(columns), document, [f"record {i}" for i in range(len(document))])


def parse_text_lines(path: Path | str, text: str, *, strip: bool = True) -> Table:
    """One text per line (inputs to predict on); blank lines are skipped and counted.

    ``strip=False`` keeps each line as written (less its line ending): a generative prompt's edge spaces
    are text the model reads, as they are in a JSONL prompt."""
    rows, locations, blank = [], [], 0
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            blank += 1
            continue
        rows.append({"text": line.strip() if strip else line})
        locations.append(f"line {number}")
    return Table(str(path), ["text"], rows, locations, blank_lines=blank)


def parse_delimited(path: Path | str, text: str, fmt: str) -> Table:
    """A CSV or TSV text (``fmt`` 'csv' or 'tsv') read as the tasks read their files: by header."""
    return _read_delimited(Path(path), text, "\t" if fmt == "tsv" else ",", None)


def _read_delimited(path: Path, text: str, delimiter: str, headerless_columns: Sequence[str] | None) -> Table:
    """CSV (quoted fields allowed) or TSV (GLUE style: no quoting, a quote is just a character)."""
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    records: list[tuple[int, list[str]]] = []
    last_line = 0
    ends: dict[int, int] = {}  # a record's first line -> its last (a quoted field may hold line breaks)
    try:
        for fields in reader:
            records.append((last_line + 1, fields))
            ends[last_line + 1] = last_line = reader.line_num
    except csv.Error as error:
        raise DataError(
            f"{path}, line {reader.line_num}: malformed {delimiter!r}-separated row ({error})"
        ) from None
    non_blank = [(line, fields) for line, fields in records if any(cell.strip() for cell in fields)]
    blank, records = len(records) - len(non_blank), non_blank
    if not records:
        raise DataError(f"{path}: only empty fields; expected a header row and rows")
    header_line, header = records[0]
    body = records[1:]
    notes: list[str] = []
    if headerless_columns and _looks_headerless(header, headerless_columns):
        header, body = list(headerless_columns), records
        notes.append(f"{path}: no header row; columns taken as {header}")
    header = [name.strip() for name in header]
    counts = Counter(name.lower() for name in header)
    repeated = sorted(name for name in header if counts[name.lower()] > 1)
    if repeated:
        raise DataError(
            f"{path}, line {header_line}: the header names {repeated} more than once (columns are found by "
            "name, case-insensitively, so one of them would be lost); give every column its own name"
        )
    rows, locations = [], []
    quoted_lines: list[int] = []  # TSV lines with a field as csv.writer / pandas quote it
    for line, fields in body:
        if len(fields) != len(header):
            spans = (
                f"; this row runs from line {line} to line {ends[line]} inside a quoted field: a quote that is "
                "never closed?"
                if ends[line] > line
                else ""
            )
            if delimiter == "\t" and any(cell.startswith('"') or cell.endswith('"') for cell in fields):
                spans += f"; {TSV_QUOTING_HINT}"
            raise DataError(
                f"{path}, line {line}: {len(fields)} fields, expected {len(header)} like the header "
                f"{header} (line {header_line}){spans}"
            )
        if delimiter == "\t":
            quoted_lines += [line for cell in fields if _looks_csv_quoted(cell)]
        rows.append(dict(zip(header, fields, strict=True)))
        locations.append(f"line {line}")
    if quoted_lines:
        notes.append(
            f'{path}: {len(quoted_lines)} fields look CSV-quoted ("...""..."), first on line {quoted_lines[0]}, '
            f"and are read with their quotes; {TSV_QUOTING_HINT}"
        )
    return Table(str(path), header, rows, locations, blank_lines=blank, notes=notes)


def _looks_csv_quoted(cell: str) -> bool:
    """A field as csv.writer / pandas write one holding a quote ("He said ""hi"" twice"): read without
    quoting, its outer and doubled quotes would reach the model."""
    return len(cell) >= 2 and cell[0] == cell[-1] == '"' and '""' in cell[1:-1]


def _looks_headerless(first_row: list[str], columns: Sequence[str]) -> bool:
    names = {column.lower() for column in columns}
    return len(first_row) == len(columns) and not any(cell.strip().lower() in names for cell in first_row)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as parquet

    try:
        rows = parquet.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    if not rows:
        raise DataError(f"{path}: the Parquet file has no rows")
    return Table(str(path), list(rows[0]), rows, [f"record {i}" for i in range(len(rows))])


# --- ids ----------------------------------------------------------------------------------------------

ID_FIELDS = ("idx", "id", "index")  # GLUE/SuperGLUE files say idx; users' own files id


def row_id(row: Mapping[str, Any], position: int) -> Any:
    """A row's own id (the first of ``ID_FIELDS`` it has, with its JSON type), else its position."""
    for key in ID_FIELDS:
        if key in row and row[key] not in (None, ""):
            return row[key]
    return position


# --- labels -------------------------------------------------------------------------------------------


def check_single_label(raw: Any, where: str, column: str) -> None:
    """Refuse a label that is a JSON list or object: a multi-label row's repr would become a class of its own
    (and the same labels in another order another class)."""
    if isinstance(raw, list | dict):
        raise DataError(
            f"{where}: field {column!r} should be one label (text, number or true/false), found a "
            f"{'list' if isinstance(raw, list) else 'JSON object'} {raw!r}; multi-label classification is "
            "not a task here"
        )


def label_key(raw: Any) -> str | None:
    """A raw label as a string key, the same whether a JSON value or CSV/TSV text: true / "true" -> 'True',
    1 / 1.0 / "1.0" -> '1', '' or None -> None (no label)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):  # pandas' (and NaN JSON's) missing value
        return None
    if isinstance(raw, str) and raw.strip().lower() == "nan":  # the same missing value, written as text
        return None
    if isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    key = str(raw).strip()
    if key.lower() in ("true", "false"):
        return key.capitalize()
    if _INTEGRAL_DECIMAL.fullmatch(key):
        return str(int(key.split(".")[0]))
    return key or None


def map_label(key: str, label_names: Sequence[str], label_map: Mapping[str, str], where: str) -> str:
    """The label name for a raw key; a label outside the known set is an error, never a new class."""
    if key in label_map:
        return label_map[key]
    if key in label_names:
        return key
    accepted = sorted(set(label_names) | set(label_map))
    raise DataError(
        f"{where}: label {key!r} is not one of the labels seen in training {list(label_names)} "
        f"(raw values accepted: {accepted}); pass an explicit label_map (e.g. {{{key!r}: "
        f"{label_names[0]!r}}}) to map it. A new class is never added silently."
    )


# --- local paths and hub ids --------------------------------------------------------------------------


def is_hub_id(source: str) -> bool:
    """True for something like 'glue' or 'org/name' that is not an existing local path."""
    if Path(source).expanduser().exists():
        return False
    return bool(_HUB_ID.match(source)) and Path(source).suffix.lower().lstrip(".") not in FORMATS


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE asks for no network."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint (HF_ENDPOINT or huggingface.co) opens quickly."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def load_hub_table(dataset_id: str, config: str | None, split: str, *, local_hint: str = "") -> Table:
    """A split of a hub dataset as a Table, failing fast with a way out when the hub cannot be used.

    Class-label columns are turned into their names, and -1 (the hub's 'no label') into None.
    """
    reason = ""
    if hub_offline():
        reason = "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
    elif not hub_reachable():
        reason = f"unreachable ({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')} did not answer)"
    if reason:
        raise DataError(
            f"{dataset_id!r} is not a local file or folder (looked for {Path(dataset_id).resolve()}), "
            f"so it was taken as a Hugging Face hub dataset id, but the hub is {reason}. "
            f"Point at local files instead: pass the folder that holds the split files{local_hint} "
            "(or one data file) as the data directory."
        )
    import datasets

    dataset = datasets.load_dataset(dataset_id, config, split=split)
    rows = dataset.to_list()
    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            for row in rows:
                value = row[column]
                row[column] = None if value is None or value < 0 else feature.int2str(value)
    source = f"{dataset_id}" + (f" ({config}, {split})" if config else f" ({split})")
    return Table(source, list(dataset.column_names), rows, [f"record {i}" for i in range(len(rows))])
