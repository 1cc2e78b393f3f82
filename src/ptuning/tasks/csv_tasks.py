"""Generic classification from any CSV/TSV/JSONL with named columns: single texts or pairs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptuning.tasks.base import DataError, DataReport, Task
from ptuning.tasks.classification import ClassificationTask, Example
from ptuning.tasks.readers import Table, check_single_label, label_key, map_label


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
        label_names: list[Any] | None = None,
        label_map: Mapping[Any, Any] | None = None,
        splits: Mapping[str, str] | None = None,
    ):
        self.fields = {"text": as_aliases(text_field) or self.default_text_fields}
        pair = as_aliases(text_pair_field) or self.default_pair_fields
        if pair:
            self.fields["text_pair"] = pair
        self.label_columns = as_aliases(label_field)
        # as keys, like the labels read from the files: [0, 1] in a config means the labels '0' and '1'
        self.label_names = [label_key(name) or str(name) for name in label_names] if label_names else None
        super().__init__(label_map=label_map, splits=splits)

    def read(self, data_dir: str, split: str) -> tuple[list[Example], DataReport]:
        if self.label_names is None and not self.is_train_split(self.split_name(split)):
            if not Path(data_dir).expanduser().is_dir():
                raise DataError(
                    f"{self.name}: the label set is unknown; "
                    "read the train split first or pass label_names=[...]"
                )
            self.read(data_dir, self.train_split)  # learns the label set
        return super().read(data_dir, split)

    def examples_from_table(self, table: Table, split: str) -> tuple[list[Example], DataReport]:
        if self.label_names is None:
            column = table.find_column(self.label_columns, what="the label")
            for index, row in enumerate(table.rows):  # before a list's repr could become a class name
                check_single_label(row.get(column), table.where(index), column)
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


TASKS: list[type[Task]] = [CsvClassification, PairClassification]
