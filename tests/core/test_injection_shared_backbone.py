"""One backbone, many prompt models (what the server does): installing injection again -- a checkpoint loaded
onto the shared backbone, another request's prefix -- never changes a forward that is already running.

The first forward is paused inside the backbone (after layer 0) on a worker thread; meanwhile the main
thread loads another checkpoint onto the same backbone and runs it with a different prefix. The paused
forward must finish bit-identical to the same forward run undisturbed.
"""

from __future__ import annotations

import threading

import pytest
import torch
from core_tiny import build, pad_id, pad_rows, random_ids
from test_checkpoint import perturb_trainables

from ptuning.core.checkpoint import load_checkpoint, save_checkpoint


def first_layer(backbone: torch.nn.Module) -> torch.nn.Module:
    encoder = getattr(backbone, "encoder", None)
    return encoder.layer[0]


@pytest.mark.parametrize("family", ["deberta-v2", "mpnet", "bert"])
def test_loading_a_checkpoint_during_a_forward_leaves_that_forward_unchanged(family: str, tmp_path) -> None:
    served = build(family, prefix_length=3)
    perturb_trainables(served.model)
    other = build(family, prefix_length=5, seed=0)  # same base weights (seed), another prompt
    perturb_trainables(other.model)
    with torch.no_grad():
        other.model.prefixes["t"].embedding.weight.mul_(-3.0)
    save_checkpoint(other.model, tmp_path / "other")

    ids, mask = pad_rows([random_ids(1, 7)[0], random_ids(1, 4, seed=2)[0]], "right", pad_id(family))
    with torch.no_grad():
        undisturbed = served.outputs(ids, mask)

    reached, release = threading.Event(), threading.Event()
    worker_ident: list[int] = []

    def pause_worker(*_):
        if threading.get_ident() in worker_ident:
            reached.set()
            assert release.wait(timeout=60)

    hook = first_layer(served.model.backbone).register_forward_hook(pause_worker)
    result: dict[str, torch.Tensor] = {}

    def run() -> None:
        worker_ident.append(threading.get_ident())
        with torch.no_grad():
            result["out"] = served.outputs(ids, mask)

    worker = threading.Thread(target=run)
    try:
        worker.start()
        assert reached.wait(timeout=60)
        loaded = load_checkpoint(tmp_path / "other", backbone=served.model.backbone)
        with torch.no_grad():
            meanwhile = loaded.encode(ids, mask, None, ["t", "t"])
    finally:
        release.set()
        worker.join(timeout=60)
        hook.remove()
    assert torch.equal(result["out"], undisturbed)
    # The concurrent request really used a different prefix on the same backbone.
    assert (meanwhile - undisturbed).abs().max() > 1e-2
    with torch.no_grad():
        assert torch.equal(served.outputs(ids, mask), undisturbed)  # and nothing stuck to the backbone


def test_installing_twice_patches_each_attention_once() -> None:
    built = build("deberta-v2")
    backbone = built.model.backbone
    forwards = [layer.attention.self.forward for layer in backbone.encoder.layer]
    model_forward = backbone.forward
    load_again = type(built.model)(backbone, "ptuning-v2")
    assert load_again.injector is not None
    assert [layer.attention.self.forward for layer in backbone.encoder.layer] == forwards
    assert backbone.forward == model_forward
