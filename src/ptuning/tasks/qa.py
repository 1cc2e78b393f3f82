"""Extractive QA on SQuAD 1.1 and 2.0: read the official JSON, cut contexts into windows, score answers.

Inputs are ``[CLS] question [SEP] context window [SEP]``; a context longer than the model is cut into
windows that overlap by ``doc_stride`` tokens. Each window is trained to point at the answer's first and
last tokens, or at CLS (index 0) when the answer is not wholly inside it. Post-processing and the official
metrics live in qa_postprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptuning.core.config import ConfigError
from ptuning.tasks.base import DataError, DataReport, Features, HeadKind, Task
from ptuning.tasks.classification import PAIR_SEPARATOR, joins_pairs_bare
from ptuning.tasks.qa_postprocess import (
    postprocess_qa,
    squad_v1_scores,
    squad_v2_scores,
    without_outer_spaces,
)
from ptuning.tasks.readers import SPLIT_ALIASES, check_file, decode_utf8, load_json_document, split_file

LOCAL_PART1 = "dev-v1.1.part1.json"  # the local first half of the official v1.1 dev set (24 articles)
TRAIN_ARTICLES = 18  # 'train-articles' = articles[:18] of a file, 'eval-articles' = the rest (6 of 24)
ARTICLE_SPLITS = {"train-articles": slice(0, TRAIN_ARTICLES), "eval-articles": slice(TRAIN_ARTICLES, None)}


def _load_json(path: Path) -> Any:
    check_file(path)
    return load_json_document(path, decode_utf8(path))


def _field(record: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``record[key]`` checked for type, or a DataError saying where and what was expected."""
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(record[key], kind) or isinstance(record[key], bool):  # true is an int in Python
        raise DataError(f"{where}: field {key!r} should be {kind}, got {type(record[key]).__name__}")
    return record[key]


def read_squad(
    path: str | Path, *, allow_impossible: bool, articles: slice | None = None
) -> tuple[list[dict[str, Any]], DataReport]:
    """Questions of a SQuAD JSON file, each checked against its context.

    Every ``answer_start`` must point at its ``text`` in the context. Without ``allow_impossible`` (v1.1)
    each question needs an answer; with it (v2.0) ``is_impossible`` questions must have none. ``articles``
    selects articles by position (their ``article_index`` stays the position in the file).
    """
    path = Path(path)
    data = _field(_load_json(path), "data", list, str(path))
    selected = range(len(data))[articles] if articles is not None else range(len(data))
    examples: list[dict[str, Any]] = []
    paragraphs = answers = impossible = 0
    seen: dict[str, str] = {}  # id -> where: predictions and scores are keyed by id
    for article_index in selected:
        article = data[article_index]
        title = _field(article, "title", str, f"{path}: article {article_index}")
        where_article = f"{path}: article {article_index} ({title!r})"
        for paragraph_index, paragraph in enumerate(_field(article, "paragraphs", list, where_article)):
            where_paragraph = f"{where_article}, paragraph {paragraph_index}"
            context = _field(paragraph, "context", str, where_paragraph)
            paragraphs += 1
            for question_index, qa in enumerate(_field(paragraph, "qas", list, where_paragraph)):
                where_question = f"{where_paragraph}, question {question_index}"
                question_id = str(_field(qa, "id", (str, int), where_question))
                where = f"{where_article}, question id {question_id}"
                if question_id in seen:
                    raise DataError(
                        f"{where_paragraph}, question {question_index}: id {question_id!r} is already the id of "
                        f"{seen[question_id]}; give every question its own id (answers are matched to questions "
                        "by id, so a repeat would score one question's answer against another's)"
                    )
                seen[question_id] = f"{where_paragraph}, question {question_index}"
                example = _example(qa, context, title, article_index, question_id, allow_impossible, where)
                answers += len(example["answers"]["text"])
                impossible += example["is_impossible"]
                examples.append(example)
    if not examples:
        raise DataError(f"{path}: no questions in the selected articles ({articles or 'all'})")
    note = (
        f"{path}: {len(selected)} articles, {paragraphs} paragraphs, {len(examples)} questions, "
        f"{answers} answers, {impossible} unanswerable"
    )
    # an unanswerable question is labelled (its answer is "none", what SQuAD 2.0 trains on), so it is
    # counted in the note, not as unlabelled, which would refuse SQuAD 2.0's train split
    return examples, DataReport(examples=len(examples), notes=[note])


