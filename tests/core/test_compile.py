"""``--compile``: a compiled backbone gives the eager outputs and prefix gradients, across batch shapes.

Compiling even a tiny model costs tens of seconds on a busy 2-core machine (Inductor writes and builds C++),
so the file compiles once: one test runs training steps and inference over batches of different lengths and
sizes. The graph-break test only traces (Dynamo, no Inductor) and takes seconds.
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import pad_rows, random_ids, tiny_backbone

from ptuning.core.compilation import (
    CompileStats,
    compile_backbone,
    is_compiled,
    missing_compiler,
    uncompile_backbone,
)
from ptuning.core.config import ConfigError, PrefixConfig
from ptuning.core.model import HeadSpec, PromptModel

ATOL = 1e-5
# (batch, lengths of its rows): consecutive batches change length and size, with and without padding
BATCHES = [[9, 4, 7], [5, 5], [12, 3, 8, 6], [6, 6, 6]]


def _pair() -> tuple[PromptModel, PromptModel]:
    """Two identical tiny BERT prompt models (every dropout 0), the second one compiled."""
    models = []
    for _ in range(2):
        backbone = tiny_backbone("bert", attn_implementation="sdpa")
        torch.manual_seed(1)
        model = PromptModel(
            backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0), head_dropout=0.0
        )
        model.add_task("task", HeadSpec("classification", ["no", "yes"]))
        models.append(model)
    models[1].load_state_dict(models[0].state_dict())
    compile_backbone(models[1])
    return models[0], models[1]


def _batch(lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    rows = [random_ids(1, length, seed=seed + i)[0] for i, length in enumerate(lengths)]
    ids, mask = pad_rows(rows, "right", 0)
    labels = torch.arange(len(lengths)) % 2
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _prefix_gradient(model: PromptModel) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.prefixes.parameters()])


@pytest.mark.skipif(missing_compiler() is not None, reason=str(missing_compiler()))
def test_compiled_backbone_equals_eager_in_training_and_inference_over_varying_shapes() -> None:
    torch._dynamo.reset()  # graphs compiled by earlier tests in this process would be reused, not counted
    eager, compiled = _pair()
    assert is_compiled(compiled) and not is_compiled(eager)
    before = CompileStats.now()
    for seed, lengths in enumerate(BATCHES):
        batch = _batch(lengths, seed * 10)
        outputs = []
        for model in (eager, compiled):
            model.train()
            model.zero_grad()
            out = model(**batch, task="task")
            out.loss.backward()
            outputs.append((out.loss.detach(), out.logits.detach(), _prefix_gradient(model)))
        (loss, logits, gradient), (loss_c, logits_c, gradient_c) = outputs
        assert torch.allclose(loss, loss_c, atol=ATOL), lengths
        assert torch.allclose(logits, logits_c, atol=ATOL), lengths
        assert gradient.abs().max() > 0
        assert torch.allclose(gradient, gradient_c, atol=ATOL), lengths
        with torch.no_grad():
            inferred = [model.eval()(**batch, task="task").logits for model in (eager, compiled)]
        assert torch.allclose(inferred[0], inferred[1], atol=ATOL), lengths
    compiled_now = CompileStats.now().since(before)
    # one graph per mode (training with grad, inference without), not one per length or batch size
    assert 1 <= compiled_now.graphs <= 3, compiled_now
    assert compiled_now.seconds > 0
    uncompile_backbone(compiled)
    assert not is_compiled(compiled)


def test_prefix_keyword_reaches_attention_without_graph_break() -> None:
    """The attention wrapper read ContextVars on every call, which Dynamo cannot trace: a graph break per
    attention call of a compiled backbone. With the prefix as a keyword it now reads none."""
    backbone = tiny_backbone("bert", attn_implementation="sdpa")
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, dropout=0.0))
    model.add_task("task", HeadSpec("classification", ["no", "yes"]))
    batch = _batch([7, 4], seed=3)
    kwargs = model._backbone_inputs(batch["input_ids"], batch["attention_mask"], None, ["task", "task"])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model.backbone)(**kwargs)
    assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_compile_without_a_cpu_compiler_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ptuning.core.compilation.shutil.which", lambda name: None)
    backbone = tiny_backbone("bert", attn_implementation="sdpa")
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4))
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        compile_backbone(model)
    assert not is_compiled(model)
    assert "g++" in missing_compiler()
