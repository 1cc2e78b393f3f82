"""Encoder-decoder prefixes (T5, mT5, BART, mBART): Li & Liang's setting, checked against attention by hand.

Each of the three attention kinds gets its own prefix slot; the reference recomputes one module's output
from its inputs: softmax([q.Pk * s, q.k * s + bias + mask]) . [Pv, v], with zero bias on prefix columns.
"""

from __future__ import annotations

import json

import pytest
import torch
from seq2seq_tiny import EOS, PAD, SEQ2SEQ_FAMILIES, START, random_tokens, seq2seq_model, tiny_seq2seq

from ptuning.core.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.injection.base import active_prefix
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

ATOL = 1e-5


def _stacks(backbone: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    inner = getattr(backbone, "model", backbone)  # BART keeps encoder/decoder in .model, T5 on itself
    return inner.encoder, inner.decoder


def _attention_modules(backbone: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The last layer's module of each kind."""
    encoder, decoder = _stacks(backbone)
    if hasattr(encoder, "block"):  # T5 / mT5
        return {
            "encoder": encoder.block[-1].layer[0].SelfAttention,
            "decoder": decoder.block[-1].layer[0].SelfAttention,
            "cross": decoder.block[-1].layer[1].EncDecAttention,
        }
    return {
        "encoder": encoder.layers[-1].self_attn,
        "decoder": decoder.layers[-1].self_attn,
        "cross": decoder.layers[-1].encoder_attn,
    }


def _relative_bias(backbone: torch.nn.Module, kind: str, queries: int, keys: int) -> torch.Tensor | None:
    """T5's bias (shared by all layers of a stack, computed by its first layer); none for cross/BART."""
    encoder, decoder = _stacks(backbone)
    if kind == "cross" or not hasattr(encoder, "block"):
        return None
    stack = encoder if kind == "encoder" else decoder
    return stack.block[0].layer[0].SelfAttention.compute_bias(queries, keys)


def _by_hand(module, hidden, memory, prefix_keys, prefix_values, bias, causal) -> torch.Tensor:
    names = ("q", "k", "v", "o") if hasattr(module, "q") else ("q_proj", "k_proj", "v_proj", "out_proj")
    q_proj, k_proj, v_proj, o_proj = (getattr(module, name) for name in names)
    heads = prefix_keys.shape[1]

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, heads, T, head_dim)
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    query, key, value = split(q_proj(hidden)), split(k_proj(memory)), split(v_proj(memory))
    scores = query @ key.transpose(-1, -2) * module.scaling
    if bias is not None:
        scores = scores + bias
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    prefix_scores = query @ prefix_keys.transpose(-1, -2) * module.scaling  # no position: zero bias
    probabilities = torch.cat([prefix_scores, scores], dim=-1).softmax(dim=-1)
    context = probabilities @ torch.cat([prefix_values.expand(len(hidden), -1, -1, -1), value], dim=2)
    return o_proj(context.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_each_attention_kind_matches_attention_by_hand_with_its_own_prefix(
    family: str, attn_implementation: str
) -> None:
    model = seq2seq_model(family, attn_implementation)
    geometry = model.geometry
    encoder_layers, decoder_layers = geometry.encoder_layers, geometry.decoder_layers
    slots = {
        "encoder": encoder_layers - 1,
        "decoder": encoder_layers + decoder_layers - 1,
        "cross": encoder_layers + 2 * decoder_layers - 1,
    }
    modules = _attention_modules(model.backbone)
    seen: dict[str, tuple] = {}
    handles = [
        module.register_forward_hook(
            lambda m, args, kwargs, out, kind=kind: seen.__setitem__(kind, (args, kwargs, out[0])),
            with_kwargs=True,
        )
        for kind, module in modules.items()
    ]
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    with torch.no_grad():
        model(ids, torch.ones_like(ids), labels=labels)
        prefix = model.prefix_kv(["s"])
        for kind, module in modules.items():
            args, kwargs, output = seen[kind]
            hidden = args[0] if args else kwargs["hidden_states"]
            memory = kwargs.get("key_value_states")
            memory = hidden if memory is None else memory
            bias = _relative_bias(model.backbone, kind, hidden.shape[1], memory.shape[1])
            keys, values = prefix.layers[slots[kind]]
            expected = _by_hand(module, hidden, memory, keys, values, bias, causal=kind == "decoder")
            assert (output - expected).abs().max() < ATOL, kind
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_the_prefix_changes_the_output_and_each_kind_takes_its_own_slot(family: str) -> None:
    model = seq2seq_model(family)
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    with torch.no_grad():
        with_prefix = model(ids, labels=labels).logits
        plain = model.backbone(input_ids=ids, labels=labels).logits
        assert (with_prefix - plain).abs().max() > 1e-3
        # Zeroing one kind's slot (here: cross-attention of the last layer) changes the output too.
        last = model.geometry.num_layers - 1
        table = model.prefixes["s"].embedding.weight.view(3, model.geometry.num_layers, -1)
        table[:, last] = 0
        assert (model(ids, labels=labels).logits - with_prefix).abs().max() > 1e-4


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_only_the_prefix_learns_and_the_backbone_stays_bit_identical(family: str) -> None:
    model = seq2seq_model(family, "sdpa").train()
    before = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}
    prefix_before = model.prefixes["s"].embedding.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(random_tokens(2, 5), labels=random_tokens(2, 4, seed=1)).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    optimizer.step()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prefixes.s.embedding.weight"]
    assert all(torch.equal(before[n], t) for n, t in model.backbone.state_dict().items())
    assert not torch.equal(prefix_before, model.prefixes["s"].embedding.weight)


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_encoder_padding_changes_nothing(family: str) -> None:
    """Right padding for every family; left padding too for T5/mT5, whose positions are relative (BART numbers
    its learned positions from the first slot, so left padding moves its tokens with or without a prefix)."""
    model = seq2seq_model(family, "sdpa")
    long, short = random_tokens(1, 6)[0], random_tokens(1, 3, seed=2)[0]
    labels = random_tokens(2, 4, seed=1)
    sides = ("right", "left") if model.geometry.position_kind == "relative" else ("right",)
    with torch.no_grad():
        alone = model(short[None], labels=labels[1:]).logits
        for side in sides:
            padding, ones = torch.full((3,), PAD), [1] * 3
            row = torch.cat([short, padding] if side == "right" else [padding, short])
            mask = torch.tensor([[1] * 6, ones + [0] * 3 if side == "right" else [0] * 3 + ones])
            batched = model(torch.stack([long, row]), mask, labels=labels).logits
            assert (batched[1] - alone[0]).abs().max() < ATOL, side


def _greedy_by_hand(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """One full forward per new token (no cache), the prefix on all three kinds; tokens after EOS -> PAD."""
    decoder = torch.full((ids.shape[0], 1), START)
    with torch.no_grad(), active_prefix(model.prefix_kv(["s"])):
        for _ in range(steps):
            logits = model.backbone(input_ids=ids, decoder_input_ids=decoder, use_cache=False).logits
            decoder = torch.cat([decoder, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    tokens = decoder[:, 1:]
    finished = (tokens == EOS).long().cumsum(1) - (tokens == EOS).long() > 0
    return tokens.masked_fill(finished, PAD)


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_generate_with_a_dynamic_cache_equals_a_step_by_step_greedy_loop(family: str) -> None:
    model = seq2seq_model(family, "sdpa")
    ids = random_tokens(3, 5)
    generated = model.generate(ids, max_new_tokens=6, do_sample=False)
    expected = _greedy_by_hand(model, ids, 6)
    assert generated.shape[1] >= 1
    assert torch.equal(generated, expected[:, : generated.shape[1]])
    # It stopped early only because every row had ended.
    assert generated.shape[1] == 6 or bool((generated == EOS).any(dim=1).all())


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_caches_hold_real_tokens_only(family: str) -> None:
    model = seq2seq_model(family, "sdpa")
    ids, decoder = random_tokens(2, 5), random_tokens(2, 3, seed=1)
    with torch.no_grad(), active_prefix(model.prefix_kv(["s"])):
        out = model.backbone(input_ids=ids, decoder_input_ids=decoder, use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    assert cache.self_attention_cache.get_seq_length() == 3
    assert all(layer.keys.shape[2] == 5 for layer in cache.cross_attention_cache.layers)


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_save_then_load_gives_identical_logits(family: str, tmp_path) -> None:
    model = seq2seq_model(family, "sdpa")
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    with torch.no_grad():
        expected = model(ids, labels=labels).logits
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_seq2seq(family, "sdpa"))
    with torch.no_grad():
        assert torch.equal(loaded(ids, labels=labels).logits, expected)


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_eager_equals_sdpa(family: str) -> None:
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    with torch.no_grad():
        eager = seq2seq_model(family, "eager")(ids, mask, labels=labels).logits
        sdpa = seq2seq_model(family, "sdpa")(ids, mask, labels=labels).logits
    assert (eager - sdpa).abs().max() < ATOL


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_gradient_checkpointing_gives_the_same_loss_and_prefix_gradients(family: str) -> None:
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    results = []
    for checkpointed in (False, True):
        model = seq2seq_model(family, "sdpa").train()
        if checkpointed:
            model.enable_gradient_checkpointing()
        loss = model(ids, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), model.prefixes["s"].embedding.weight.grad))
    (loss, gradient), (loss_checkpointed, gradient_checkpointed) = results
    assert gradient.abs().max() > 0
    assert (loss - loss_checkpointed).abs() < ATOL
    assert (gradient - gradient_checkpointed).abs().max() < ATOL


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_mixed_prefixes_in_one_batch_equal_the_rows_alone(family: str) -> None:
    from ptuning.core.config import PrefixConfig
    from ptuning.core.prefix import PrefixEncoder

    model = seq2seq_model(family, "sdpa")
    other = PrefixEncoder(PrefixConfig(prefix_length=5), model.geometry)
    with torch.no_grad():
        other.embedding.weight.normal_(std=0.5)
    model.prefixes["u"] = other.eval()
    ids, labels = random_tokens(3, 5), random_tokens(3, 4, seed=1)
    names = ["s", "u", "s"]
    with torch.no_grad():
        mixed = model(ids, labels=labels, row_prefixes=names).logits
        for row, name in enumerate(names):
            alone = model(ids[row : row + 1], labels=labels[row : row + 1], row_prefixes=[name]).logits
            assert (mixed[row] - alone[0]).abs().max() < ATOL
        assert (mixed[0] - model(ids[:1], labels=labels[:1], row_prefixes=["u"]).logits[0]).abs().max() > 1e-3


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_generate_with_a_static_cache_equals_a_step_by_step_greedy_loop(family: str) -> None:
    model = seq2seq_model(family, "sdpa")
    ids = random_tokens(3, 5)
    generated = model.generate(ids, max_new_tokens=6, do_sample=False, cache_implementation="static")
    expected = _greedy_by_hand(model, ids, 6)
    assert torch.equal(generated, expected[:, : generated.shape[1]])


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_an_encoder_head_reads_the_prefixed_encoder_alone(family: str) -> None:
    from ptuning.core.config import PrefixConfig
    from ptuning.core.heads import Pooling
    from ptuning.core.model import HeadSpec, PromptModel

    backbone = tiny_seq2seq(family, "sdpa")
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=3, dropout=0.0))
    model.add_task("c", HeadSpec("classification", ["no", "yes"]))
    model.eval()
    assert model.heads["c"].pooling is Pooling.MEAN  # no [CLS] token in T5 / BART encoders
    ids = random_tokens(2, 5)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    with torch.no_grad():
        model.prefixes["c"].embedding.weight.normal_(std=0.5)
        hidden = model.encode(ids, mask, None, ["c", "c"])
        plain = backbone.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model.encode(ids[1:, :3], None, None, ["c"])
    assert (hidden - plain).abs().max() > 1e-3  # the encoder's prefix slots are used
    assert (hidden[1, :3] - alone[0]).abs().max() < ATOL  # right padding changes nothing
    model.train()
    loss = model(ids, mask, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert model.prefixes["c"].embedding.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in backbone.parameters())