def _example(
    qa: dict[str, Any],
    context: str,
    title: str,
    article_index: int,
    question_id: str,
    allow_impossible: bool,
    where: str,
) -> dict[str, Any]:
    question = _field(qa, "question", str, where)
    if not question.strip():  # nothing to answer: a span would be picked for no question (predict refuses it)
        raise DataError(f"{where}: empty question {question!r}; expected the question's text")
    is_impossible = qa.get("is_impossible", False)
    if not isinstance(is_impossible, bool):  # "false" (a string) would read as true
        raise DataError(f"{where}: field 'is_impossible' should be true or false, got {is_impossible!r}")
    texts, starts = [], []
    for answer in _field(qa, "answers", list, where):
        text = _field(answer, "text", str, where)
        start = _field(answer, "answer_start", int, where)
        if not text.strip():  # a blank answer gives its span an end before its start
            raise DataError(f"{where}: empty answer text {text!r} at answer_start {start}")
        if start < 0:  # a negative index would be sliced from the end of the context
            raise DataError(f"{where}: answer_start {start} is negative; expected a character offset")
        if context[start : start + len(text)] != text:
            found = context[start : start + len(text)]
            raise DataError(
                f"{where}: answer {text!r} does not match the context at answer_start {start} ({found!r})"
            )
        texts.append(text)
        starts.append(start)
    if is_impossible and not allow_impossible:
        raise DataError(f"{where}: unanswerable question (is_impossible); use the squad_v2 task")
    if is_impossible and texts:
        raise DataError(f"{where}: is_impossible is true but the question has answers")
    if not is_impossible and not texts:
        raise DataError(f"{where}: expected at least one answer (or is_impossible: true for SQuAD 2.0)")
    return {
        "id": question_id,
        "title": title,
        "article_index": article_index,
        "context": context,
        "question": question,
        "answers": {"text": texts, "answer_start": starts},
        "is_impossible": is_impossible,
    }


