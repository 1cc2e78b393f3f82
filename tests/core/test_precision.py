"""A bf16/fp16 frozen backbone under fp32 prefixes and heads (core/precision.py).

Tolerances: the tiny models' logits are below 1 in size (0.4 to 1.0 on these batches). bf16 keeps 8 mantissa
bits (relative rounding 2^-9), fp16 keeps 11; through two layers the logits then differ from fp32 by at most
about 0.009 (bf16; deberta-v2, the others 0.003-0.006) and 0.001 (fp16), so the bounds below are twice that:
0.018 and 0.002. The tiny encoders' logits move by only 0.04 without their prefix, so a looser bound (0.03
was) let a half backbone that lost its prefix pass.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from core_tiny import DECODERS, build, random_ids
from tiny_models import save_tiny_bert

from ptuning.core import precision
from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.fingerprint import base_fingerprint
from ptuning.core.heads import Head, Pooling
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

TOLERANCE = {torch.bfloat16: 0.018, torch.float16: 0.002}


def with_backbone_in(model: PromptModel, dtype: torch.dtype) -> PromptModel:
    """The same prompt model (same prefix and head weights) over a copy of the backbone stored in ``dtype``."""
    half = copy.deepcopy(model)
    half.backbone.to(dtype)
    return half


def batch(family: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = random_ids(3, 7)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # one left-padded row
    labels = ids.masked_fill(mask == 0, -100) if family in DECODERS else torch.tensor([0, 1, 1])
    return ids, mask, labels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama", "gpt2"])
def test_a_half_backbone_gives_fp32_logits_and_loss_close_to_fp32(family: str, dtype: torch.dtype) -> None:
    reference = build(family).model
    half = with_backbone_in(reference, dtype)
    ids, mask, labels = batch(family)
    expected, actual = reference(ids, mask, labels=labels), half(ids, mask, labels=labels)
    assert next(half.backbone.parameters()).dtype == dtype
    assert actual.logits.dtype == actual.loss.dtype == torch.float32
    real = mask.bool() if family in DECODERS else slice(None)
    torch.testing.assert_close(actual.logits[real], expected.logits[real], rtol=0, atol=TOLERANCE[dtype])
    torch.testing.assert_close(actual.loss, expected.loss, rtol=0, atol=TOLERANCE[dtype])
    assert not torch.equal(actual.logits, expected.logits)  # it really ran in the lower precision
    unprompted = copy.deepcopy(reference)
    unprompted.prefixes["t"].embedding.weight.data.zero_()
    moved = unprompted(ids, mask).logits[real] - expected.logits[real]  # measured 0.04 (bert) to 0.5 (llama)
    assert moved.abs().max() > 2 * TOLERANCE[dtype]  # so a half backbone that lost the prefix fails above


@pytest.mark.parametrize("method", ["prefix-mlp", "prompt-tuning"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_other_prefix_methods_run_on_a_bf16_backbone(family: str, method: str) -> None:
    reference = build(family, method=method).model
    half = with_backbone_in(reference, torch.bfloat16)
    ids, mask, labels = batch(family)
    out = half(ids, mask, labels=labels)
    out.loss.backward()
    assert out.logits.dtype == torch.float32
    real = mask.bool() if family in DECODERS else slice(None)
    expected = reference(ids, mask, labels=labels).logits
    torch.testing.assert_close(out.logits[real], expected[real], rtol=0, atol=TOLERANCE[torch.bfloat16])
    trained = [p for p in half.prefixes.parameters()]
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.abs().sum() > 0 for p in trained)


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_a_step_on_a_bf16_backbone_changes_only_the_fp32_prefix_and_head(family: str) -> None:
    model = with_backbone_in(build(family).model, torch.bfloat16).train()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    ids, mask, labels = batch(family)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # everything, as a careless loop would
    model(ids, mask, labels=labels).loss.backward()
    optimizer.step()
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert all(p.grad is None for p in model.backbone.parameters())
    trained = list(model.prefixes.parameters()) + list(model.heads.parameters())
    assert trained and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trained)
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in trained)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_loss_falls_when_training_a_prefix_on_a_bf16_backbone(family: str) -> None:
    model = with_backbone_in(build(family).model, torch.bfloat16).train()
    ids, mask, labels = batch(family)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(15):
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses


@pytest.mark.parametrize(
    "backbone_dtype, autocast_dtype",
    [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)],
    ids=["fp32-backbone+bf16-autocast", "bf16-backbone+bf16-autocast", "fp16-backbone+fp16-autocast"],
)
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_autocast_over_any_backbone_dtype_keeps_logits_and_loss_fp32(
    family: str, backbone_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    reference = build(family).model
    model = with_backbone_in(reference, backbone_dtype)
    ids, mask, labels = batch(family)
    with torch.autocast("cpu", dtype=autocast_dtype):
        out = model(ids, mask, labels=labels)
        out.loss.backward()
    assert out.logits.dtype == out.loss.dtype == torch.float32
    real = mask.bool() if family in DECODERS else slice(None)
    expected = reference(ids, mask, labels=labels).logits
    torch.testing.assert_close(out.logits[real], expected[real], rtol=0, atol=TOLERANCE[torch.bfloat16])
    assert model.prefixes["t"].embedding.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("kind", list(HeadKind.__members__.values()))
def test_every_head_kind_takes_bf16_hidden_states_and_answers_in_fp32(kind: HeadKind) -> None:
    if kind is HeadKind.CAUSAL_LM:
        pytest.skip("a causal LM's head is the backbone's own LM head")
    head = Head(kind, hidden_size=8, num_labels=3, dropout=0.0, pooling=Pooling.MEAN)
    hidden = torch.randn(4, 5, 8)
    mask = torch.ones(4, 5, dtype=torch.long)
    num_choices = 2 if kind is HeadKind.MULTIPLE_CHOICE else None
    expected = head(hidden, mask, num_choices=num_choices)
    actual = head(hidden.to(torch.bfloat16), mask, num_choices=num_choices)
    for name, value in actual.items():
        if value is not None:
            assert value.dtype == torch.float32, name
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0.03)


def test_generate_on_a_bf16_llama_follows_its_own_greedy_logits() -> None:
    reference = build("llama", config_overrides={"initializer_range": 0.3}).model
    model = with_backbone_in(reference, torch.bfloat16)
    ids = random_ids(2, 5)
    mask = torch.ones_like(ids)
    generated = model.generate(ids, mask, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, 4)
    with torch.no_grad():
        first = model(ids, mask).logits[:, -1].argmax(-1)  # the first step sees exactly the same inputs
    assert torch.equal(generated[:, 0], first)
    fp32 = reference.generate(ids, mask, max_new_tokens=4, do_sample=False)
    assert (generated == fp32).float().mean() >= 0.5  # bf16 may flip near-ties, not the whole answer


@pytest.mark.parametrize(
    "gpu_bf16, cpu_bf16, device, picked",
    [
        (True, False, "cpu", "fp32"),  # --device cpu on a bf16 GPU's machine: the CPU would only emulate it
        (False, True, "cpu", "bf16"),  # ... and a CPU with AVX512-BF16 beside an older GPU
        (True, False, "cuda", "bf16"),
        (False, True, "cuda:0", "fp32"),
        (True, False, None, "bf16"),  # no device named: the one training takes (CUDA when there is one)
    ],
)
def test_auto_backbone_dtype_asks_the_device_that_computes(
    monkeypatch, gpu_bf16: bool, cpu_bf16: bool, device: str | None, picked: str
) -> None:
    """``native_bf16`` once answered for the GPU whatever the device: ``predict --device cpu
    --backbone-dtype auto`` on a GPU machine stored the backbone in bf16 for a CPU that emulates it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: gpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.resolve_auto("auto", device) == picked
    assert precision.backbone_dtype("auto", device) is precision.BACKBONE_DTYPES[picked]