@pytest.mark.parametrize(
    ("family", "slots"), [("t5", (3, 2)), ("mt5", (3, 2)), ("bart", (2, 2)), ("mbart", (2, 2))]
)
def test_geometry_counts_one_prefix_slot_per_attention_module(family: str, slots: tuple[int, int]) -> None:
    geometry = seq2seq_model(family).geometry
    encoder_layers, decoder_layers = slots
    assert (geometry.encoder_layers, geometry.decoder_layers) == slots
    assert geometry.num_layers == encoder_layers + 2 * decoder_layers
    assert geometry.is_encoder_decoder and not geometry.is_decoder  # heads pool like an encoder's
    assert geometry.position_kind == ("relative" if "t5" in family else "absolute")


class IdsTokenizer:
    """What generate_texts needs of a tokenizer; decode returns the ids as text."""

    eos_token_id, pad_token_id = 10_000, 0  # never generated: every row runs all its tokens

    def decode(self, ids, skip_special_tokens):
        return " ".join(map(str, ids))


def test_an_encoder_decoder_numbers_prompt_and_answer_apart_when_checking_positions() -> None:
    """BART (64 positions here): a 60-token prompt and 10 new tokens fit (encoder 60, decoder 11); the check
    added them up as a causal LM's, and evaluation refused what generate ran."""
    from ptuning.core.config import ConfigError
    from ptuning.generation import generate_texts

    model = seq2seq_model("bart")
    (text,) = generate_texts(model, IdsTokenizer(), [list(range(3, 63))], 1, 10, task="s")
    assert len(text.split()) == 10
    with pytest.raises(ConfigError, match="longest prompt \\(65 tokens\\)"):
        generate_texts(model, IdsTokenizer(), [list(range(3, 68))], 1, 10, task="s")


