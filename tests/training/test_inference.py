"""predict_outputs (training/inference.py): token-budget batches, and outputs equal to running each input alone.

Tolerance: the tiny BERT's activations are O(1) and fp32; a row's outputs may differ from its one-row run
only by the rounding of matrix products of another shape, about 1e-6, so the bound is 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.training.inference import inference_batches, predict_outputs, token_budget_batches

ATOL = 1e-5
PAD = 0


def test_batches_are_cut_by_padded_tokens_and_by_rows():
    # longest first (ties keep their order): 1 (10), 2 (7), 3 (7), 0 (3), 4..7 (2)
    lengths = [3, 10, 7, 7, 2, 2, 2, 2]
    batches = token_budget_batches(lengths, [1] * 8, max_tokens=20, max_rows=3)
    # [1, 2]: a third row would make 3 x 10 = 30 > 20 tokens; [3, 0]: 3 x 7 = 21 > 20;
    # [4, 5, 6]: a fourth row exceeds 3 rows although 4 x 2 = 8 tokens fit
    assert batches == [[1, 2], [3, 0], [4, 5, 6], [7]]


def test_a_batch_is_cut_before_padding_passes_its_share():
    # longest first: 10, 9, 9, 5, 5; a fourth row (5) would pad 1 + 1 + 5 = 7 of 40 tokens (17.5 %)
    assert token_budget_batches([10, 9, 9, 5, 5], [1] * 5, 100, 10, max_padding_share=0.1) == [
        [0, 1, 2],
        [3, 4],
    ]
    # without a cap nothing is cut: 5 rows x 10 = 50 tokens fit the budget of 100
    assert token_budget_batches([10, 9, 9, 5, 5], [1] * 5, 100, 10) == [[0, 1, 2, 3, 4]]
    # padding counts every choice row of a multiple-choice feature: 2 x (10 - 8) of 40 tokens = 10 % passes
    assert token_budget_batches([10, 8], [2, 2], 100, 10, max_padding_share=0.1) == [[0, 1]]
    assert token_budget_batches([10, 7], [2, 2], 100, 10, max_padding_share=0.1) == [[0], [1]]


def test_an_input_longer_than_the_budget_gets_a_batch_of_its_own():
    assert token_budget_batches([50, 1, 1], [1, 1, 1], max_tokens=20, max_rows=8) == [[0], [1, 2]]


def test_multiple_choice_features_count_each_choice_as_a_row():
    # 2 choices each: 2 features are 4 rows x 5 = 20 tokens, a third would be 30
    assert token_budget_batches([5, 5, 5], [2, 2, 2], max_tokens=20, max_rows=100) == [[0, 1], [2]]


def test_off_the_cpu_a_batch_is_batch_size_rows_however_long_the_inputs():
    inputs = [{"input_ids": [5] * n} for n in (300, 2, 300, 2, 300)]
    # longest first: 0, 2, 4 (300 tokens), then 1, 3; the CPU budget of 2 x 32 tokens gives each long
    # input a batch of its own, an accelerator gets the 2 rows it asked for
    assert inference_batches(inputs, 2, "cuda") == [[0, 2], [4, 1], [3]]
    assert inference_batches(inputs, 2, "cpu") == [[0], [2], [4], [1, 3]]


def tiny_model(kind: HeadKind) -> PromptModel:
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=PAD,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    backbone = BertModel(config, add_pooling_layer=False).eval()
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.1), head_dropout=0.1)
    model.add_task("t", HeadSpec(kind, ["a", "b", "c"]))
    with torch.no_grad():  # a trained-looking prefix and head, not the near-zero initial ones
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.5)
    return model


def features(count: int, seed: int = 0) -> list[dict]:
    """``count`` inputs of lengths 1..40 (many short, a few long, as in SST-2 and CoNLL-2003)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.08, size=count), 40)
    return [{"input_ids": rng.integers(3, 100, size=int(n)).tolist()} for n in lengths]


def alone(model: PromptModel, feature: dict) -> np.ndarray:
    """The head's outputs for one input run by itself: no padding, no other rows."""
    ids = torch.tensor([feature["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), task="t").logits[0]
    return logits.float().numpy()


@pytest.mark.parametrize("kind", [HeadKind.CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION])
def test_outputs_equal_each_input_run_alone_in_feature_order(kind):
    model = tiny_model(kind)
    model.train()  # predict must switch dropout off, and give the mode back
    inputs = features(60)
    # batch_size 4: budgets of 128 padded tokens and 16 rows, so batches of 3 to 16 rows
    outputs = predict_outputs(model, "t", inputs, PAD, batch_size=4)
    assert model.training
    model.eval()
    assert len(outputs) == len(inputs)
    for feature, output in zip(inputs, outputs, strict=True):
        expected = alone(model, feature)
        assert output.shape == expected.shape  # token classification: real tokens only
        np.testing.assert_allclose(output, expected, atol=ATOL, rtol=0)
