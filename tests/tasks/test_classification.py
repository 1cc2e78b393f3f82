"""GLUE / SuperGLUE tasks: templates, real-data counts, truncation reports, and gold round trips."""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tiny_models import minilm_tokenizer_dir

from ptuning.core.config import ConfigError
from ptuning.tasks import DataError, HeadKind, collate, get_task, list_tasks

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_tokenizer_dir())  # skips where the package is absent


def gold_outputs(task, features):
    """Fake model outputs that put all the mass on each feature's gold label."""
    outputs = []
    for feature in features:
        if task.head is HeadKind.REGRESSION:
            outputs.append(np.array([feature["labels"]], dtype=np.float32))
            continue
        width = len(feature["input_ids"]) if task.head is HeadKind.MULTIPLE_CHOICE else len(task.label_names)
        logits = np.full(width, -5.0, dtype=np.float32)
        logits[feature["labels"]] = 5.0
        outputs.append(logits)
    return outputs


def round_trip(task, data, split, tokenizer, max_length=128):
    examples, _ = task.read(str(data), split)
    features, _ = task.featurize(examples, tokenizer, max_length)
    return task.score(examples, features, gold_outputs(task, features))


# --- registry -----------------------------------------------------------------------------------------

MY_TASKS = [
    "sst2", "cola", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli",
    "boolq", "cb", "superglue-rte", "wic", "wsc", "copa", "multirc", "record",
    "csv-classification", "pair-classification",
]  # fmt: skip


def test_every_task_is_registered():
    assert set(MY_TASKS) <= set(list_tasks())


def test_unknown_task_lists_the_known_ones_and_suggests():
    with pytest.raises(ValueError) as error:
        get_task("sst-2")
    assert "Did you mean 'sst2'" in str(error.value) and "superglue-rte" in str(error.value)


def test_get_task_builds_a_fresh_configured_instance():
    first = get_task("csv-classification", text_field="review", label_names=["bad", "good"])
    assert first.fields == {"text": ("review",)} and first.label_names == ["bad", "good"]
    assert get_task("csv-classification").label_names is None


@pytest.mark.parametrize("name", MY_TASKS)
def test_task_declares_the_contract(name):
    task = get_task(name)
    assert isinstance(task.head, HeadKind) and task.primary_metric and task.splits
    assert "train" in task.splits and task.description


def test_split_aliases_and_unknown_split(tmp_path):
    assert get_task("copa").split_name("validation") == "dev"
    assert get_task("sst2").split_name("valid") == "dev"  # every task kind takes the same names
    with pytest.raises(DataError, match=r"no split 'holdout'; known splits: \['dev', 'test', 'train'\]"):
        get_task("copa").read(str(tmp_path), "holdout")


# --- templates (as in the P-tuning v2 reference code) ------------------------------------------------


def test_boolq_pairs_question_with_passage():
    example = {"question": "is it?", "passage": "It is.", "label": "True"}
    assert get_task("boolq").render(example) == [("is it?", "It is.")]


def test_wic_prefixes_each_sentence_with_the_word():
    example = {"word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan."}
    assert get_task("wic").render(example) == [("bank: A river bank.", "bank: A bank loan.")]


def test_wsc_marks_the_pronoun_and_pairs_the_noun_phrase():
    example = {"text": "Mark told Pete he lied.", "span1_text": "Pete", "span2_text": "he", "span2_index": 3}
    assert get_task("wsc").render(example) == [("Mark told Pete *he* lied.", "Pete")]


def test_wsc_refuses_a_pronoun_that_is_neither_in_the_text_nor_at_its_index():
    """Pinned to the last word, 'him' at index 50 marked '*himself.*' without a word."""
    example = {"text": "Mark told Pete many lies about himself.", "span1_text": "Pete", "span2_text": "him",
               "span2_index": 50, "source": "val.jsonl, line 3"}  # fmt: skip
    with pytest.raises(
        DataError, match=r"val.jsonl, line 3: span2_text 'him' is not in the text and span2_index 50"
    ):
        get_task("wsc").render(example)


def test_wsc_moves_an_off_by_n_index_to_the_nearest_match():
    example = {"text": "They might use it , but", "span1_text": "safe", "span2_text": "it", "span2_index": 2}
    assert get_task("wsc").render(example)[0][0] == "They might use *it* , but"


