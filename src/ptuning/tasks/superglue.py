"""SuperGLUE tasks (the P-tuning v2 reference's tasks/superglue): BoolQ, CB, RTE, WiC, WSC, COPA,
MultiRC and ReCoRD, read from the SuperGLUE JSONL files."""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import numpy as np

from ptuning.tasks import metrics
from ptuning.tasks.base import DataError, DataReport, Features, Task
from ptuning.tasks.classification import (
    ClassificationTask,
    Example,
    MultipleChoiceTask,
    TextPair,
    softmax,
)
from ptuning.tasks.readers import Table, label_key

SUPERGLUE_HUB = "aps/super_glue"

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
        """span2_index is an integer: a JSON number, or its text from a CSV/TSV cell ("47", "47.0")."""
        if name == "span2_index":
            key = None if isinstance(value, bool) else label_key(value)
            if key is None or not re.fullmatch(r"\d+", key):
                raise DataError(
                    f"{where}: span2_index should be an integer word index (the pronoun's), found {value!r}"
                )
            return int(key)
        return super().check_field(name, value, where)

    def render(self, example: Example) -> list[TextPair]:
        return [(self.marked_text(example)[0], example["span1_text"])]

    def marked_text(self, example: Example) -> tuple[str, str]:
        """The text with the pronoun wrapped in '*', and the marked pronoun itself ('*he*')."""
        words = example["text"].split()
        index = example["span2_index"]
        if not 0 <= index < len(words) and not span_starts(words, example["span2_text"]):
            raise DataError(  # pinning it to the first or last word would mark a word that is not the pronoun
                f"{example['source']}: span2_text {example['span2_text']!r} is not in the text and span2_index "
                f"{index} is outside its {len(words)} words; expected the pronoun's word index"
            )
        start = locate_span(words, example["span2_text"], index)
        stop = start + max(len(example["span2_text"].split()), 1)
        marker = "*" + " ".join(words[start:stop]) + "*"
        return " ".join([*words[:start], marker, *words[stop:]]), marker

    def featurize(
        self, examples: list[Example], tokenizer: Any, max_length: int
    ) -> tuple[Features, DataReport]:
        """As any pair task, and a note counting the inputs whose cut took the marked pronoun: the model is then
        asked about a pronoun it cannot see, which the count of truncated inputs does not tell."""
        features, report = super().featurize(examples, tokenizer, max_length)
        lost = sum(
            not keeps_marker(tokenizer, feature["input_ids"], self.marked_text(example)[1])
            for example, feature in zip(examples, features, strict=True)
            if len(feature["input_ids"]) >= max_length  # only a cut input can have lost it
        )
        if lost:
            report.notes.append(
                f"{self.name}: {lost} of {len(examples)} examples lost the marked pronoun to "
                f"max_length={max_length}; raise --max-length"
            )
        return features, report


def keeps_marker(tokenizer: Any, input_ids: list[int], marker: str) -> bool:
    """Whether the decoded input still holds ``marker`` ('*he*'), ignoring spaces and case (a WordPiece
    tokenizer decodes it '* he *', an uncased one lower-cases it)."""

    def squeezed(text: str) -> str:
        return "".join(text.lower().split())

    return squeezed(marker) in squeezed(tokenizer.decode(input_ids, skip_special_tokens=True))


def locate_span(words: list[str], span_text: str, index: int) -> int:
    """Where ``span_text`` starts among ``words``: at ``index`` if it matches there (ignoring case and
    punctuation), else the nearest match (WSC has a few off-by-n indices), else ``index`` itself."""

    starts = span_starts(words, span_text)
    if not starts:
        return min(max(index, 0), max(len(words) - 1, 0))
    return min(starts, key=lambda i: abs(i - index))


def span_starts(words: list[str], span_text: str) -> list[int]:
    """Every word index where ``span_text`` starts, ignoring case and punctuation."""

    def plain(text: str) -> str:
        return "".join(char for char in text.lower() if char.isalnum() or char == " ")

    target = plain(span_text)
    width = max(len(span_text.split()), 1)
    return [i for i in range(len(words) - width + 1) if plain(" ".join(words[i : i + width])) == target]


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
    group_name = "questions"

    def group_key(self, example: Example) -> Hashable | None:
        """A question's answer options stay together: its exact match scores them as one."""
        return example.get("question_id")

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
                answers = question.get("answers", []) if isinstance(question, dict) else None
                if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
                    raise DataError(
                        f"{table.where(row_index)}, question {q_pos}: expected {{question, answers: "
                        f"[{{text, label}}]}}, found {question!r:.80}"
                    )
                for a_pos, answer in enumerate(answers):
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
        """Each answer option with its ``question_id``, which scoring groups by; an unlabelled option (a test
        file, ``ptuning predict``'s input) is not scored and may go without one."""
        examples, report = super().examples_from_table(table, split)
        for example, row in zip(examples, table.rows, strict=True):
            index = row.get("idx")
            if "question_id" in row:
                example["question_id"] = row["question_id"]
            elif isinstance(index, dict):  # the hub's flat layout: idx = {paragraph, question, answer}
                example["question_id"] = f"{index.get('paragraph')}-{index.get('question')}"
            elif example["label"] is None:
                example["question_id"] = None
            else:
                raise DataError(
                    f"{example['source']}: cannot tell which question this answer belongs to; a labelled flat "
                    "row needs 'question_id' or 'idx' as {paragraph, question, answer} (the hub's layout), or "
                    "give SuperGLUE's nested records (passage.questions[].answers[])"
                )
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
            if self.is_train_split(split):
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


TASKS: list[type[Task]] = [BoolQ, Cb, SuperGlueRte, Wic, Wsc, Copa, MultiRc, Record]
