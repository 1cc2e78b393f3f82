"""Pre-split words reach every tokenizer with the word start they have in running text: decided by encoding a
probe, so Gemma's tokenizer (spaces normalized to ``▁``, no Metaspace) gets each word after a space like
byte-level BPE, while WordPiece and Metaspace SentencePiece tokenizers keep getting the words as they are."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AlbertTokenizer,
    BertTokenizerFast,
    DebertaV2Tokenizer,
    GemmaTokenizer,
    LlamaTokenizer,
    PreTrainedTokenizerFast,
    T5Tokenizer,
    XLNetTokenizer,
)

from ptuning.tasks import pretokenized
from ptuning.tasks.pretokenized import needs_prefix_space
from ptuning.tasks.srl import Conll2005SrlTask
from ptuning.tasks.tagging import Conll2003Task

from .test_pretokenized import tokens_of_each_word

CORPUS = [
    "John Smith lives in Denver .",
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn rejects the call in Denver .",
    "The cat sat on the mat .",
] * 10
WORDS = ["John", "Smith", "lives", "in", "Denver", "."]
TAGS = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def bpe(pre_tokenizer, specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a tiny BPE trained here on CORPUS."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizer
    alphabet = (
        pre_tokenizers.ByteLevel.alphabet() if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) else []
    )
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer)
    model = json.loads(backend.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def unigram(specials: list[str], unk: str) -> list[tuple[str, float]]:
    """Vocabulary (pieces and scores) of a tiny SentencePiece Unigram trained here on CORPUS."""
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=specials, unk_token=unk, show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer)
    return [tuple(piece) for piece in json.loads(backend.to_str())["model"]["vocab"]]


def gemma_style() -> GemmaTokenizer:
    """transformers 5's GemmaTokenizer: normalizer Replace(" ", "▁"), Split(" ") pre-tokenizer, byte fallback."""
    vocab, merges = bpe(pre_tokenizers.Metaspace(), GEMMA_SPECIALS)
    return GemmaTokenizer(vocab=vocab, merges=merges)


def byte_level(add_prefix_space: bool = False, wrapped: bool = False) -> PreTrainedTokenizerFast:
    """RoBERTa-style (``<s> ... </s>``); ``wrapped``: Llama 3 / SmolLM2 layout, a split before the bytes."""
    vocab, merges = bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<s>", "</s>", "<pad>"])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    level = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    if wrapped:
        level = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "merged_with_next"), level])
    backend.pre_tokenizer = level
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def word_piece(tmp_path) -> BertTokenizerFast:
    words = sorted({word.lower() for line in CORPUS for word in line.split()})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words]) + "\n")
    return BertTokenizerFast(str(tmp_path / "vocab.txt"))


def llama2() -> LlamaTokenizer:
    vocab, merges = bpe(pre_tokenizers.Metaspace(prepend_scheme="first"), ["<unk>", "<s>", "</s>"])
    return LlamaTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def gemma() -> GemmaTokenizer:
    return gemma_style()


def test_gemma_style_words_lose_their_word_start_when_split(gemma) -> None:
    """The defect itself: without a space, each pre-split word is encoded with no ``▁``."""
    alone = gemma.convert_ids_to_tokens(
        gemma(WORDS, is_split_into_words=True, add_special_tokens=False).input_ids
    )
    assert not any(piece.startswith("▁") for piece in alone)
    assert needs_prefix_space(gemma)


