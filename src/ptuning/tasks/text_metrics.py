"""Metrics for generated text: ROUGE-1/2/L, BLEU-4 and exact match, as percentages (0..100).

ROUGE comes from Google's ``rouge-score`` (the reimplementation of ROUGE-1.5.5) and BLEU from
``sacrebleu``, so numbers compare with published ones. Both count words for space-separated languages
and characters for text written without spaces (Chinese, Japanese, Thai...), where splitting on spaces would see
one "word" per sentence; ``level="auto"`` picks by looking at the references.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

Level = Literal["word", "char", "auto"]
References = Sequence[str | Sequence[str]]  # one reference, or several, per prediction

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Scripts written without spaces between words: Han ideographs (with extension A and compatibility forms),
# kana, Thai, Lao, Myanmar and Khmer.
_UNSPACED = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)
UNSPACED_SHARE = 0.3  # 'auto' counts characters once this share of non-space characters is unspaced


class _WordTokenizer:
    """rouge-score tokenizer interface: lower-cased runs of letters, digits and combining marks in any script.

    On ASCII text these are rouge-score's own tokens (runs of ``[a-z0-9]``); its default tokenizer keeps only
    those, so Cyrillic, Greek, Hangul or Arabic text had no token at all (ROUGE 0 for a perfect answer) and
    "café" lost its last letter."""

    def tokenize(self, text: str) -> list[str]:
        kept = (
            char if char.isalnum() or unicodedata.category(char).startswith("M") else " " for char in text
        )
        return "".join(kept).lower().split()


class _CharacterTokenizer:
    """rouge-score tokenizer interface: every non-space character is a token (case kept)."""

    def tokenize(self, text: str) -> list[str]:
        return [char for char in text if not char.isspace()]


def is_unspaced_text(texts: Sequence[str]) -> bool:
    """True when the texts are mostly written without spaces between words (Chinese, Japanese)."""
    characters = sum(len(text) - text.count(" ") for text in texts)
    unspaced = sum(len(_UNSPACED.findall(text)) for text in texts)
    return characters > 0 and unspaced / characters >= UNSPACED_SHARE


def resolve_level(level: Level, references: References) -> Literal["word", "char"]:
    if level == "auto":
        return "char" if is_unspaced_text([r for refs in _as_lists(references) for r in refs]) else "word"
    if level not in ("word", "char"):
        raise ValueError(f"level must be 'word', 'char' or 'auto', got {level!r}")
    return level


def rouge(predictions: Sequence[str], references: References, level: Level = "auto") -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures; with several references, the best one per prediction.

    Word level counts lower-cased runs of letters and digits in any script (``_WordTokenizer``: on ASCII,
    rouge-score's own tokens; no stemming); character level counts every non-space character.
    """
    reference_lists = _checked(predictions, references)
    tokenizer = _CharacterTokenizer() if resolve_level(level, references) == "char" else _WordTokenizer()
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=tokenizer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, reference_lists, strict=True):
        scores = scorer.score_multi(refs, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(predictions) for name, total in totals.items()}


def bleu4(predictions: Sequence[str], references: References, level: Level = "auto") -> float:
    """Corpus BLEU-4 (sacrebleu defaults: brevity penalty, 'exp' smoothing, case kept).

    Word level tokenizes with sacrebleu's ``13a`` (the WMT standard); character level with ``char``.
    """
    reference_lists = _checked(predictions, references)
    tokenize = "char" if resolve_level(level, references) == "char" else "13a"
    # sacrebleu wants one stream per reference position; None fills in where a prediction has fewer
    width = max(len(refs) for refs in reference_lists)
    streams = [[refs[i] if i < len(refs) else None for refs in reference_lists] for i in range(width)]
    return float(sacrebleu.corpus_bleu(list(predictions), streams, tokenize=tokenize).score)


def squeeze_spaces(text: str) -> str:
    return " ".join(text.split())


def exact_match(
    predictions: Sequence[str], references: References, normalize: Callable[[str], str] = squeeze_spaces
) -> float:
    """Share of predictions equal to one of their references after ``normalize`` (default: spaces only)."""
    reference_lists = _checked(predictions, references)
    hits = [
        any(normalize(prediction) == normalize(ref) for ref in refs)
        for prediction, refs in zip(predictions, reference_lists, strict=True)
    ]
    return 100.0 * float(np.mean(hits))


def text_scores(
    predictions: Sequence[str], references: References, level: Level = "auto"
) -> dict[str, float]:
    """Every metric of this module in one dict: rouge1, rouge2, rougeL, bleu4, exact_match."""
    level = resolve_level(level, references)
    return {
        **rouge(predictions, references, level),
        "bleu4": bleu4(predictions, references, level),
        "exact_match": exact_match(predictions, references),
    }


def _as_lists(references: References) -> list[list[str]]:
    return [[refs] if isinstance(refs, str) else list(refs) for refs in references]


def _checked(predictions: Sequence[str], references: References) -> list[list[str]]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not one string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    reference_lists = _as_lists(references)
    for index, refs in enumerate(reference_lists):
        if not refs or not all(isinstance(ref, str) for ref in refs):
            raise ValueError(
                f"reference {index} must be a string or a non-empty list of strings, got {refs!r}"
            )
    return reference_lists
