"""Texts reach byte-level BPE tokenizers (RoBERTa, GPT-2, Llama 3) as a model read them in pretraining: tagging
and SRL words as in running text, and a pair's two texts apart where the tokenizer would glue them (decoders)."""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from ptuning.core.config import ConfigError
from ptuning.tasks.classification import PAIR_SEPARATOR, encode_pairs, joins_pairs_bare
from ptuning.tasks.pretokenized import needs_prefix_space
from ptuning.tasks.qa import SquadTask
from ptuning.tasks.srl import Conll2005SrlTask
from ptuning.tasks.tagging import Conll2003Task

CORPUS = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn rejects the call .",
    "The cat sat on the mat .",
] * 20
WORDS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]


def byte_level_bpe(
    add_prefix_space: bool = False, wrapped: bool = False, decoder: bool = False
) -> PreTrainedTokenizerFast:
    """A RoBERTa-style tokenizer trained here (no hub): byte-level BPE, <s> ... </s> around a sequence
    (``decoder``: no special tokens at all, as GPT-2's and SmolLM2's)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS, trainer)
    if not decoder:
        backend.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    if wrapped:  # Llama 3 / SmolLM2 layout: a regex split, then bytes
        byte_level = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "merged_with_next"), byte_level])
    backend.pre_tokenizer = byte_level
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tokens_of_each_word(tokenizer, feature: dict) -> list[list[str]]:
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    words: dict[int, list[str]] = {}
    for piece, word in zip(pieces, feature["word_ids"], strict=True):
        if word is not None:
            words.setdefault(word, []).append(piece)
    return [words[i] for i in sorted(words)]


def test_byte_level_tokenizers_without_a_prefix_space_are_recognized(tmp_path) -> None:
    assert needs_prefix_space(byte_level_bpe())
    assert needs_prefix_space(byte_level_bpe(wrapped=True))
    assert not needs_prefix_space(byte_level_bpe(add_prefix_space=True))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]) + "\n")
    assert not needs_prefix_space(BertTokenizerFast(str(tmp_path / "vocab.txt")))  # WordPiece marks words


@pytest.mark.parametrize("wrapped", [False, True])
def test_tagging_words_are_encoded_as_in_running_text(wrapped: bool) -> None:
    tokenizer = byte_level_bpe(wrapped=wrapped)
    example = {"id": "0", "tokens": WORDS, "tags": ["B-ORG"] + ["O"] * 8, "doc_id": None}
    features, _ = Conll2003Task().featurize([example], tokenizer, 64)
    words = tokens_of_each_word(tokenizer, features[0])
    assert words == [tokenizer.tokenize(" " + word) for word in WORDS]
    assert words[1] == ["Ġrejects"] != tokenizer.tokenize("rejects")  # what the words got before the fix
    # The same ids as the tokenizer configured the reference's way (add_prefix_space=True)
    spaced = copy.deepcopy(tokenizer)
    spaced.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    reference, _ = Conll2003Task().featurize([example], spaced, 64)
    assert features[0]["input_ids"] == reference[0]["input_ids"]
    assert features[0]["labels"] == reference[0]["labels"]


def test_srl_words_and_predicate_are_encoded_as_in_running_text() -> None:
    tokenizer = byte_level_bpe()
    example = {
        "id": "0",
        "tokens": WORDS,
        "tags": ["B-A0", "B-V"] + ["O"] * 7,
        "doc_id": None,
        "predicate_index": 1,
        "predicate": "rejects",
    }
    features, _ = Conll2005SrlTask().featurize([example], tokenizer, 64)
    pieces = tokenizer.convert_ids_to_tokens(features[0]["input_ids"])
    assert pieces[:3] == ["<s>", *tokenizer.tokenize(" EU"), "Ġrejects"][:3]
    assert pieces[-3:] == ["</s>", "Ġrejects", "</s>"]  # the predicate segment, spaced like the sentence


def test_a_decoder_tokenizer_gets_a_separator_between_the_texts_of_a_pair(tmp_path) -> None:
    decoder, encoder = byte_level_bpe(decoder=True), byte_level_bpe()
    assert joins_pairs_bare(decoder) and not joins_pairs_bare(encoder)
    pair = ("The cat sat on the mat .", "Peter Blackburn rejects the call .")
    (glued,), _ = encode_pairs(decoder, [pair], 64)
    first, second = (decoder(text, add_special_tokens=False)["input_ids"] for text in pair)
    newline = decoder(PAIR_SEPARATOR, add_special_tokens=False)["input_ids"]
    assert (
        glued["input_ids"] == first + decoder(PAIR_SEPARATOR + pair[1], add_special_tokens=False)["input_ids"]
    )
    assert glued["input_ids"][len(first) : len(first) + len(newline)] == newline
    # Cut to fit, each text loses its end: the separator stays between them.
    (cut,), (was_cut,) = encode_pairs(decoder, [pair], len(first) + 3)
    assert was_cut and cut["input_ids"][: len(first) - 2] == first[: len(first) - 2]
    assert newline[0] in cut["input_ids"][len(first) - 2 :]
    # An encoder's pair template already separates the texts: unchanged.
    (kept,), _ = encode_pairs(encoder, [pair], 64)
    assert kept["input_ids"] == encoder(*pair)["input_ids"] and len(second) > 0


def test_srl_puts_the_separator_before_a_decoders_predicate_segment() -> None:
    tokenizer = byte_level_bpe(decoder=True)
    example = {"id": "0", "tokens": WORDS, "tags": ["B-A0", "B-V"] + ["O"] * 7, "doc_id": None}
    example.update(predicate_index=1, predicate="rejects")
    features, _ = Conll2005SrlTask().featurize([example], tokenizer, 64)
    pieces = tokenizer.convert_ids_to_tokens(features[0]["input_ids"])
    newline = tokenizer.tokenize(PAIR_SEPARATOR)
    assert pieces[-1 - len(newline) :] == [*newline, "Ġrejects"]
    assert features[0]["labels"][-1 - len(newline) :] == [-100] * (1 + len(newline))  # not labelled


def test_extractive_qa_puts_the_separator_after_a_decoders_question() -> None:
    """Glued, "...mat?Peter Blackburn" would reach the model; the answer's offsets must not move."""
    decoder = byte_level_bpe(decoder=True)
    context = "Peter Blackburn rejects the call ."
    example = {
        "id": "q", "question": "Who sat on the mat?", "context": context, "is_impossible": False,
        "answers": {"text": ["Peter Blackburn"], "answer_start": [0]},
    }  # fmt: skip
    (feature,), _ = SquadTask(doc_stride=16, max_question_length=16).featurize([example], decoder, 64)
    question = decoder(example["question"] + PAIR_SEPARATOR, add_special_tokens=False)["input_ids"]
    assert feature["input_ids"][: len(question)] == question
    start, end = feature["start_positions"], feature["end_positions"]
    offsets = feature["offset_mapping"]
    assert context[offsets[start][0] : offsets[end][1]] == "Peter Blackburn"