def test_copa_joins_premise_and_each_choice_with_because_or_so():
    copa = get_task("copa")
    example = {"premise": "It rained.", "question": "effect", "choice1": "Wet.", "choice2": "Dry."}
    assert copa.render(example) == [("It rained. so", "Wet."), ("It rained. so", "Dry.")]
    assert copa.render({**example, "question": "cause"})[0] == ("It rained. because", "Wet.")


def test_multirc_pairs_paragraph_with_question_and_answer():
    example = {"paragraph": "P.", "question": "Who?", "answer": "Ann"}
    assert get_task("multirc").render(example) == [("P.", "Who? Ann")]


def test_record_fills_the_placeholder_with_each_entity():
    example = {
        "passage": "Ann met Bob.\n@highlight\nNews",
        "query": "@placeholder smiled",
        "entities": ["Ann", "Bob"],
    }
    assert get_task("record").render(example) == [
        ("Ann met Bob.\n- News", "Ann smiled"),
        ("Ann met Bob.\n- News", "Bob smiled"),
    ]


# --- synthetic files in each task's real layout: read -> features -> gold outputs -> score == 1 -------

GLUE_FIXTURES = {
    "mrpc": (
        "train",
        {
            "train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
            "1\t1\t2\tA cat sat.\tThe cat sat.\n0\t3\t4\tIt rains.\tStocks fell.\n1\t5\t6\tHi.\tHello.\n"
        },
    ),
    "qqp": (
        "dev",
        {
            "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            "0\t1\t2\tHow to cook?\tHow do I cook?\t1\n1\t3\t4\tWhy?\tWhere?\t0\n"
        },
    ),
    "stsb": (
        "dev",
        {
            "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
            "0\tmain\tMSRvid\t2012\t1\tnone\tnone\tA plane takes off.\tAn airplane takes off.\t5.000\n"
            "1\tmain\tMSRvid\t2012\t2\tnone\tnone\tA man plays.\tA man sings.\t1.500\n"
            "2\tmain\tMSRvid\t2012\t3\tnone\tnone\tA dog runs.\tA cat sleeps.\t0.250\n"
        },
    ),
    "mnli": (
        "dev-mismatched",
        {
            "dev_mismatched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
            "0\t1\t1n\tfiction\tA man sleeps.\tA person rests.\tentailment\tentailment\n"
            "1\t2\t2n\tfiction\tA man sleeps.\tA man runs.\tcontradiction\tcontradiction\n"
            "2\t3\t3n\tfiction\tA man sleeps.\tA man dreams.\tneutral\tneutral\n"
        },
    ),
    "qnli": (
        "train",
        {
            "train.tsv": "index\tquestion\tsentence\tlabel\n"
            "0\tWho wrote it?\tAnn wrote it.\tentailment\n1\tWhen?\tIt is red.\tnot_entailment\n"
        },
    ),
    "rte": (
        "dev",
        {
            "dev.tsv": "index\tsentence1\tsentence2\tlabel\n"
            "0\tAnn is a cook.\tAnn cooks.\tentailment\n1\tAnn is a cook.\tAnn flies.\tnot_entailment\n"
        },
    ),
    "wnli": (
        "train",
        {
            "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI put it down.\tIt is down.\t1\n1\tA b.\tC d.\t0\n"
        },
    ),
    "cola": (
        "dev",
        {"dev.tsv": "gj04\t1\t\tThe dog barked.\ngj04\t0\t*\tBarked dog the.\ngj04\t1\t\tShe ran.\n"},
    ),
    "cb": (
        "train",
        {
            "train.jsonl": "\n".join(
                json.dumps({"premise": "p", "hypothesis": h, "label": label, "idx": i})
                for i, (h, label) in enumerate(
                    [("a", "entailment"), ("b", "contradiction"), ("c", "neutral")]
                )
            )
        },
    ),
    "csv-classification": ("train", {"train.csv": "text,label\ngreat,pos\nawful,neg\nfine,pos\n"}),
    "pair-classification": ("train", {"train.csv": "sentence1,sentence2,label\na,b,same\nc,d,different\n"}),
}