def test_gemma_style_tagging_words_keep_their_word_start_and_labels_round_trip(gemma) -> None:
    task = Conll2003Task()
    example = {"id": "0", "tokens": WORDS, "tags": TAGS, "doc_id": None}
    (feature,), _ = task.featurize([example], gemma, 64)
    words = tokens_of_each_word(gemma, feature)
    assert words == [gemma.tokenize(" " + word) for word in WORDS]
    assert all(pieces[0].startswith("▁") for pieces in words)  # 6 of 6 words marked (0 of 6 before)
    assert gemma.decode(feature["input_ids"], skip_special_tokens=True) == " John Smith lives in Denver ."
    # perfect head outputs (one-hot at the labelled positions) give back the gold tags, word for word
    logits = np.zeros((len(feature["input_ids"]), len(task.label_names)))
    for position, label in enumerate(feature["labels"]):
        if label != -100:
            logits[position, label] = 1.0
    assert task.predict_tags([example], [feature], [logits]) == [TAGS]
    assert task.score([example], [feature], [logits])["f1"] == 1.0


def test_gemma_style_srl_words_and_predicate_keep_their_word_start(gemma) -> None:
    example = {"id": "0", "tokens": WORDS, "tags": ["B-A0", "I-A0", "B-V", "B-AM-LOC", "I-AM-LOC", "O"]}
    example.update(doc_id=None, predicate_index=2, predicate="lives")
    (feature,), _ = Conll2005SrlTask().featurize([example], gemma, 64)
    pieces = gemma.convert_ids_to_tokens(feature["input_ids"])
    assert tokens_of_each_word(gemma, feature) == [gemma.tokenize(" " + word) for word in WORDS]
    assert pieces[-len(gemma.tokenize(" lives")) :] == gemma.tokenize(" lives")  # the predicate segment


@pytest.mark.parametrize(
    ("kind", "build", "expected"),
    [
        ("gemma", gemma_style, True),
        ("byte-level BPE (RoBERTa)", byte_level, True),
        ("byte-level BPE after a split (Llama 3)", lambda: byte_level(wrapped=True), True),
        ("byte-level BPE, add_prefix_space", lambda: byte_level(add_prefix_space=True), False),
        ("Metaspace BPE (Llama 2)", llama2, False),
        ("Unigram (T5)", lambda: T5Tokenizer(vocab=unigram(["<pad>", "</s>", "<unk>"], "<unk>")), False),
        ("Unigram (ALBERT)", lambda: AlbertTokenizer(vocab=unigram(["<pad>", "<unk>", "[CLS]", "[SEP]"], "<unk>")), False),
        ("Unigram (DeBERTa-v2)", lambda: DebertaV2Tokenizer(vocab=unigram(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[UNK]")), False),
        ("Unigram (XLNet)", lambda: XLNetTokenizer(vocab=unigram(["<unk>", "<s>", "</s>", "<cls>", "<sep>"], "<unk>")), False),
    ],
)  # fmt: skip
def test_the_decision_by_behaviour_for_each_kind_of_tokenizer(kind: str, build, expected: bool) -> None:
    """Byte-level BPE without ``add_prefix_space`` and Gemma need the space; the others keep their words as
    they are, as the ByteLevel class check decided before; and each word is then encoded as in running text."""
    tokenizer = build()
    assert needs_prefix_space(tokenizer) is expected, kind
    words = ([" " + word for word in WORDS] if expected else WORDS)[1:]
    split = tokenizer(words, is_split_into_words=True, add_special_tokens=False).input_ids
    running = tokenizer(" " + " ".join(WORDS[1:]), add_special_tokens=False).input_ids
    assert split == running, kind


def test_word_piece_keeps_its_words(tmp_path) -> None:
    assert not needs_prefix_space(word_piece(tmp_path))


def test_the_decision_is_made_once_per_tokenizer(gemma, monkeypatch) -> None:
    probes = []
    decide = pretokenized._loses_word_starts
    monkeypatch.setattr(pretokenized, "_decisions", pretokenized.weakref.WeakKeyDictionary())
    monkeypatch.setattr(pretokenized, "_loses_word_starts", lambda t: probes.append(t) or decide(t))
    example = {"id": "0", "tokens": WORDS, "tags": TAGS, "doc_id": None}
    for _ in range(3):
        Conll2003Task().featurize([example], gemma, 64)
    other = gemma_style()
    assert needs_prefix_space(other)
    assert probes == [gemma, other]
