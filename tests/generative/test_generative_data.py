"""Reading generative data: field options, multi-turn histories, and every bad input as a DataError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from generative_tiny import QA_ROWS, write_jsonl

from ptuning.tasks.base import DataError
from ptuning.tasks.generative import CausalLmTask, Conll2003JsonTask, SquadGenerativeTask, parse_entities
from ptuning.tasks.registry import get_task, list_tasks

SQUAD_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad_v1.1"


def test_the_three_tasks_are_registered_and_take_options() -> None:
    assert {"causal-lm", "squad-generative", "conll2003-json"} <= set(list_tasks())
    task = get_task("causal-lm", prompt_field="question", max_new_tokens=7)
    assert task.prompt_field == "question" and task.max_new_tokens == 7


@pytest.mark.parametrize("task_name", ["causal-lm", "seq2seq-lm"])
def test_a_dev_file_under_another_name_is_found_as_for_every_task(tmp_path, task_name) -> None:
    """choose_split saw val.jsonl and chose dev, but the generative tasks then read dev.jsonl only: a folder
    laid out as SuperGLUE's (train + val) failed with "file not found"."""
    from ptuning.training.data import choose_split

    write_jsonl(tmp_path / "train.jsonl", QA_ROWS)
    write_jsonl(tmp_path / "val.jsonl", QA_ROWS[:2])
    task = get_task(task_name)
    split = choose_split(task, str(tmp_path), None, ("dev", "validation", "val"), [])
    assert split == "dev"
    examples, _ = task.read(str(tmp_path), split)
    assert len(examples) == 2 and examples[0]["source"].endswith("val.jsonl, line 1")


def test_field_names_are_options_and_history_is_read_as_turns(tmp_path) -> None:
    rows = [{"q": "hi", "a": "hello", "turns": [["one", "two"], ["three", "four"]]}]
    task = CausalLmTask(prompt_field="q", response_field="a", history_field="turns")
    examples, report = task.read(str(write_jsonl(tmp_path / "dev.jsonl", rows)), "dev")
    assert examples[0]["prompt"] == "hi" and examples[0]["response"] == "hello"
    assert examples[0]["history"] == [("one", "two"), ("three", "four")]
    assert examples[0]["source"].endswith("dev.jsonl, line 1")
    assert "2 earlier turns" in report.notes[-1]


def test_role_content_messages_are_accepted_as_history(tmp_path) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    examples, _ = CausalLmTask().read(
        str(write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "response": "b", "history": history}])),
        "train",
    )
    assert examples[0]["history"] == [("hi", "hello")]


def test_csv_files_with_json_history_text_are_read(tmp_path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('prompt,response,history\nhello,fine,"[[""hi"", ""yes""]]"\nsay a,a,\n')
    examples, _ = CausalLmTask().read(str(path), "train")
    assert [e["history"] for e in examples] == [[("hi", "yes")], []]
    assert examples[1]["source"].endswith("train.csv, line 3")


def test_a_folder_uses_the_split_file_names(tmp_path) -> None:
    write_jsonl(tmp_path / "train.jsonl", QA_ROWS)
    write_jsonl(tmp_path / "dev.jsonl", QA_ROWS[:1])
    task = CausalLmTask()
    assert len(task.read(str(tmp_path), "train")[0]) == 4
    assert len(task.read(str(tmp_path), "validation")[0]) == 1
    with pytest.raises(DataError, match="test.jsonl: file not found"):
        task.read(str(tmp_path), "test")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"response": "b"}, r"line 2: field 'prompt' is missing"),
        ({"prompt": "a"}, r"line 2: field 'response' is missing"),
        ({"prompt": "a", "response": "  "}, r"line 2: field 'response' is empty"),
        ({"prompt": "", "response": "b"}, r"line 2: field 'prompt' is empty"),
        ({"prompt": "a", "response": 3}, r"line 2: field 'response' should be text, found int"),
        ({"prompt": "a", "response": "b", "history": "{"}, r"line 2: field 'history' is not valid JSON"),
        ({"prompt": "a", "response": "b", "history": {"x": 1}}, r"line 2: field 'history' should be a list"),
        ({"prompt": "a", "response": "b", "history": [["x"]]}, r"line 2: field 'history' turn 0 should be"),
        (
            {"prompt": "a", "response": "b", "history": [{"role": "assistant", "content": "x"}]},
            r"line 2: field 'history' messages must alternate",
        ),
    ],
)
def test_bad_rows_are_data_errors_naming_file_line_and_field(tmp_path, row, message) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [QA_ROWS[0], row])
    with pytest.raises(DataError, match=rf"train\.jsonl, {message}"):
        CausalLmTask().read(str(path), "train")


