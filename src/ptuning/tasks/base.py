"""The contract between a task and the rest of ptuning.

A task turns files into model features and model outputs into an official score. The model side only
needs to know the head kind and the label names; everything task-specific stays behind this boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ptuning.core.kinds import HeadKind

__all__ = ["DataError", "DataReport", "Features", "HeadKind", "MetricFn", "Task"]


@dataclass
class DataReport:
    """Counts of what happened to the data, so nothing is dropped or cut silently."""

    examples: int = 0
    skipped: int = 0
    unlabelled: int = 0
    truncated: int = 0
    notes: list[str] = field(default_factory=list)
    # generative tasks: prompts that decoding reads cut (``truncated`` counts the training inputs, whose gold
    # response also takes room); None for the other tasks
    cut_for_generation: int | None = None

    def merge(self, other: DataReport) -> DataReport:
        generation = (self.cut_for_generation, other.cut_for_generation)
        return DataReport(
            self.examples + other.examples,
            self.skipped + other.skipped,
            self.unlabelled + other.unlabelled,
            self.truncated + other.truncated,
            self.notes + other.notes,
            None if generation == (None, None) else sum(count or 0 for count in generation),
        )

    @property
    def truncated_when_scored(self) -> int:
        """Inputs cut as a split is scored: what decoding read cut for a generative task, else ``truncated``."""
        return self.truncated if self.cut_for_generation is None else self.cut_for_generation


class DataError(ValueError):
    """Bad input data. The message names the file, the line or record, and what was expected."""


MetricFn = Callable[[Iterable[Any], Iterable[Any]], dict[str, float]]


Features = list[dict[str, Any]]
"""Model-ready, unpadded features: one dict per model input (a QA window, a sentence, a COPA item).
Keys the core understands: input_ids, attention_mask, token_type_ids, labels, start_positions,
end_positions. Anything else (example_index, word_ids, offset_mapping...) is kept for decoding and dropped
by the collator."""


class Task:
    """A named task: how to read its files, build features, score and decode predictions.

    Subclasses set the class attributes and implement the four methods. ``outputs`` passed to
    ``score``/``decode`` hold the raw head outputs, one numpy array per feature, in feature order:
    classification/multiple-choice logits (C,), regression a scalar array, token logits (T, C), and for QA
    a dict {"start_logits": (T,), "end_logits": (T,)}.
    """

    name: str
    head: HeadKind
    label_names: list[str] | None = None  # None for regression, QA and causal LM
    primary_metric: str  # the metric that selects the best checkpoint, e.g. "accuracy", "f1"
    primary_scale: float = 1.0  # 100.0 where scores are percentages: tasks' scores are compared as fractions
    splits: dict[str, str] = {}  # split name -> default file name inside the data directory
    description: str = ""
    # the split a run trains on (``--train-split``; the engine sets it): its rows must be labelled, and a task
    # that learns its label set from its data learns it there
    train_split: str = "train"
    # what ``group_key`` groups, as notes name it ("questions"); empty where every example stands alone
    group_name: str = ""

    def group_key(self, example: dict[str, Any]) -> Hashable | None:
        """The group ``example`` belongs to, or None when it stands alone. Examples of one group are scored
        together (MultiRC: a question's answer options), so a sample limit or a held-out dev share takes
        whole groups: cutting one would change its score, and splitting one between train and dev leaks labels."""
        return None

    def is_train_split(self, split: str) -> bool:
        """Whether ``split`` is read as training data ("train", "train-from-val"..., or the run's own)."""
        return split == self.train_split or split.startswith("train")

    def read(self, data_dir: str, split: str) -> tuple[list[dict[str, Any]], DataReport]:
        raise NotImplementedError

    def featurize(
        self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int
    ) -> tuple[Features, DataReport]:
        raise NotImplementedError

    def score(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> dict[str, float]:
        raise NotImplementedError

    def decode(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[dict[str, Any]]:
        """One JSON-ready prediction per example (label + probabilities, entity spans, answer span...)."""
        raise NotImplementedError
