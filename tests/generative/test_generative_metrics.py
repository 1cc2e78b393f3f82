"""Text metrics against values worked out by hand (n-gram counts written next to each case)."""

from __future__ import annotations

import math

import pytest
from rouge_score import tokenize

from ptuning.tasks.text_metrics import (
    _WordTokenizer,
    bleu4,
    exact_match,
    is_unspaced_text,
    resolve_level,
    rouge,
    text_scores,
)


def test_rouge_word_level_by_hand() -> None:
    # prediction: the cat sat (3 words); reference: the cat sat on the mat (6 words)
    # ROUGE-1: overlap 3 -> P 1, R 1/2, F 2/3.  ROUGE-2: 2 of the reference's 5 bigrams -> P 1, R 2/5, F 4/7.
    # ROUGE-L: LCS 3 -> F 2/3.
    scores = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(100 * 2 / 3)
    assert scores["rouge2"] == pytest.approx(100 * 4 / 7)
    assert scores["rougeL"] == pytest.approx(100 * 2 / 3)


def test_rouge_lowercases_and_ignores_punctuation_at_word_level() -> None:
    assert rouge(["The Cat!"], ["the cat"])["rouge1"] == pytest.approx(100.0)


def test_rouge_counts_words_of_every_script_and_matches_rouge_score_on_ascii() -> None:
    """rouge-score's default tokenizer keeps runs of [a-z0-9] only: Russian, Korean or Greek had no words."""
    for text in ("Москва столица России", "서울은 한국의 수도", "η Αθήνα είναι πρωτεύουσα", "मेरा नाम राम है"):
        assert rouge([text], [text]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    # one word of three wrong: ROUGE-1 2/3 with P = R
    assert rouge(["Москва столица Франции"], ["Москва столица России"])["rouge1"] == pytest.approx(
        100 * 2 / 3
    )
    assert rouge(["caf"], ["café"])["rouge1"] == 0.0  # "café" is one word, not "caf" (rouge-score's)
    ascii_text = "Don't stop: the 2nd run_of 3 cats, e.g. x-ray!"
    assert _WordTokenizer().tokenize(ascii_text) == tokenize.tokenize(ascii_text, None)
    assert is_unspaced_text(["ภาษาไทยเขียนติดกัน"])  # Thai: no spaces between words, so characters count


def test_rouge_character_level_for_chinese_by_hand() -> None:
    # 今天天气好 (5 chars) vs 今天天气很好 (6): unigram overlap 5 -> F 10/11; bigrams 3 of (4, 5) -> F 2/3;
    # LCS 5 -> F 10/11.
    scores = rouge(["今天天气好"], ["今天天气很好"])
    assert scores["rouge1"] == pytest.approx(100 * 10 / 11)
    assert scores["rouge2"] == pytest.approx(100 * 2 / 3)
    assert scores["rougeL"] == pytest.approx(100 * 10 / 11)


def test_rouge_takes_the_best_reference_and_averages_over_predictions() -> None:
    scores = rouge(["a b", "c d"], [["x y", "a b"], "c e"])
    assert scores["rouge1"] == pytest.approx((100 + 50) / 2)


def test_bleu4_by_hand() -> None:
    # a b c d e vs a b c d f: n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (no brevity penalty)
    assert bleu4(["a b c d e"], ["a b c d f"]) == pytest.approx(100 * (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25)


def test_bleu4_brevity_penalty_by_hand() -> None:
    # every n-gram right, 4 words against 6: BP = exp(1 - 6/4)
    assert bleu4(["a b c d"], ["a b c d e f"]) == pytest.approx(100 * math.exp(-0.5))


def test_bleu4_character_level_for_chinese_by_hand() -> None:
    # precisions 5/5, 3/4, 2/3, 1/2; 5 chars against 6: BP = exp(1 - 6/5)
    expected = 100 * (1 * 0.75 * (2 / 3) * 0.5) ** 0.25 * math.exp(-0.2)
    assert bleu4(["今天天气好"], ["今天天气很好"]) == pytest.approx(expected)


def test_bleu4_with_a_varying_number_of_references() -> None:
    assert bleu4(["a b c d", "e f g h"], [["x", "a b c d"], ["e f g h"]]) == pytest.approx(100.0)


def test_exact_match_squeezes_spaces_and_accepts_any_reference() -> None:
    assert exact_match([" Paris ", "a  b", "Rome"], [["London", "Paris"], "a b", "rome"]) == pytest.approx(
        100 * 2 / 3
    )


def test_level_detection_counts_han_and_kana_characters() -> None:
    assert is_unspaced_text(["今天天气很好"]) and is_unspaced_text(["これはペンです"])
    assert not is_unspaced_text(["the weather is nice today"])
    assert resolve_level("auto", [["今天 ok"]]) == "char"
    assert resolve_level("word", ["今天"]) == "word"
    with pytest.raises(ValueError, match="level must be"):
        resolve_level("byte", ["x"])


def test_text_scores_has_every_metric() -> None:
    scores = text_scores(["the cat sat"], ["the cat sat"])
    assert scores == pytest.approx(
        {"rouge1": 100, "rouge2": 100, "rougeL": 100, "bleu4": 0.0, "exact_match": 100}
    )


@pytest.mark.parametrize(
    ("predictions", "references", "error"),
    [
        (["a"], [], ValueError),
        ([], [], ValueError),
        ("a", ["a"], TypeError),
        (["a"], [[]], ValueError),
    ],
)
def test_bad_metric_inputs_are_refused(predictions, references, error) -> None:
    with pytest.raises(error):
        rouge(predictions, references)