def test_an_empty_response_in_csv_is_a_data_error(tmp_path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("prompt,response\nhello,\n")
    with pytest.raises(DataError, match=r"train\.csv, line 2: field 'response' is empty"):
        CausalLmTask().read(str(path), "train")


def test_an_unknown_split_lists_the_known_ones(tmp_path) -> None:
    with pytest.raises(DataError, match="no split 'holdout'"):
        CausalLmTask().read(str(tmp_path), "holdout")


# --- squad-generative -------------------------------------------------------------------------------


def tiny_squad(tmp_path: Path, articles: int = 20) -> Path:
    """A SQuAD file with one question per article; article i's answer is 'answer i'."""
    data = []
    for index in range(articles):
        context = f"text of article {index} with answer {index} inside"
        start = context.index(f"answer {index}")
        answers = [
            {"text": f"answer {index}", "answer_start": start},
            {"text": str(index), "answer_start": start + 7},
        ]
        qas = [{"id": f"q{index}", "question": f"what is in {index}?", "answers": answers}]
        data.append({"title": f"a{index}", "paragraphs": [{"context": context, "qas": qas}]})
    path = tmp_path / "dev-v1.1.part1.json"
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def test_squad_generative_splits_by_article_and_keeps_every_gold_answer(tmp_path) -> None:
    tiny_squad(tmp_path)
    task = SquadGenerativeTask(shuffle_seed=None)
    train, _ = task.read(str(tmp_path), "train")
    dev, report = task.read(str(tmp_path), "dev")
    assert [e["id"] for e in train] == [f"q{i}" for i in range(18)]
    assert [e["id"] for e in dev] == ["q18", "q19"]
    assert dev[0]["response"] == "answer 18" and dev[0]["references"] == ["answer 18", "18"]
    assert (
        dev[0]["prompt"].startswith("text of article 18") and "Question: what is in 18?" in dev[0]["prompt"]
    )
    assert "articles [18:]" in report.notes[-1]


def test_squad_generative_shuffles_with_a_fixed_seed(tmp_path) -> None:
    tiny_squad(tmp_path)
    first, _ = SquadGenerativeTask().read(str(tmp_path), "train")
    again, _ = SquadGenerativeTask().read(str(tmp_path), "train")
    assert [e["id"] for e in first] == [e["id"] for e in again] != [f"q{i}" for i in range(18)]


def test_squad_generative_scores_against_all_gold_answers(tmp_path) -> None:
    tiny_squad(tmp_path)
    task = SquadGenerativeTask(shuffle_seed=None)
    dev, _ = task.read(str(tmp_path), "dev")
    features = [{"example_index": 0}, {"example_index": 1}]
    # "18" matches the second gold answer exactly; "the answer 5" shares the token "answer" with "answer 19"
    scores = task.score(dev, features, ["18", "the answer 5"])
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1.0 + 0.5) / 2)


@pytest.mark.skipif(not SQUAD_DIR.is_dir(), reason="shared SQuAD data not present")
def test_squad_generative_on_the_shared_file_uses_18_and_6_articles() -> None:
    task = SquadGenerativeTask()
    train, _ = task.read(str(SQUAD_DIR), "train")
    dev, _ = task.read(str(SQUAD_DIR), "dev")
    assert not {e["prompt"].split("\n\nQuestion:")[0] for e in train} & {
        e["prompt"].split("\n\nQuestion:")[0] for e in dev
    }
    assert (len(train), len(dev)) == (3_867, 1_094)


# --- conll2003-json ----------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