def test_load_backbone_answers_auto_for_the_device_it_loads_onto(tmp_path, monkeypatch) -> None:
    folder = save_tiny_bert(tmp_path / "tiny-bert")
    asked = []
    monkeypatch.setattr(precision, "native_bf16", lambda device=None: asked.append(device) or device is None)
    on_cpu, _ = load_backbone(folder, dtype="auto", device="cpu")
    assert asked == [torch.device("cpu")] and {p.dtype for p in on_cpu.parameters()} == {torch.float32}
    unplaced, _ = load_backbone(folder, dtype="auto")  # no device: the training rule (here: bf16)
    assert asked[-1] is None and {p.dtype for p in unplaced.parameters()} == {torch.bfloat16}


def test_load_backbone_stores_the_frozen_backbone_in_the_asked_dtype(tmp_path) -> None:
    folder = save_tiny_bert(tmp_path / "tiny-bert")
    fp32, _ = load_backbone(folder, dtype="fp32")
    bf16, _ = load_backbone(folder, dtype="bf16")
    fp16, _ = load_backbone(folder, dtype=torch.float16)
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in fp16.parameters()} == {torch.float16}
    # The fingerprint rounds its samples to bf16, so a prompt trained on an fp32 backbone loads onto its bf16
    # copy and back. An fp16 copy rounds twice (fp32 -> fp16 -> bf16), which moves about 6 % of the samples
    # by one bf16 step: its fingerprint differs and loading onto it is refused (docs/ARCHITECTURE.md).
    assert base_fingerprint(fp32) == base_fingerprint(bf16) != base_fingerprint(fp16)
    model = PromptModel(fp32, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    saved = save_checkpoint(model, tmp_path / "prompt")
    assert load_checkpoint(saved, backbone=bf16).task_prefix["t"]  # bf16: the same base
    with pytest.raises(CheckpointError, match="the backbone is stored in fp16, whose rounding changes"):
        load_checkpoint(saved, backbone=fp16)  # the refusal says why and what to do
    # the other way round: the checkpoint records the dtype it was trained on, so the refusal says it too
    on_fp16 = PromptModel(fp16, "ptuning-v2", PrefixConfig(prefix_length=2))
    on_fp16.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    saved_on_fp16 = save_checkpoint(on_fp16, tmp_path / "prompt-fp16")
    assert read_checkpoint_config(saved_on_fp16)["base_model"]["dtype"] == "fp16"
    with pytest.raises(
        CheckpointError, match=r"trained on the backbone stored in fp16.*--backbone-dtype fp16"
    ):
        load_checkpoint(saved_on_fp16, backbone=fp32)
    with pytest.raises(
        ConfigError, match=r"backbone dtype must be one of fp32, bf16, fp16, auto; got 'int4'"
    ):
        load_backbone(folder, dtype="int4")


def test_a_checkpoint_stored_in_bf16_loads_as_fp32_unless_asked(tmp_path) -> None:
    """transformers 5 loads a checkpoint in its stored dtype by default (bf16 for most LLMs); ``--backbone-dtype
    fp32``, the default of train, predict and serve, must mean fp32 all the same."""
    folder = save_tiny_bert(tmp_path / "tiny-bert")
    stored, _ = load_backbone(folder, dtype="bf16")
    stored.save_pretrained(folder)  # the weights and config.json now say bf16
    for asked in (None, "fp32"):
        loaded, _ = load_backbone(folder, dtype=asked)
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}, asked
    half, _ = load_backbone(folder, dtype="bf16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(
    "cuda, cuda_bf16, avx512_bf16, amx, picked",
    [
        (False, False, True, False, "bf16"),  # this project's CPU: AVX512-BF16, no AMX
        (False, False, False, True, "bf16"),  # AMX without the AVX512 instructions
        (False, False, False, False, "fp32"),  # bf16 would be emulated: slower than fp32
        (True, True, False, False, "bf16"),  # a GPU with bf16
        (True, False, True, True, "fp32"),  # a GPU without it: the CPU's units do not count
    ],
)
def test_auto_backbone_dtype_is_bf16_only_where_the_machine_computes_it_natively(
    monkeypatch, cuda: bool, cuda_bf16: bool, avx512_bf16: bool, amx: bool, picked: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    # torch's default counts emulated bf16 too (any CUDA GPU): auto must ask for native support only
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: cuda_bf16 or including_emulation
    )
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert precision.resolve_auto("auto") == picked
    assert precision.backbone_dtype("auto") is precision.BACKBONE_DTYPES[picked]
    assert precision.resolve_auto("fp16") == "fp16"  # a named dtype is never second-guessed


