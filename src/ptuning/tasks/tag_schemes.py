"""Tag schemes and entity-level scoring for sequence labelling.

Every reader normalises its tags to IOB2 (an entity starts with ``B-``, continues with ``I-``) as soon as it
reads them, so label sets, features and metrics only ever see one scheme. Scoring delegates to seqeval, the
library whose default mode reproduces CoNLL's ``conlleval`` script.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from enum import StrEnum

from seqeval.metrics import accuracy_score, classification_report
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Entities


class Scheme(StrEnum):
    """How the tags of a file mark entity boundaries."""

    AUTO = "auto"  # detect from the tags (see detect_scheme)
    IOB1 = "iob1"  # I-X everywhere; B-X only to split two adjacent X entities (original CoNLL-2003)
    IOB2 = "iob2"  # B-X starts every entity (alias: bio)
    BIO = "bio"
    BILOU = "bilou"  # B-egin, I-nside, L-ast, U-nit
    IOBES = "iobes"  # B-egin, I-nside, E-nd, S-ingle


class TagError(ValueError):
    """A tag that no scheme understands; readers turn it into a DataError naming file and line."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


_PREFIXES = {
    Scheme.IOB1: {"B", "I"},
    Scheme.IOB2: {"B", "I"},
    Scheme.BILOU: {"B", "I", "L", "U"},
    Scheme.IOBES: {"B", "I", "E", "S"},
}


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``. Types may contain dashes (``B-C-AM-TMP``)."""
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if not dash or not entity_type or len(prefix) != 1:
        raise ValueError(f"tag {tag!r} is neither 'O' nor PREFIX-TYPE")
    return prefix, entity_type


def detect_scheme(sequences: Sequence[Sequence[str]]) -> Scheme:
    """Guess the scheme of a whole file: L-/U- mean BILOU, E-/S- mean IOBES; otherwise an entity opened by
    ``I-`` (after ``O``, another type or at the start) means IOB1, and IOB2 if none is.

    A guess cannot tell IOB1 from a malformed IOB2 file, which is why tasks may declare their scheme.
    """
    prefixes: set[str] = set()
    opens_with_inside = False
    for tags in sequences:
        previous = "O"
        for tag in tags:
            prefix, entity_type = split_tag(tag)
            prefixes.add(prefix)
            if prefix == "I" and (previous == "O" or split_tag(previous)[1] != entity_type):
                opens_with_inside = True
            previous = tag
    if prefixes & {"L", "U"}:
        return Scheme.BILOU
    if prefixes & {"E", "S"}:
        return Scheme.IOBES
    return Scheme.IOB1 if opens_with_inside else Scheme.IOB2


def to_iob2(tags: Sequence[str], scheme: Scheme) -> tuple[list[str], int]:
    """Rewrite one sentence's tags as IOB2; returns the tags and how many ``I-`` tags had to open an entity.

    BILOU/IOBES: U-/S- become B-, L-/E- become I-. IOB1 (and IOB2, which may be malformed): an I-X that does
    not continue an X entity becomes B-X, the reading conlleval gives it. The repair count lets a reader
    report a declared-IOB2 file that was not. Raises TagError for a prefix the scheme does not have.
    """
    if scheme in (Scheme.AUTO, Scheme.BIO):
        scheme = detect_scheme([tags]) if scheme is Scheme.AUTO else Scheme.IOB2
    allowed = _PREFIXES[scheme]
    converted: list[str] = []
    repaired = 0
    previous_type = ""
    for position, tag in enumerate(tags):
        try:
            prefix, entity_type = split_tag(tag)
        except ValueError as error:
            raise TagError(position, str(error)) from None
        if prefix != "O" and prefix not in allowed:
            expected = ", ".join(sorted(allowed))
            raise TagError(
                position, f"tag {tag!r} has prefix {prefix!r}; the {scheme} scheme expects O or {expected}"
            )
        closes = prefix in ("U", "S", "L", "E")  # the entity ends here: a following I-/E- cannot continue it
        if prefix in ("U", "S"):
            prefix = "B"
        elif prefix in ("L", "E"):
            prefix = "I"
        if prefix == "I" and entity_type != previous_type:
            prefix = "B"
            repaired += 1
        converted.append("O" if prefix == "O" else f"{prefix}-{entity_type}")
        previous_type = "" if closes or prefix == "O" else entity_type
    return converted, repaired


def iob2_labels(entity_types: Sequence[str]) -> list[str]:
    """The label list of a head: ``O`` first, then ``B-``/``I-`` per type in the given order."""
    return ["O"] + [f"{prefix}-{entity_type}" for entity_type in entity_types for prefix in ("B", "I")]


def entity_spans(tags: Sequence[str], mode: str = "conlleval") -> list[tuple[str, int, int]]:
    """Entities as ``(type, start_word, end_word)`` with ``end_word`` inclusive.

    ``conlleval`` mode accepts any sequence (an ``I-`` after ``O`` opens an entity, as conlleval does);
    ``strict`` mode keeps only entities that are well formed under IOB2, like seqeval's strict mode.
    """
    if mode == "strict":
        entities = Entities([list(tags)], IOB2, suffix=False).entities[0]
        return [(entity.tag, entity.start, entity.end - 1) for entity in entities]
    if mode != "conlleval":
        raise ValueError(f"mode must be 'conlleval' or 'strict', got {mode!r}")
    return [(entity_type, start, end) for entity_type, start, end in get_entities(list(tags))]


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], mode: str = "conlleval"
) -> dict[str, float]:
    """Micro precision/recall/F1 over entities (exact type and span match), as fractions in [0, 1].

    Also ``accuracy`` (per word, tags compared literally) and ``f1_<TYPE>`` for each type seen in gold or
    predictions. ``mode`` is ``conlleval`` (seqeval's default, which reproduces conlleval) or ``strict``
    (seqeval's strict IOB2 mode: malformed predicted entities do not count). An empty input scores 0.
    """
    if mode not in ("conlleval", "strict"):
        raise ValueError(f"mode must be 'conlleval' or 'strict', got {mode!r}")
    gold = [list(tags) for tags in gold]
    predicted = [list(tags) for tags in predicted]
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted, strict=True)):
        raise ValueError("gold and predicted tag sequences must have the same number and lengths")
    if not any(gold):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    strict = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
    with warnings.catch_warnings():  # seqeval's weighted average divides by zero when gold has no entities
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold, predicted, output_dict=True, zero_division=0, **strict)
    micro = report.pop("micro avg")
    scores = {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": float(accuracy_score(gold, predicted)),
    }
    for name, row in report.items():
        if not name.endswith(" avg"):
            scores[f"f1_{name}"] = float(row["f1-score"])
    return scores
