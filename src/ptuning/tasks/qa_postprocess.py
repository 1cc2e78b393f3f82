"""After the QA head: from start/end logits over windows to one answer per question, and its SQuAD score.

A context longer than the model is cut into overlapping windows; the best span of an example is searched
over all of its windows at once, since the window that holds the answer is not known. The metrics are the
official SQuAD evaluation scripts (v1.1 and v2.0) rewritten as small pure functions; like them, they report
exact match and F1 as percentages (0..100).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# The official SQuAD answer normalization and scores live in ptuning.tasks.metrics (shared with ReCoRD).
from ptuning.tasks.metrics import exact_match, normalize_answer, token_f1  # noqa: F401 (re-exported)

Offsets = Sequence[tuple[int, int] | None]  # per token: (start_char, end_char) in the context, None elsewhere


def window_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: Offsets,
    *,
    n_best_size: int,
    max_answer_length: int,
) -> list[dict[str, Any]]:
    """Candidate spans of one window: pairs of the ``n_best_size`` best starts and ends that both lie in the
    context, with end >= start and at most ``max_answer_length`` tokens; score = start + end logit."""
    length = len(offsets)  # logits may be padded beyond the window's own tokens
    start_logits, end_logits = np.asarray(start_logits)[:length], np.asarray(end_logits)[:length]
    best_starts = np.argsort(start_logits)[::-1][:n_best_size]
    best_ends = np.argsort(end_logits)[::-1][:n_best_size]
    spans = []
    for start in best_starts:
        for end in best_ends:
            if (
                offsets[start] is None
                or offsets[end] is None
                or end < start
                or end - start + 1 > max_answer_length
            ):
                continue
            spans.append(
                {
                    "start_char": int(offsets[start][0]),
                    "end_char": int(offsets[end][1]),
                    "score": float(start_logits[start] + end_logits[end]),
                }
            )
    return spans


def without_outer_spaces(context: str, start: int, end: int) -> tuple[int, int]:
    """A character span less the whitespace at its ends: byte-level BPE offsets (SmolLM2's) cover the space
    before a word, so an answer read from them began with a space and its ``start_char`` was one too low."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return start, end


def postprocess_qa(
    examples: Sequence[Mapping[str, Any]],
    features: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """One prediction per example: ``{"id", "answer", "n_best", "null_score_diff"}``.

    ``n_best`` holds up to ``n_best_size`` distinct spans over all windows (text, character span, score,
    softmax probability among them). With ``allow_null`` (SQuAD 2.0) the null score is the lowest
    CLS start+end score over the example's windows, and the answer is "" when
    ``null_score - best_span_score > null_score_diff_threshold``, the rule of the BERT reference code.
    """
    windows_of: dict[int, list[int]] = defaultdict(list)
    for index, feature in enumerate(features):
        windows_of[feature["example_index"]].append(index)
    predictions = []
    for example_index, example in enumerate(examples):
        best: dict[tuple[int, int], float] = {}
        null_score = None
        for index in windows_of[example_index]:
            start_logits = np.asarray(outputs[index]["start_logits"])
            end_logits = np.asarray(outputs[index]["end_logits"])
            cls_index = features[index].get("cls_index", 0)
            window_null = float(start_logits[cls_index] + end_logits[cls_index])
            null_score = window_null if null_score is None else min(null_score, window_null)
            for span in window_spans(
                start_logits,
                end_logits,
                features[index]["offset_mapping"],
                n_best_size=n_best_size,
                max_answer_length=max_answer_length,
            ):
                key = without_outer_spaces(example["context"], span["start_char"], span["end_char"])
                best[key] = max(best.get(key, -np.inf), span["score"])
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:n_best_size]
        scores = np.array([score for _, score in ranked])
        probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum() if ranked else []
        n_best = [
            {
                "text": example["context"][start:end],
                "start_char": start,
                "end_char": end,
                "score": score,
                "probability": float(p),
            }
            for ((start, end), score), p in zip(ranked, probabilities, strict=True)
        ]
        answer = n_best[0]["text"] if n_best else ""
        null_score_diff = None
        if allow_null and null_score is not None:
            null_score_diff = null_score - n_best[0]["score"] if n_best else float("inf")
            if null_score_diff > null_score_diff_threshold:
                answer = ""
        predictions.append(
            {"id": example["id"], "answer": answer, "n_best": n_best, "null_score_diff": null_score_diff}
        )
    return predictions


# ------------------------------------------------------------------------------------- official metrics


def best_over_gold(metric: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    """A question's score is its best score against any of its gold answers."""
    return max(metric(prediction, gold) for gold in golds)


def squad_v1_scores(
    predictions: Mapping[str, str], gold_answers: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """SQuAD v1.1 ``exact_match`` and ``f1`` (0..100) over every question of ``gold_answers``; a question
    without a prediction scores 0, as in the official script."""
    if not gold_answers:
        return {"exact_match": 0.0, "f1": 0.0}
    exact = f1 = 0.0
    for question_id, golds in gold_answers.items():
        if question_id in predictions:
            exact += best_over_gold(exact_match, predictions[question_id], golds)
            f1 += best_over_gold(token_f1, predictions[question_id], golds)
    return {"exact_match": 100.0 * exact / len(gold_answers), "f1": 100.0 * f1 / len(gold_answers)}


def squad_v2_scores(
    predictions: Mapping[str, str], gold_answers: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """SQuAD v2.0 scores (0..100): ``exact_match``/``f1`` overall and on the ``HasAns``/``NoAns`` subsets,
    with their ``_total`` counts; an empty subset has only its ``_total`` (0), as the official script leaves
    it out (a 0.0 score read as a subset answered all wrong). An empty gold list marks an unanswerable question
    (gold = ""); a missing prediction counts as "" here, whereas the official script leaves the question out."""
    exact_of: dict[str, float] = {}
    f1_of: dict[str, float] = {}
    for question_id, golds in gold_answers.items():
        golds = [gold for gold in golds if normalize_answer(gold)] or [""]
        prediction = predictions.get(question_id, "")
        exact_of[question_id] = best_over_gold(exact_match, prediction, golds)
        f1_of[question_id] = best_over_gold(token_f1_v2, prediction, golds)
    answerable = [qid for qid, golds in gold_answers.items() if golds]  # the official has-answer test
    unanswerable = [qid for qid, golds in gold_answers.items() if not golds]
    scores: dict[str, float] = {}
    for prefix, ids in (("", list(gold_answers)), ("HasAns_", answerable), ("NoAns_", unanswerable)):
        if ids or not prefix:
            scores[f"{prefix}exact_match"] = 100.0 * sum(exact_of[i] for i in ids) / len(ids) if ids else 0.0
            scores[f"{prefix}f1"] = 100.0 * sum(f1_of[i] for i in ids) / len(ids) if ids else 0.0
        scores[f"{prefix}total"] = float(len(ids))
    return scores


def token_f1_v2(prediction: str, gold: str) -> float:
    """token_f1 with the v2.0 rule for empty answers."""
    return token_f1(prediction, gold, empty_matches_empty=True)