MULTIRC_RECORD = {
    "idx": 0,
    "passage": {
        "text": "Ann met Bob in Paris.",
        "questions": [
            {
                "idx": 0,
                "question": "Who met Bob?",
                "answers": [{"idx": 0, "text": "Ann", "label": 1}, {"idx": 1, "text": "Paris", "label": 0}],
            },
            {"idx": 1, "question": "Where?", "answers": [{"idx": 2, "text": "In Paris", "label": 1}]},
        ],
    },
}
RECORD_RECORD = {
    "idx": 0,
    "passage": {
        "text": "Ann met Bob in Paris.\n@highlight\nBob smiled",
        "entities": [{"start": 0, "end": 2}, {"start": 8, "end": 10}, {"start": 15, "end": 19}],
    },
    "qas": [
        {
            "idx": "q0",
            "query": "@placeholder was met by Ann",
            "answers": [{"start": 8, "end": 10, "text": "Bob"}],
        },
        {
            "idx": "q1",
            "query": "They met in @placeholder",
            "answers": [{"start": 15, "end": 19, "text": "Paris"}],
        },
    ],
}
SUPERGLUE_NESTED = {
    "multirc": ("train", {"train.jsonl": json.dumps(MULTIRC_RECORD)}),
    "record": ("dev", {"val.jsonl": json.dumps(RECORD_RECORD)}),
}


@pytest.mark.parametrize("name", sorted({**GLUE_FIXTURES, **SUPERGLUE_NESTED}))
def test_gold_round_trip_on_each_file_layout(name, tmp_path, tokenizer):
    split, files = {**GLUE_FIXTURES, **SUPERGLUE_NESTED}[name]
    for file_name, text in files.items():
        (tmp_path / file_name).write_text(text + "\n", encoding="utf-8")
    task = get_task(name)
    scores = round_trip(task, tmp_path, split, tokenizer)
    assert task.primary_metric in scores
    assert scores == {metric: pytest.approx(1.0) for metric in scores}


def test_multirc_keeps_question_groups(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(MULTIRC_RECORD) + "\n")
    examples, _ = get_task("multirc").read(str(tmp_path), "train")
    assert [e["question_id"] for e in examples] == ["0-0", "0-0", "0-1"]
    assert [e["label"] for e in examples] == ["True", "False", "True"]
    assert examples[2]["source"].endswith("train.jsonl, line 1, question 1, answer 0")


def test_record_reads_entity_spans_and_answers(tmp_path):
    (tmp_path / "val.jsonl").write_text(json.dumps(RECORD_RECORD) + "\n")
    examples, _ = get_task("record").read(str(tmp_path), "dev")
    assert examples[0]["entities"] == ["Ann", "Bob", "Paris"]
    assert [e["label"] for e in examples] == [["Bob"], ["Paris"]]


def test_record_bad_entity_span_names_the_line(tmp_path):
    broken = {
        **RECORD_RECORD,
        "passage": {**RECORD_RECORD["passage"], "entities": [{"start": 5, "end": 999}]},
    }
    (tmp_path / "val.jsonl").write_text(json.dumps(broken) + "\n")
    with pytest.raises(DataError, match=r"val.jsonl, line 1: entity span"):
        get_task("record").read(str(tmp_path), "dev")


def test_record_decode_names_the_best_entity(tmp_path, tokenizer):
    (tmp_path / "val.jsonl").write_text(json.dumps(RECORD_RECORD) + "\n")
    task = get_task("record")
    examples, _ = task.read(str(tmp_path), "dev")
    features, _ = task.featurize(examples, tokenizer, 64)
    decoded = task.decode(examples, features, gold_outputs(task, features))
    assert [d["label"] for d in decoded] == ["Bob", "Paris"]
    assert set(decoded[0]["probabilities"]) == {"Ann", "Bob", "Paris"}


def test_copa_question_must_be_cause_or_effect(tmp_path):
    line = {"premise": "p", "choice1": "a", "choice2": "b", "question": "reason", "label": 0}
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl, line 1: question should be 'cause' or 'effect'"):
        get_task("copa").read(str(tmp_path), "train")


