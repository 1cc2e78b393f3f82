"""The README's library example runs as written on the packaged MiniLM, and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch
from tiny_models import minilm_tokenizer_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_library_example_runs_and_prints_the_trainable_count_it_quotes(tmp_path, monkeypatch):
    minilm_tokenizer_dir()  # skips when the packaged model is not installed
    (example,) = python_blocks(README.read_text())
    quoted = re.search(r"print\(model\.trainable_parameters\(\)\)\s+# (.+)", example).group(1)
    monkeypatch.chdir(tmp_path)  # the example writes outputs/sst2-prompt
    names: dict = {}
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(compile(example, str(README), "exec"), names)

    assert printed.getvalue().strip() == quoted
    assert torch.isfinite(names["out"].loss) and names["out"].logits.shape == (2, 2)
    model, restored, batch = names["model"], names["restored"], names["batch"]
    model.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, restored(**batch).logits)
    assert restored.backbone is model.backbone  # one frozen backbone, shared
    saved = sum(f.stat().st_size for f in (tmp_path / "outputs" / "sst2-prompt").rglob("*") if f.is_file())
    assert saved < 1_000_000  # "prompt and head only: a few hundred KB"