def test_a_decoders_window_room_counts_the_separator_after_the_longest_question_allowed() -> None:
    """The room is max_length - max_question_length - the separator's tokens, whatever the questions: at the
    smallest max_length it allows, a long question cut to max_question_length still leaves doc_stride room."""
    decoder = byte_level_bpe(decoder=True)
    separator = len(decoder(PAIR_SEPARATOR, add_special_tokens=False)["input_ids"])
    context = "Peter Blackburn rejects the call . " * 10
    example = {
        "id": "q", "question": "Who sat on the mat? " * 10, "context": context, "is_impossible": False,
        "answers": {"text": ["Peter Blackburn"], "answer_start": [0]},
    }  # fmt: skip
    task = SquadTask(doc_stride=16, max_question_length=8)
    features, report = task.featurize([example], decoder, 8 + separator + 17)
    context_starts = [next(i for i, o in enumerate(f["offset_mapping"]) if o is not None) for f in features]
    assert context_starts == [8 + separator] * len(features) and report.truncated == 1  # the question was cut
    with pytest.raises(
        ConfigError,
        match=rf"16 tokens \(max_length={8 + separator + 16} - max_question_length=8 - {separator} separator "
        r"tokens - 0 special tokens\)",
    ):
        task.featurize([example], decoder, 8 + separator + 16)