def test_stsb_label_must_be_a_number(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence1\tsentence2\tscore\na\tb\thigh\n")
    with pytest.raises(DataError, match=r"train.tsv, line 2: label 'high' is not a number"):
        get_task("stsb").read(str(tmp_path), "train")


def test_a_hub_export_of_a_test_split_reads_its_minus_one_labels_as_none(tmp_path):
    """`load_dataset("nyu-mll/glue", "sst2")["test"].to_json(...)` keeps ClassLabel's -1: no label, not a class."""
    rows = {
        "sst2": {"sentence": "fun", "label": -1, "idx": 0},
        "stsb": {"sentence1": "a", "sentence2": "b", "label": -1.0, "idx": 0},
        "boolq": {"question": "q", "passage": "p", "label": -1, "idx": 0},
        "copa": {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": -1, "idx": 0},
    }
    for name, row in rows.items():
        export = tmp_path / f"{name}-test.jsonl"
        export.write_text(json.dumps(row) + "\n")
        examples, report = get_task(name).read(str(export), "test")
        assert examples[0]["label"] is None and report.unlabelled == 1, name
    with pytest.raises(DataError, match="a train split needs one"):  # train rows still need a label
        get_task("sst2").read(str(tmp_path / "sst2-test.jsonl"), "train")


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# Each task's label codes as the GLUE data define them, in a layout that writes codes: the GLUE TSV download
# for MRPC ('Quality'), QQP ('is_duplicate') and WNLI; for MNLI and QNLI (whose TSVs hold label names) a JSONL
# export of the nyu-mll/glue hub dataset, whose ClassLabel codes are 0 entailment, 1 neutral, 2 contradiction
# (MNLI) and 0 entailment, 1 not_entailment (QNLI).
GLUE_LABEL_CODES = {
    "mrpc": (
        "dev.tsv",
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1\t2\tA cat sat.\tThe cat sat.\n0\t3\t4\tIt rains.\tStocks fell.\n",
        ["equivalent", "not_equivalent"],
    ),
    "qqp": (
        "dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "0\t1\t2\tHow to cook?\tHow do I cook?\t1\n1\t3\t4\tWhy?\tWhere?\t0\n",
        ["duplicate", "not_duplicate"],
    ),
    "wnli": (
        "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tI put it down.\tIt is down.\t1\n1\tA b.\tC d.\t0\n",
        ["entailment", "not_entailment"],
    ),
    "mnli": (
        "validation_matched.jsonl",
        jsonl(
            {"premise": "A man sleeps.", "hypothesis": "A man dreams.", "label": 1, "idx": 0},
            {"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": 0, "idx": 1},
            {"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": 2, "idx": 2},
        ),
        ["neutral", "entailment", "contradiction"],
    ),
    "qnli": (
        "validation.jsonl",
        jsonl(
            {"question": "When?", "sentence": "It is red.", "label": 1, "idx": 0},
            {"question": "Who wrote it?", "sentence": "Ann wrote it.", "label": 0, "idx": 1},
        ),
        ["not_entailment", "entailment"],
    ),
}


@pytest.mark.parametrize("name", sorted(GLUE_LABEL_CODES))
def test_glue_label_codes_read_as_the_names_glue_gives_them(name, tmp_path):
    """The gold round trip maps names to indices through the task's own list, so a swapped list still scores
    1; only a file row coded 1 (or 0, 2) read back as GLUE's name for that code pins the order."""
    file_name, text, expected = GLUE_LABEL_CODES[name]
    (tmp_path / file_name).write_text(text, encoding="utf-8")
    examples, _ = get_task(name).read(str(tmp_path / file_name), "dev")
    assert [example["label"] for example in examples] == expected


# --- features, truncation, decoding -------------------------------------------------------------------


def sst2_folder(tmp_path: Path) -> Path:
    long_sentence = " ".join(["wonderful"] * 40)
    (tmp_path / "dev.tsv").write_text(f"label\tcontent\n1\t{long_sentence}\n0\tdull\n")
    (tmp_path / "test.tsv").write_text("index\tsentence\n0\tfun\n1\tboring\n")
    return tmp_path


def test_truncation_is_counted_and_max_length_honoured(tmp_path, tokenizer):
    task = get_task("sst2")
    examples, _ = task.read(str(sst2_folder(tmp_path)), "dev")
    features, report = task.featurize(examples, tokenizer, max_length=16)
    assert report.truncated == 1 and "truncated" in report.notes[0]
    assert [len(f["input_ids"]) for f in features] == [16, 3]
    assert features[0]["input_ids"][-1] == tokenizer.sep_token_id


def test_pairs_are_truncated_longest_first(tokenizer):
    task = get_task("boolq")
    example = {"question": "is it red?", "passage": " ".join(["long"] * 50), "label": "True"}
    features, report = task.featurize([example], tokenizer, max_length=20)
    ids = features[0]["input_ids"]
    assert len(ids) == 20 and report.truncated == 1
    assert tokenizer.decode(ids[1:6]) == "is it red? [SEP]"  # the short question survives whole


def test_too_small_max_length_is_refused(tokenizer):
    with pytest.raises(ConfigError, match="max_length"):
        get_task("sst2").featurize([{"sentence": "a", "label": None}], tokenizer, max_length=2)


def test_unlabelled_test_split_is_counted_and_cannot_be_scored(tmp_path, tokenizer):
    task = get_task("sst2")
    examples, report = task.read(str(sst2_folder(tmp_path)), "test")
    assert report.unlabelled == 2 and report.examples == 2
    features, _ = task.featurize(examples, tokenizer, 32)
    assert all("labels" not in feature for feature in features)
    outputs = [np.array([0.0, 1.0]), np.array([2.0, 0.0])]
    with pytest.raises(DataError, match="none of the 2 examples has a label"):
        task.score(examples, features, outputs)
    decoded = task.decode(examples, features, outputs)
    assert decoded[0]["label"] == "positive" and decoded[1]["label"] == "negative"
    assert sum(decoded[0]["probabilities"].values()) == pytest.approx(1.0)


def test_decode_gives_each_label_name_its_own_softmax_probability(tmp_path, tokenizer):
    """The probabilities are keyed by label name: a name paired with another class's probability would
    still sum to 1 and keep the argmax label right."""
    task = get_task("sst2")
    examples, _ = task.read(str(sst2_folder(tmp_path)), "test")
    features, _ = task.featurize(examples, tokenizer, 32)
    decoded = task.decode(examples, features, [np.array([0.0, 1.0]), np.array([2.0, 0.0])])
    # softmax([0, 1])[1] = e / (1 + e) = 0.731059; softmax([2, 0])[0] = e^2 / (e^2 + 1) = 0.880797
    assert decoded[0]["probabilities"]["positive"] == pytest.approx(0.7310585786)
    assert decoded[0]["probabilities"]["negative"] == pytest.approx(0.2689414214)
    assert decoded[1]["probabilities"]["negative"] == pytest.approx(0.8807970780)


def test_features_collate_into_a_batch(tmp_path, tokenizer):
    task = get_task("sst2")
    examples, _ = task.read(str(sst2_folder(tmp_path)), "dev")
    features, _ = task.featurize(examples, tokenizer, 32)
    batch = collate(features, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, max(len(f["input_ids"]) for f in features))
    assert batch["labels"].tolist() == [1, 0]


def test_regression_decode_gives_the_score(tmp_path, tokenizer):
    split, files = GLUE_FIXTURES["stsb"]
    (tmp_path / "dev.tsv").write_text(files["dev.tsv"])
    task = get_task("stsb")
    examples, _ = task.read(str(tmp_path), split)
    features, _ = task.featurize(examples, tokenizer, 32)
    assert isinstance(features[0]["labels"], float)
    decoded = task.decode(examples, features, [np.array([4.5]), np.array([1.0]), np.array([0.0])])
    assert decoded[0] == {"score": 4.5}


def test_multiple_choice_features_hold_one_row_per_choice(tokenizer):
    task = get_task("copa")
    example = {
        "premise": "It rained.",
        "question": "effect",
        "choice1": "Wet.",
        "choice2": "Very dry.",
        "label": 1,
    }
    features, _ = task.featurize([example], tokenizer, 32)
    assert len(features[0]["input_ids"]) == 2 and features[0]["labels"] == 1
    decoded = task.decode([example], features, [np.array([0.1, 2.0])])
    assert decoded[0]["label"] == "choice2" and decoded[0]["choice"] == "Very dry."


# --- real data in ../shared/data: counts and labels as in each PROVENANCE.md, and gold round trips ----

REAL_FILES = [  # task, folder, split, file
    ("sst2", "sst2", "train", "train.tsv"),
    ("sst2", "sst2", "dev", "dev.tsv"),
    ("sst2", "sst2", "test", "test.tsv"),
    ("superglue-rte", "rte", "train", "train.jsonl"),
    ("superglue-rte", "rte", "dev", "val.jsonl"),
    ("superglue-rte", "rte", "test", "test.jsonl"),
    ("boolq", "boolq", "dev", "val.jsonl"),
    ("boolq", "boolq", "fewglue-train", "train_fewglue32.jsonl"),
    ("boolq", "boolq", "fewglue-dev32", "dev32_fewglue.jsonl"),
    ("copa", "copa", "train", "train.jsonl"),
    ("copa", "copa", "dev", "val.jsonl"),
    ("copa", "copa", "test", "test.jsonl"),
    ("wic", "wic", "dev", "val.jsonl"),
    ("wic", "wic", "fewglue-train", "train_fewglue32.jsonl"),
    ("wsc", "wsc", "train", "train.jsonl"),
    ("wsc", "wsc", "dev", "val.jsonl"),
    ("wsc", "wsc", "test", "test.jsonl"),
]


def provenance_counts(folder: str, file_name: str) -> tuple[int, dict[str, int]]:
    """(examples, raw label counts) from the '## Counts' list of a PROVENANCE.md."""
    text = (DATA / folder / "PROVENANCE.md").read_text(encoding="utf-8")
    pattern = rf"^- `{re.escape(file_name)}`: examples=(\d+),.*labels=(\{{.*\}})$"
    match = re.search(pattern, text, flags=re.MULTILINE)
    assert match, f"{file_name} is not counted in {folder}/PROVENANCE.md"
    return int(match.group(1)), ast.literal_eval(match.group(2))


@needs_data
@pytest.mark.parametrize(("name", "folder", "split", "file_name"), REAL_FILES)
def test_real_data_matches_provenance(name, folder, split, file_name):
    task = get_task(name)
    assert task.splits[split] == file_name
    examples, report = task.read(str(DATA / folder), split)
    expected_count, raw_labels = provenance_counts(folder, file_name)
    expected = Counter(
        {task.parse_label(raw, "PROVENANCE"): n for raw, n in raw_labels.items() if raw != "None"}
    )
    assert len(examples) == report.examples == expected_count
    assert report.unlabelled == raw_labels.get("None", 0)
    assert Counter(e["label"] for e in examples if e["label"] is not None) == expected


@needs_data
def test_boolq_split_of_val_is_fixed_disjoint_and_two_to_one(tmp_path):
    boolq = get_task("boolq")
    train, _ = boolq.read(str(DATA / "boolq"), "train-from-val")
    held_out, report = boolq.read(str(DATA / "boolq"), "eval-from-val")
    every, _ = boolq.read(str(DATA / "boolq"), "dev")
    train_ids, held_ids = {e["id"] for e in train}, {e["id"] for e in held_out}
    assert (len(train), len(held_out)) == (2180, 1090)
    assert not train_ids & held_ids and train_ids | held_ids == {e["id"] for e in every}
    assert "eval-from-val" in report.notes[-1]
    lines = (DATA / "boolq" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(lines)
    (tmp_path / "val.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shuffled, _ = boolq.read(str(tmp_path), "train-from-val")
    assert {e["id"] for e in shuffled} == train_ids  # the rule does not depend on file order


@needs_data
@pytest.mark.parametrize(
    ("name", "folder", "split"),
    [
        ("sst2", "sst2", "dev"),
        ("sst2", "sst2", "test"),
        ("superglue-rte", "rte", "dev"),
        ("boolq", "boolq", "eval-from-val"),
        ("copa", "copa", "dev"),
        ("wic", "wic", "dev"),
        ("wsc", "wsc", "dev"),
    ],
)
def test_real_data_gold_round_trip_scores_one(name, folder, split, tokenizer):
    scores = round_trip(get_task(name), DATA / folder, split, tokenizer)
    assert scores == {metric: pytest.approx(1.0) for metric in scores}


@needs_data
def test_sst2_dev_header_content_is_read_as_the_sentence():
    examples, _ = get_task("sst2").read(str(DATA / "sst2"), "dev")
    assert examples[0]["sentence"] == "one long string of cliches ." and examples[0]["label"] == "negative"


def test_raw_values_found_by_a_bug_hunt_are_read_as_the_docs_say(tmp_path):
    """label_map keys were not normalised like the labels ('true' never matched 'True': new classes were
    learned), a text NaN label became a class, STS-B took inf, and a .json object's repeated key lost a value."""
    (tmp_path / "train.csv").write_text("text,label\nhi,true\nyo,false\nz,yes\n")
    task = get_task("csv-classification", label_map={"true": "yes", "false": "no"})
    examples, _ = task.read(str(tmp_path / "train.csv"), "train")
    assert task.label_names == ["no", "yes"] and [e["label"] for e in examples] == ["yes", "no", "yes"]
    (tmp_path / "nan.csv").write_text("text,label\nhi,1\nyo,NaN\nz,0\n")
    with pytest.raises(DataError, match=r"nan.csv, line 3: no label in column 'label'"):
        get_task("csv-classification").read(str(tmp_path / "nan.csv"), "train")
    (tmp_path / "stsb.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1e400\n")
    with pytest.raises(DataError, match=r"stsb.tsv, line 2: label '1e400' is not a finite number"):
        get_task("stsb").read(str(tmp_path / "stsb.tsv"), "train")
    (tmp_path / "train.json").write_text('[{"text": "a", "label": "x", "label": "y"}]')
    with pytest.raises(DataError, match="the key 'label' appears twice in one object"):
        get_task("csv-classification").read(str(tmp_path / "train.json"), "train")
