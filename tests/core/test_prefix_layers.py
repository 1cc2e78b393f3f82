"""A prefix on a subset of layers: only those layers see it, and only their key/values are parameters."""

from __future__ import annotations

import pytest
import torch
from core_tiny import assert_close, build, random_ids

from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.prefix import PrefixEncoder


def layer_outputs(backbone, run) -> list[torch.Tensor]:
    """Each encoder layer's output hidden states during ``run()``."""
    captured: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in backbone.encoder.layer
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def test_only_the_chosen_layers_receive_a_prefix() -> None:
    built = build("bert", prefix_length=4, layers=(1,), init_std=1.0)
    ids = random_ids(2, 5)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        prompted = layer_outputs(built.model.backbone, lambda: built.outputs(ids, mask))
        plain = layer_outputs(built.reference_backbone, lambda: built.reference_backbone(ids, mask))
    assert_close(prompted[0], plain[0])  # layer 0 has no prefix: identical
    assert (prompted[1] - plain[1]).abs().max() > 1e-3  # layer 1 attends to its prefix


def test_each_prefix_reaches_its_own_layers_when_a_model_holds_several_subsets() -> None:
    """A batch of prefix 'u' (layer 1) on a model whose first prefix sits on layer 0: u's key/values go to layer
    1 (they were split by the first prefix's layers and landed on layer 0)."""
    built = build("bert", prefix_length=4, layers=(0,), init_std=1.0)
    model = built.model
    model.prefixes["u"] = PrefixEncoder(
        PrefixConfig(prefix_length=4, dropout=0.0, init_std=1.0, layers=(1,)), model.geometry
    ).eval()
    assert sorted(model.prefix_kv(["u"]).layers) == [1]
    ids = random_ids(2, 5)
    mask = torch.ones_like(ids)

    def run_u():
        inputs = model._backbone_inputs(ids, mask, None, ["u", "u"])
        model.backbone(**inputs)

    with torch.no_grad():
        prompted = layer_outputs(model.backbone, run_u)
        plain = layer_outputs(built.reference_backbone, lambda: built.reference_backbone(ids, mask))
    assert_close(prompted[0], plain[0])  # layer 0: u has no prefix there
    assert (prompted[1] - plain[1]).abs().max() > 1e-3


def test_a_layer_subset_trains_only_its_own_key_values() -> None:
    geometry = build("bert").model.geometry
    full = build("bert", prefix_length=4).model.prefixes["t"]
    subset = build("bert", prefix_length=4, layers=(1,)).model.prefixes["t"]
    per_layer = 4 * 2 * geometry.num_kv_heads * geometry.head_dim
    assert sum(p.numel() for p in full.parameters()) == geometry.num_layers * per_layer
    assert sum(p.numel() for p in subset.parameters()) == per_layer


@pytest.mark.parametrize(
    ("layers", "message"),
    [((), "non-empty"), ((-1,), ">= 0"), ((2,), r"include 2, but the model has 2 layers \(indices 0-1\)")],
)
def test_bad_layer_subsets_are_refused(layers: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PrefixConfig(layers=layers).resolved_layers(2)


def test_layer_subsets_are_sorted_and_deduplicated() -> None:
    assert PrefixConfig(layers=(1, 0, 1)).resolved_layers(2) == (0, 1)
