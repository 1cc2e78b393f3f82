"""Semantic role labelling (CoNLL-2005, CoNLL-2012) as tagging, one predicate per example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptuning.tasks.base import DataError, DataReport, Features, Task
from ptuning.tasks.classification import PAIR_SEPARATOR, joins_pairs_bare
from ptuning.tasks.pretokenized import as_in_running_text, needs_prefix_space
from ptuning.tasks.tag_files import Sentence, read_srl_file
from ptuning.tasks.tag_schemes import Scheme, entity_scores
from ptuning.tasks.tagging import TaggingTask


class SrlTask(TaggingTask):
    """Semantic role labelling, one predicate per example, in the P-tuning v2 reference line format.

    The predicate is marked as the reference does, by appending it as a second segment
    (``[CLS] tokens [SEP] predicate [SEP]``), but through the tokenizer's own pair encoding rather than a
    literal "[SEP]" word: the separator is right for every tokenizer, and BERT-style models get
    token_type_ids 1 on the predicate segment (the reference feeds 0 everywhere). Only the first segment is
    labelled. Scores exclude the predicate's own ``V`` span, as CoNLL's srl-eval.pl does; ``f1_with_v``
    is the seqeval figure over all spans that the reference code reports.
    """

    scheme = Scheme.IOB2

    def read_file(self, path: Path) -> tuple[list[Sentence], int]:
        return read_srl_file(path)

    def read(self, data_dir: str, split: str) -> tuple[list[dict[str, Any]], DataReport]:
        """As for NER, plus a note on predicate indices that do not point at a V tag (e.g. 1-based files)."""
        examples, report = super().read(data_dir, split)
        missed = sum(1 for e in examples if e["tags"][e["predicate_index"]] not in ("B-V", "I-V"))
        if missed:
            report.notes.append(f"{self.name}: {missed} predicates whose index does not point at a V tag")
        return examples, report

    def _example(self, index: int, sentence: Sentence) -> dict[str, Any]:
        example = super()._example(index, sentence)
        example["predicate"] = sentence.tokens[example["predicate_index"]]
        return example

    def _encode(self, examples: list[dict[str, Any]], tokenizer: Any, max_length: int) -> Any:
        space = needs_prefix_space(tokenizer)
        separator = [PAIR_SEPARATOR] if joins_pairs_bare(tokenizer) else []  # a decoder's bare pair
        predicates = [separator + as_in_running_text([example["predicate"]], space) for example in examples]
        self._check_predicates(examples, predicates, tokenizer, max_length)
        return tokenizer(
            [as_in_running_text(example["tokens"], space) for example in examples],
            predicates,
            is_split_into_words=True,
            truncation="only_first",
            max_length=max_length,
        )

    def _check_predicates(
        self, examples: list[dict[str, Any]], predicates: list[list[str]], tokenizer: Any, max_length: int
    ) -> None:
        """A predicate segment must leave the sentence a token: only the sentence is cut, so the tokenizer
        would raise a bare truncation error (a 500 from the server). Refused, not cut: the segment is the
        example's one marker of which predicate it labels, and the same word in the sentence is cut there."""
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        encoded = tokenizer(predicates, is_split_into_words=True, add_special_tokens=False, verbose=False)
        for example, ids in zip(examples, encoded["input_ids"], strict=True):
            if len(ids) + specials >= max_length:
                predicate = example["predicate"]
                shown = (
                    repr(predicate)
                    if len(predicate) <= 40
                    else f"{predicate[:40]!r}... ({len(predicate)} characters)"
                )
                raise DataError(
                    f"{self.name}: example {example['id']}: the predicate {shown} takes {len(ids)} tokens; with "
                    f"{specials} special tokens that leaves no room for the sentence at max_length={max_length} "
                    f"(expected at most {max_length - specials - 1} tokens, or a larger max_length)"
                )

    def score(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> dict[str, float]:
        predicted = self.predict_tags(examples, features, outputs)
        gold = [example["tags"] for example in examples]
        scores = entity_scores([_without_v(t) for t in gold], [_without_v(t) for t in predicted], self.mode)
        scores["f1_with_v"] = entity_scores(gold, predicted, self.mode)["f1"]
        return scores

    def decode(
        self, examples: list[dict[str, Any]], features: Features, outputs: list[Any]
    ) -> list[dict[str, Any]]:
        results = super().decode(examples, features, outputs)
        for result, example in zip(results, examples, strict=True):
            result["predicate_index"] = example["predicate_index"]
        return results


def _without_v(tags: list[str]) -> list[str]:
    """The tags without the predicate's spans: V and its continuation C-V ("picked ... up"), which srl-eval.pl
    joins to V and leaves out of the scores with it."""
    return ["O" if tag in _PREDICATE_TAGS else tag for tag in tags]


_PREDICATE_TAGS = frozenset({"B-V", "I-V", "B-C-V", "I-C-V"})


def srl_roles(core: list[str], modifiers: list[str]) -> list[str]:
    """A role inventory: core and modifier roles, V, and the continuation (C-) and reference (R-) forms."""
    base = core + modifiers
    return base + ["V"] + [f"C-{role}" for role in base + ["V"]] + [f"R-{role}" for role in base]


_CONLL2005_MODIFIERS = ["ADV", "CAU", "DIR", "DIS", "EXT", "LOC", "MNR", "MOD", "NEG", "PNC", "PRD", "REC"]
_CONLL2005_MODIFIERS += ["TM", "TMP"]
_CONLL2012_MODIFIERS = ["ADJ", "ADV", "CAU", "COM", "DIR", "DIS", "DSP", "EXT", "GOL", "LOC", "LVB", "MNR"]
_CONLL2012_MODIFIERS += ["MOD", "NEG", "PNC", "PRD", "PRP", "PRR", "PRX", "REC", "TMP"]
CONLL2005_ROLES = srl_roles(
    ["A0", "A1", "A2", "A3", "A4", "A5", "AA"], ["AM"] + [f"AM-{m}" for m in _CONLL2005_MODIFIERS]
)
CONLL2012_ROLES = srl_roles(
    ["ARG0", "ARG1", "ARG2", "ARG3", "ARG4", "ARG5", "ARGA"], [f"ARGM-{m}" for m in _CONLL2012_MODIFIERS]
)


class Conll2005SrlTask(SrlTask):
    name = "conll2005-srl"
    description = "CoNLL-2005 SRL (PropBank), one predicate per line; WSJ and Brown test sets"
    splits = {
        "train": "conll05.train.txt",
        "dev": "conll05.devel.txt",
        "test-wsj": "conll05.test.wsj.txt",
        "test-brown": "conll05.test.brown.txt",
    }
    entity_types = CONLL2005_ROLES


class Conll2012SrlTask(SrlTask):
    name = "conll2012-srl"
    description = "CoNLL-2012 SRL (OntoNotes 5.0), one predicate per line"
    splits = {"train": "conll2012.train.txt", "dev": "conll2012.devel.txt", "test": "conll2012.test.txt"}
    entity_types = CONLL2012_ROLES


TASKS: list[type[Task]] = [Conll2005SrlTask, Conll2012SrlTask]
