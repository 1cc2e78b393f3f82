"""Metrics as small pure functions: each docstring says exactly what is counted.

Inputs are plain sequences (predictions first, references second, as in scikit-learn); every function
returns a float in the metric's natural range (0..1 for accuracy/F1/EM, -1..1 for MCC and correlations).
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

_PUNCTUATION = set(string.punctuation)


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of positions where the prediction equals the reference."""
    _check_lengths(predictions, references)
    return float(np.mean([p == r for p, r in zip(predictions, references, strict=True)]))


def f1_binary(predictions: Sequence, references: Sequence, positive: Hashable = 1) -> float:
    """F1 of the ``positive`` class only: 2·TP / (2·TP + FP + FN); 0.0 when there is no positive at all."""
    from sklearn.metrics import f1_score

    _check_lengths(predictions, references)
    return float(f1_score(references, predictions, pos_label=positive, average="binary", zero_division=0.0))


def f1_macro(predictions: Sequence, references: Sequence) -> float:
    """Unweighted mean of per-class F1 over the classes present in references or predictions (CB)."""
    from sklearn.metrics import f1_score

    _check_lengths(predictions, references)
    return float(f1_score(references, predictions, average="macro", zero_division=0.0))


def matthews_correlation(predictions: Sequence, references: Sequence) -> float:
    """Matthews correlation coefficient (CoLA): 1 perfect, 0 chance, -1 inverted; 0.0 if undefined."""
    from sklearn.metrics import matthews_corrcoef

    _check_lengths(predictions, references)
    return float(matthews_corrcoef(references, predictions))


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson linear correlation (STS-B); NaN when either side is constant."""
    from scipy.stats import pearsonr

    _check_lengths(predictions, references)
    if np.std(predictions) == 0 or np.std(references) == 0:
        return float("nan")
    return float(pearsonr(predictions, references)[0])


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman rank correlation (STS-B): Pearson over ranks, ties get their mean rank."""
    from scipy.stats import spearmanr

    _check_lengths(predictions, references)
    if np.std(predictions) == 0 or np.std(references) == 0:
        return float("nan")
    return float(spearmanr(predictions, references)[0])


def multirc_scores(
    predictions: Sequence[int], references: Sequence[int], question_ids: Sequence[Hashable]
) -> dict[str, float]:
    """SuperGLUE MultiRC: each position is one answer option, labelled 1 (true) or 0 (false).

    ``exact_match``: fraction of questions whose answer options are all predicted right.
    ``f1a``: binary F1 of class 1 over all answer options of all questions pooled together.
    """
    _check_lengths(predictions, references)
    _check_lengths(predictions, question_ids)
    all_right: dict[Hashable, bool] = defaultdict(lambda: True)
    for prediction, reference, question in zip(predictions, references, question_ids, strict=True):
        all_right[question] = all_right[question] and prediction == reference
    return {
        "exact_match": float(np.mean(list(all_right.values()))),
        "f1a": f1_binary(predictions, references, positive=1),
    }


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, drop punctuation and the articles a/an/the, squeeze spaces."""
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str, *, empty_matches_empty: bool = False) -> float:
    """Harmonic mean of precision and recall over the bag of normalized tokens shared by a predicted and
    a gold answer (SQuAD). When either side normalizes to no tokens, v1.1 scores 0; v2.0
    (``empty_matches_empty``) scores 1.0 if both are empty, which is how an abstention on an unanswerable
    question earns its point."""
    predicted_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if empty_matches_empty and (not predicted_tokens or not gold_tokens):
        return float(predicted_tokens == gold_tokens)
    common = Counter(predicted_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the two answers are equal after SQuAD normalization, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def record_scores(predictions: Sequence[str], gold_answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """SuperGLUE ReCoRD: per query, the best token F1 / exact match of the predicted entity against
    any of its gold answers (SQuAD normalization), averaged over queries. A query without gold answers
    is an error, not a free zero."""
    _check_lengths(predictions, gold_answers)
    if any(not golds for golds in gold_answers):
        raise ValueError("record_scores: every query needs at least one gold answer")
    f1 = [max(token_f1(p, g) for g in golds) for p, golds in zip(predictions, gold_answers, strict=True)]
    em = [max(exact_match(p, g) for g in golds) for p, golds in zip(predictions, gold_answers, strict=True)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("no predictions to score")