@pytest.mark.parametrize(
    ("cpu_bf16", "asked", "device", "noted"),
    [
        (False, "bf16", "cpu", True),  # emulated: said once, at load
        (False, "bf16", None, True),  # no device named and no GPU: the CPU
        (True, "bf16", "cpu", False),  # AVX512-BF16 / AMX: the fast setting, nothing to say
        (False, "auto", "cpu", False),  # auto stores fp32 there
        (False, "fp16", "cpu", False),
    ],
)
def test_a_bf16_backbone_on_a_cpu_that_emulates_bf16_is_noted(
    tmp_path, monkeypatch, cpu_bf16: bool, asked: str, device: str | None, noted: bool
) -> None:
    """On an AVX2-only CPU a bf16 backbone trained a MiniLM step 4x slower than fp32, silently, where the docs
    sell bf16 as the fast setting."""
    folder = save_tiny_bert(tmp_path / "tiny-bert")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: cpu_bf16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_backbone(folder, dtype=asked, device=device)
    notes = [w for w in caught if issubclass(w.category, precision.EmulatedPrecisionNote)]
    assert len(notes) == (1 if noted else 0)
    if noted:
        assert "--backbone-dtype auto" in str(notes[0].message)
        assert notes[0].filename == __file__  # points at the caller's line, not at ptuning's
