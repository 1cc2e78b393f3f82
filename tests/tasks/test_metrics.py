"""Metrics against hand-worked cases (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from ptuning.tasks import metrics


def test_accuracy_counts_equal_positions():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5  # positions 0 and 2 agree


def test_binary_f1_scores_the_positive_class_only():
    # TP = 2 (positions 0, 4), FP = 1 (position 1), FN = 1 (position 3): 2*2 / (2*2 + 1 + 1) = 2/3
    assert metrics.f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 / 3)


def test_binary_f1_without_any_positive_is_zero():
    assert metrics.f1_binary([0, 0], [0, 0]) == 0.0


def test_macro_f1_is_the_unweighted_mean_over_classes():
    # class 0: F1 1; class 1: P 1, R 1/2 -> 2/3; class 2: P 1/2, R 1 -> 2/3; mean = 7/9
    assert metrics.f1_macro([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(7 / 9)


def test_matthews_correlation():
    # TP 1, FP 1, TN 2, FN 0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2) = 2 / sqrt(12)
    assert metrics.matthews_correlation([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12))
    assert metrics.matthews_correlation([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)


def test_pearson_and_spearman_on_a_hand_case():
    # deviations (-1, 0, 1) and (-1, 1, 0): covariance 1, variances 2 and 2 -> r = 0.5 (ranks equal values)
    assert metrics.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert metrics.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_spearman_sees_only_order():
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3, 4], [1, 4, 9, 100]) < 0.9


def test_correlation_of_a_constant_is_nan():
    assert math.isnan(metrics.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(metrics.spearman([1, 2, 3], [2, 2, 2]))


def test_multirc_exact_match_per_question_and_f1a_over_answers():
    # question a: both answers right; question b: one wrong -> EM = 1/2
    # all answers: TP 2, FP 1, FN 0 -> F1a = 4 / 5
    scores = metrics.multirc_scores([1, 0, 1, 1], [1, 0, 1, 0], ["a", "a", "b", "b"])
    assert scores == {"exact_match": 0.5, "f1a": pytest.approx(0.8)}


def test_squad_normalization():
    assert metrics.normalize_answer("The  Cat's, hat!") == "cats hat"
    assert metrics.normalize_answer("An apple a day") == "apple day"


def test_token_f1_and_exact_match():
    # tokens (tower, of, london) vs (london, tower): overlap 2, P 2/3, R 1 -> F1 0.8
    assert metrics.token_f1("Tower of London", "London Tower") == pytest.approx(0.8)
    assert metrics.exact_match("the Eiffel Tower", "Eiffel tower.") == 1.0
    assert metrics.token_f1("Paris", "London") == 0.0


def test_record_takes_the_best_gold_answer_per_query():
    # query 1: exact match with the first gold; query 2: F1 0.8, EM 0 -> means 0.9 and 0.5
    scores = metrics.record_scores(
        ["the Eiffel Tower", "Tower of London"], [["Eiffel Tower", "Paris"], ["London Tower"]]
    )
    assert scores == {"exact_match": 0.5, "f1": pytest.approx(0.9)}


def test_record_finds_a_matching_gold_answer_that_is_not_listed_first():
    """Every gold answer counts, not just the first: 'Paris' matches the second gold exactly (EM 1, F1 1)
    and shares no token with the first ('London': EM 0, F1 0)."""
    assert metrics.record_scores(["Paris"], [["London", "Paris"]]) == {"exact_match": 1.0, "f1": 1.0}


def test_record_query_without_gold_is_an_error():
    with pytest.raises(ValueError, match="at least one gold"):
        metrics.record_scores(["x"], [[]])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        metrics.accuracy([1, 0], [1, 0, 1])


def test_nothing_to_score_is_an_error():
    with pytest.raises(ValueError, match="no predictions"):
        metrics.accuracy([], [])