class QaTask(Task):
    """SQuAD-style extractive QA.

    Attributes (constructor arguments): ``doc_stride`` is the overlap in tokens between consecutive windows
    (the tokenizer's ``stride``, as in Hugging Face's run_qa); questions longer than ``max_question_length``
    tokens are cut; ``n_best_size``, ``max_answer_length`` and ``null_score_diff_threshold`` drive
    post-processing. Scores are percentages (0..100), like the official scripts.
    """

    head = HeadKind.QUESTION_ANSWERING
    label_names = None
    primary_metric = "f1"
    primary_scale = 100.0
    version_2 = False  # SQuAD 2.0: unanswerable questions, null answers
    # what one raw input holds (``ptuning predict`` JSONL, the server's inputs and its GET /tasks listing)
    fields: dict[str, tuple[str, ...]] = {"question": ("question",), "context": ("context",)}

    def __init__(
        self,
        *,
        doc_stride: int = 128,
        max_question_length: int = 64,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        splits: dict[str, str] | None = None,
    ) -> None:
        if doc_stride < 0 or max_question_length < 1 or n_best_size < 1 or max_answer_length < 1:
            raise ValueError(
                "expected doc_stride >= 0 and max_question_length, n_best_size, max_answer_length >= 1; got "
                f"{doc_stride}, {max_question_length}, {n_best_size}, {max_answer_length}"
            )
        self.doc_stride = doc_stride
        self.max_question_length = max_question_length
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.null_score_diff_threshold = null_score_diff_threshold
        self.splits = {**type(self).splits, **(splits or {})}

    def read(self, data_dir: str, split: str) -> tuple[list[dict[str, Any]], DataReport]:
        """A named split of ``data_dir`` (a folder, or one SQuAD JSON file read as that split), or a JSON file
        name inside the folder (all of its articles)."""
        split = SPLIT_ALIASES.get(split, split)
        if split in self.splits:
            path = split_file(data_dir, self.splits[split])
        elif (Path(data_dir) / split).is_file():
            path = Path(data_dir) / split
        else:
            raise DataError(
                f"{self.name}: unknown split {split!r}; expected one of {sorted(self.splits)} or a file"
            )
        articles = ARTICLE_SPLITS.get(split)
        if articles is not None:
            count = len(_field(_load_json(path), "data", list, str(path)))
            if count <= TRAIN_ARTICLES:
                raise DataError(
                    f"{path}: split {split!r} needs more than {TRAIN_ARTICLES} articles, found {count}"
                )
        examples, report = read_squad(path, allow_impossible=self.version_2, articles=articles)
        if articles is not None:
            report.notes.append(f"{split}: articles [{articles.start}:{articles.stop or ''}] of {path.name}")
        return examples, report

    # features

    def featurize(
        self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int
    ) -> tuple[Features, DataReport]:
        """Windows of ``question [SEP] context`` (a decoder's tokenizer, which puts nothing between a pair's
        texts, gets ``PAIR_SEPARATOR`` after the question); each keeps example_index, cls_index and the
        context-only offset_mapping (None outside the context) for post-processing."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{self.name} needs a fast tokenizer (offset mappings locate answers)")
        self.check_windows(tokenizer, max_length)
        if not examples:
            return [], DataReport()
        questions, cut = self._cut_questions([example["question"] for example in examples], tokenizer)
        features: Features = []
        report = DataReport(examples=len(examples))
        for first in range(0, len(examples), 256):
            chunk = range(first, min(first + 256, len(examples)))
            encoding = tokenizer(
                [questions[i] for i in chunk],
                [examples[i]["context"] for i in chunk],
                truncation="only_second",
                max_length=max_length,
                stride=self.doc_stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            for window in range(len(encoding["input_ids"])):
                example_index = first + encoding["overflow_to_sample_mapping"][window]
                features.append(
                    self._window(encoding, window, example_index, examples[example_index], tokenizer)
                )
        answered = {f["example_index"] for f in features if f["start_positions"] != f["cls_index"]}
        unanswerable = {
            i for i, example in enumerate(examples) if not example["is_impossible"] and i not in answered
        }
        # what lost text: a question cut short (the model never reads its end) or a gold answer no window holds
        report.truncated = len(unanswerable | cut)
        report.notes.append(f"{self.name}: {len(features)} windows for {len(examples)} questions")
        if unanswerable:
            report.notes.append(
                f"{self.name}: {len(unanswerable)} answers lie in no single window (labelled CLS)"
            )
        if cut:
            report.notes.append(f"{self.name}: {len(cut)} questions cut to {self.max_question_length} tokens")
        return features, report

    def check_windows(self, tokenizer: Any, max_length: int) -> None:
        """Refuse a ``doc_stride`` that does not fit the context room of a window (a ``ConfigError``: the CLI's
        one line and exit 2, the server's 422). The room is what the longest question allowed leaves:
        ``max_question_length`` (plus a decoder's separator) and the special tokens, so the options decide it
        once; measured on each batch's longest question, a dev set or a request with a long question refused
        what training had passed."""
        question = self._question_bound(tokenizer)[1]
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        room = max_length - question - specials
        if self.doc_stride >= room:
            separator = question - self.max_question_length
            spent = f"max_question_length={self.max_question_length}" + (
                f" - {separator} separator tokens" if separator else ""
            )
            raise ConfigError(
                f"doc_stride={self.doc_stride} must be smaller than the context room of a window, {room} tokens "
                f"(max_length={max_length} - {spent} - {specials} special tokens); raise --max-length (SQuAD's "
                "presets use 384) or lower doc_stride or max_question_length"
            )

    def _question_bound(self, tokenizer: Any) -> tuple[str, int]:
        """The separator a question ends with and the most tokens a question has with it. A decoder's tokenizer
        glues a pair ("...Chicago?The University"): its questions end with ``PAIR_SEPARATOR`` (the context's
        offsets stay); the others put their own special token between the texts."""
        if not joins_pairs_bare(tokenizer):
            return "", self.max_question_length
        separator = len(tokenizer(PAIR_SEPARATOR, add_special_tokens=False)["input_ids"])
        return PAIR_SEPARATOR, self.max_question_length + separator

    def _cut_questions(self, questions: list[str], tokenizer: Any) -> tuple[list[str], set[int]]:
        """Questions with their separator (``_question_bound``), cut at a token boundary to at most the bound's
        tokens, which ``check_windows`` counts on; also which were cut."""
        separator, bound = self._question_bound(tokenizer)
        result = [question + separator for question in questions]
        encoding = tokenizer(result, add_special_tokens=False, return_offsets_mapping=True)
        cut: set[int] = set()
        for index, offsets in enumerate(encoding["offset_mapping"]):
            length, keep = len(offsets), self.max_question_length
            while (
                length > bound
            ):  # re-tokenising a cut word may take more tokens than before; then cut earlier
                kept = questions[index][: offsets[keep - 1][1]] if keep > 0 else ""
                result[index] = kept + separator
                length = len(tokenizer(result[index], add_special_tokens=False)["input_ids"])
                keep -= 1
            if result[index] != questions[index] + separator:
                cut.add(index)
        return result, cut

    def _window(
        self, encoding: Any, window: int, example_index: int, example: dict[str, Any], tokenizer: Any
    ) -> dict[str, Any]:
        input_ids = encoding["input_ids"][window]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        offsets = [
            tuple(offset) if segment == 1 else None
            for offset, segment in zip(
                encoding["offset_mapping"][window], encoding.sequence_ids(window), strict=True
            )
        ]
        start = end = cls_index
        if not example["is_impossible"]:
            start_char = example["answers"]["answer_start"][0]
            end_char = start_char + len(example["answers"]["text"][0])
            # token offsets never cover the answer's outer whitespace ("Denver " at the context's end)
            start_char, end_char = without_outer_spaces(example["context"], start_char, end_char)
            start, end = _token_span(offsets, start_char, end_char, cls_index)
        feature = {
            key: encoding[key][window]
            for key in ("input_ids", "attention_mask", "token_type_ids")
            if key in encoding
        }
        feature.update(
            start_positions=start,
            end_positions=end,
            example_index=example_index,
            cls_index=cls_index,
            offset_mapping=offsets,
        )
        return feature

    # predictions

    def predict(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[dict[str, Any]]:
        return postprocess_qa(
            examples,
            features,
            outputs,
            n_best_size=self.n_best_size,
            max_answer_length=self.max_answer_length,
            allow_null=self.version_2,
            null_score_diff_threshold=self.null_score_diff_threshold,
        )

    def score(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> dict[str, float]:
        """Official SQuAD exact_match and f1 in percent (v2.0 adds HasAns_/NoAns_ subsets)."""
        predictions = {p["id"]: p["answer"] for p in self.predict(examples, features, outputs)}
        gold = {example["id"]: example["answers"]["text"] for example in examples}
        return squad_v2_scores(predictions, gold) if self.version_2 else squad_v1_scores(predictions, gold)

    def decode(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[dict[str, Any]]:
        """Per question: id, question, answer text and the n-best spans (v2.0: also null_score_diff)."""
        results = self.predict(examples, features, outputs)
        for result, example in zip(results, examples, strict=True):
            result["question"] = example["question"]
        return results


def _token_span(
    offsets: list[tuple[int, int] | None], start_char: int, end_char: int, cls_index: int
) -> tuple[int, int]:
    """The first and last context tokens overlapping [start_char, end_char), or CLS twice when the window
    does not hold the whole answer."""
    context = [i for i, offset in enumerate(offsets) if offset is not None]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return cls_index, cls_index
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end


class SquadTask(QaTask):
    """SQuAD 1.1. On the local first half of the dev set (24 articles), ``train-articles`` are articles
    0-17 and ``eval-articles`` articles 18-23 (split by article so no paragraph is in both); ``all`` is
    the whole file."""

    name = "squad"
    description = "SQuAD 1.1; local part-1 file: train-articles = first 18 articles, eval-articles = last 6"
    splits = {
        "train": "train-v1.1.json",
        "dev": "dev-v1.1.json",
        "all": LOCAL_PART1,
        "train-articles": LOCAL_PART1,
        "eval-articles": LOCAL_PART1,
    }


class SquadV2Task(QaTask):
    """SQuAD 2.0: unanswerable questions (``is_impossible``, no answers) are labelled CLS in every window
    and predicted as "" when the null score beats the best span by more than the threshold."""

    name = "squad_v2"
    description = "SQuAD 2.0 with unanswerable questions; scores include HasAns_/NoAns_ subsets"
    version_2 = True
    splits = {"train": "train-v2.0.json", "dev": "dev-v2.0.json"}


# task classes: the registry builds a fresh instance per request, with its options
TASKS: list[type[Task]] = [SquadTask, SquadV2Task]
