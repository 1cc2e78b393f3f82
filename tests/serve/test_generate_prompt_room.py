"""``POST /generate`` cuts a prompt to leave the request's max_new_tokens room in the model's positions.

The server cut a long prompt to the checkpoint's max_length itself, then answered 413 "the prompt (27 tokens)
+ max_new_tokens (8) - 1 exceed the model's 32 positions": a client could not know how much to shorten, since
the cut was the server's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from generative_tiny import tiny_causal_lm, tiny_tokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from ptuning.core.backbones import load_backbone  # noqa: E402
from ptuning.core.checkpoint import save_checkpoint  # noqa: E402
from ptuning.core.config import PrefixConfig  # noqa: E402
from ptuning.core.kinds import HeadKind  # noqa: E402
from ptuning.core.model import HeadSpec, PromptModel  # noqa: E402
from ptuning.serve.app import create_app  # noqa: E402
from ptuning.training.predict import load_for_inference, predict  # noqa: E402

LONG = " ".join(["one two three four five"] * 8)  # 40 tokens


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[TestClient, Path]:
    """A server over one causal-LM checkpoint (max_length 28, max_new_tokens 8) on a 32-position GPT-2."""
    base = tmp_path_factory.mktemp("gpt2")
    config = GPT2Config(**{**tiny_causal_lm("gpt2").config.to_dict(), "n_positions": 32})
    GPT2LMHeadModel(config).eval().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    backbone, tokenizer = load_backbone(str(base), causal_lm=True)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, init_std=1.0))
    model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    root = tmp_path_factory.mktemp("prompts")
    options = {"lm": {"max_new_tokens": 8}}
    save_checkpoint(model, root / "g", {"lm": "causal-lm"}, task_options=options, max_length=28)
    backbone, tokenizer = load_backbone(str(base), causal_lm=True)
    app = create_app(root, backbone=backbone, tokenizer=tokenizer, max_wait_ms=0)
    return TestClient(app), root / "g"


def test_a_long_prompt_is_cut_to_the_room_the_positions_leave_and_answered_as_predict(served) -> None:
    client, checkpoint = served
    answer = client.post("/tasks/g/generate", json={"prompt": LONG})
    assert answer.status_code == 200, answer.text  # the old server answered 413
    body = answer.json()
    # 32 positions - 8 new tokens + 1 = 25 prompt tokens (max_length alone would keep 27)
    assert (body["prompt_tokens"], body["prompt_cut_tokens"], body["tokens"]) == (25, 15, 8)
    loaded = load_for_inference(checkpoint)
    examples = [{"id": 0, "source": "in", "prompt": LONG, "response": "", "history": [], "references": []}]
    assert body["text"] == predict(loaded, examples)[0]["prediction"]


@pytest.mark.parametrize(("max_new_tokens", "kept"), [(4, 27), (16, 17), (32, 1)])
def test_the_cut_follows_the_requests_own_max_new_tokens(served, max_new_tokens, kept) -> None:
    """4 new tokens: max_length's 27 bind (32 - 4 + 1 = 29 would fit); 16: 17; 32: one prompt token."""
    client, _ = served
    body = client.post("/tasks/g/generate", json={"prompt": LONG, "max_new_tokens": max_new_tokens}).json()
    assert (body["prompt_tokens"], body["prompt_cut_tokens"]) == (kept, 40 - kept)


def test_a_max_new_tokens_that_leaves_no_prompt_room_is_422_naming_the_numbers(served) -> None:
    client, _ = served
    answer = client.post("/tasks/g/generate", json={"prompt": "say one two three", "max_new_tokens": 33})
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        "max_new_tokens=33 leaves no room for a prompt in the model's 32 positions; ask for at most 32"
    )
