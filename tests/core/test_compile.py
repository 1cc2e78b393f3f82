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
    folds_weights,
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
    # The frozen backbone's linear weights are constants of the inference graph (Inductor's freezing): a weight
    # changed after compiling moves the eager logits, not the compiled inference ones, while the training
    # graph, which takes the weights as inputs, follows the change.
    batch = _batch(BATCHES[0], 0)
    with torch.no_grad():
        before_change = compiled.eval()(**batch, task="task").logits
        for model in (eager, compiled):
            for module in model.backbone.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.mul_(3.0)
        changed = [model.eval()(**batch, task="task").logits for model in (eager, compiled)]
    assert not torch.allclose(changed[0], before_change, atol=1e-3)
    assert torch.allclose(changed[1], before_change, atol=ATOL)
    trained = [model.train()(**batch, task="task").logits.detach() for model in (eager, compiled)]
    assert torch.allclose(trained[0], trained[1], atol=ATOL)
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


def test_only_a_frozen_unquantized_backbone_is_compiled_with_its_weights_folded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fine-tuning changes the weights an inference graph would have folded; folding an int8 backbone
    would store it dequantized. Both compile without ``freezing``, which is on only inside the frozen
    backbone's own calls."""
    from torch._inductor import config as inductor_config

    monkeypatch.setattr("ptuning.core.compilation.missing_compiler", lambda: None)

    def fake_compile(self: torch.nn.Module, **kwargs: object) -> None:  # records the setting at call time
        self._compiled_call_impl = lambda *args, **kw: inductor_config.freezing

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    frozen = PromptModel(tiny_backbone("bert"), "ptuning-v2", PrefixConfig(prefix_length=4))
    tuned = PromptModel(tiny_backbone("bert"), "finetune", PrefixConfig(prefix_length=4))
    quantized_backbone = tiny_backbone("bert")
    quantized_backbone.ptuning_quantization = "int8"  # what core.quantization marks a quantized one with
    quantized = PromptModel(quantized_backbone, "ptuning-v2", PrefixConfig(prefix_length=4))
    assert [folds_weights(m) for m in (frozen, tuned, quantized)] == [True, False, False]
    for model in (frozen, tuned, quantized):
        compile_backbone(model)
    assert [m.backbone._compiled_call_impl() for m in (frozen, tuned, quantized)] == [True, False, False]
    assert inductor_config.freezing is False  # switched on around the call only
    compile_backbone(frozen, backend="eager")  # Dynamo only: nothing to fold
    assert frozen.backbone._compiled_call_impl() is False