nothing NN B-NP O
"""


def test_conll2003_json_responses_list_entities_in_order(tmp_path) -> None:
    (tmp_path / "valid.txt").write_text(CONLL)
    examples, _ = Conll2003JsonTask().read(str(tmp_path), "dev")
    assert [e["response"] for e in examples] == [
        '[["EU", "ORG"], ["German", "MISC"]]',
        '[["Peter Blackburn", "PER"]]',
        "[]",
    ]
    assert examples[0]["prompt"].endswith("\nEU rejects German call")


def test_conll2003_json_scores_exact_match_entity_f1_and_validity(tmp_path) -> None:
    (tmp_path / "valid.txt").write_text(CONLL)
    task = Conll2003JsonTask()
    examples, _ = task.read(str(tmp_path), "dev")
    features = [{"example_index": i} for i in range(3)]
    outputs = ['[["EU", "ORG"], ["German", "LOC"]]', '[["Peter Blackburn","PER"]]', "no entities"]
    scores = task.score(examples, features, outputs)
    # predicted 3 entities (the third output does not parse), gold 3, 2 right: P = R = F1 = 2/3
    assert scores["entity_precision"] == pytest.approx(200 / 3)
    assert scores["entity_recall"] == pytest.approx(200 / 3)
    assert scores["entity_f1"] == pytest.approx(200 / 3)
    assert scores["exact_match"] == pytest.approx(100 / 3)  # only the second; spacing does not matter
    assert scores["valid_json"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("text", ["", "[", '{"a": 1}', '[["x"]]', '[["x", 1]]'])
def test_outputs_that_are_not_entity_lists_do_not_parse(text) -> None:
    assert parse_entities(text) is None


def test_a_history_column_is_found_whatever_its_case(tmp_path) -> None:
    """A CSV header 'History' gave every example an empty history, silently."""
    path = tmp_path / "train.csv"
    path.write_text('prompt,response,History\nwho,me,"[[""hi"",""hello""]]"\n')
    examples, report = CausalLmTask().read(str(path), "train")
    assert examples[0]["history"] == [("hi", "hello")]
    assert "1 earlier turns" in report.notes[-1]


def test_a_history_field_named_on_purpose_but_not_in_the_file_is_a_data_error(tmp_path) -> None:
    """history_field='turn' for a 'turns' column read no history and said nothing."""
    path = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": "who", "response": "me", "turns": [["hi", "yo"]]}]
    )
    with pytest.raises(
        DataError,
        match=r"train\.jsonl: no column 'turn' \(the task option history_field\); columns found: "
        r"\['prompt', 'response', 'turns'\]; did you mean 'turns'\?",
    ):
        CausalLmTask(history_field="turn").read(str(path), "train")
    # the default 'history' stays optional: a file without it has no histories
    examples, _ = CausalLmTask().read(str(path), "train")
    assert examples[0]["history"] == []


@pytest.mark.parametrize("task_name", ["causal-lm", "seq2seq-lm"])
def test_predict_text_lines_keep_a_prompts_edge_spaces_as_jsonl_lines_do(tmp_path, task_name) -> None:
    """`--format txt` stripped every line: 'cat =>  ' was trained on (JSONL) and answered as 'cat =>'."""
    from ptuning.training.predict import examples_from_records, read_records

    prompts = ["translate cat =>  ", "   q: 2+2?"]
    (tmp_path / "in.txt").write_text(f"{prompts[0]}\r\n\n{prompts[1]}\n")
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": prompt} for prompt in prompts])
    task = get_task(task_name)
    from_text = examples_from_records(task, read_records(str(tmp_path / "in.txt"), "txt"), "txt")
    from_jsonl = examples_from_records(task, read_records(str(tmp_path / "in.jsonl"), "jsonl"), "jsonl")
    assert (
        [example["prompt"] for example in from_text]
        == [example["prompt"] for example in from_jsonl]
        == prompts
    )
    # the tasks that do not generate still read a stripped text
    sst2 = examples_from_records(get_task("sst2"), read_records(str(tmp_path / "in.txt"), "txt"), "txt")
    assert [example["sentence"] for example in sst2] == ["translate cat =>", "q: 2+2?"]