def test_an_encoder_decoder_s_forced_bos_does_not_start_the_evaluated_answers() -> None:
    """BART's generation_config forces <s> first, which its training targets (response + EOS) never start with:
    evaluation and predict decode with the token ids only, not the shipped processors."""
    from ptuning.generation import generate_texts

    model = seq2seq_model("bart")
    prompts = [[4, 5, 6, 7, 8], [9, 10], [11, 12, 13]]
    plain = generate_texts(model, IdsTokenizer(), prompts, 2, 5, task="s")
    model.backbone.generation_config.forced_bos_token_id = 7
    assert generate_texts(model, IdsTokenizer(), prompts, 2, 5, task="s") == plain
    assert model.backbone.generation_config.forced_bos_token_id == 7  # put back afterwards
    assert not any(text.startswith("7 ") for text in plain)


@pytest.mark.parametrize("family", SEQ2SEQ_FAMILIES)
def test_shift_mode_is_refused_where_the_model_numbers_its_own_positions(family: str) -> None:
    """Their forward takes no position_ids: 'shift' changed nothing yet was counted against BART's table."""
    with pytest.raises(ConfigError, match="numbers its positions itself .* use position_mode 'keep'"):
        PromptModel(tiny_seq2seq(family), "ptuning-v2", PrefixConfig(prefix_length=3, position_mode="shift"))
    model = PromptModel(tiny_seq2seq(family), "ptuning-v2", PrefixConfig(prefix_length=3))
    model.prefix_config = PrefixConfig(prefix_length=3, position_mode="shift")  # a task's prefix added later
    with pytest.raises(ConfigError, match="numbers its positions itself"):
        model.add_task("s", HeadSpec(HeadKind.SEQ2SEQ_LM))


def test_a_shift_checkpoint_saved_before_the_refusal_loads_as_the_keep_it_computed(tmp_path) -> None:
    model = seq2seq_model("bart")
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    with torch.no_grad():
        expected = model(ids, labels=labels).logits
    save_checkpoint(model, tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["prefix"]["position_mode"] = "shift"  # as such a run recorded it
    config_path.write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path / "ckpt", backbone=tiny_seq2seq("bart"))
    assert loaded.prefix_config.position_mode == "keep" and loaded.prefix_positions == 0
    with torch.no_grad():
        assert torch.equal(loaded(ids, labels=labels).logits, expected)
