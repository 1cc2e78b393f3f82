"""A PEFT adapter folder is accepted wherever a checkpoint is: predict, serve, --init-prefix-from."""

from __future__ import annotations

import json
import shutil
import warnings

import httpx
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import save_tiny_bert

from ptuning.cli import main
from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.interop.peft_export import export_peft
from ptuning.serve.app import create_app
from ptuning.training.engine import init_prefix

from .peft_fixtures import adapter_dir, fixture_backbone

LABELS = ["O", "B-PER", "I-PER"]
SENTENCES = ["John Smith flew to Berlin", "Anna met Tim Cook on Monday"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny BERT whose config names the NER labels, a shift-mode NER checkpoint, and its PEFT export."""
    root = tmp_path_factory.mktemp("peft-wiring")
    base_dir = save_tiny_bert(root / "base")
    config_path = root / "base" / "config.json"
    config = json.loads(config_path.read_text())
    config["id2label"] = dict(enumerate(LABELS))  # PEFT's format has no label names: the base's config does
    config["label2id"] = {label: i for i, label in enumerate(LABELS)}
    config_path.write_text(json.dumps(config))
    backbone, _ = load_backbone(base_dir)
    torch.manual_seed(0)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(4, dropout=0.0, position_mode="shift"), 0.0)
    model.add_task("ner", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, LABELS))
    with torch.no_grad():
        model.heads["ner"].linear.bias.normal_()
    served = root / "served"
    checkpoint = save_checkpoint(model, served / "native", {"ner": "ner-generic"})
    export_peft(checkpoint, served / "peftner")
    return {"base": base_dir, "native": checkpoint, "adapter": served / "peftner", "served": served}


def _predict(checkpoint, input_file, capsys) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(input_file)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_reads_an_adapter_folder_like_the_checkpoint_it_came_from(folders, tmp_path, capsys) -> None:
    input_file = tmp_path / "sentences.txt"
    input_file.write_text("\n".join(SENTENCES) + "\n")
    from_adapter = _predict(folders["adapter"], input_file, capsys)
    assert from_adapter == _predict(folders["native"], input_file, capsys)
    assert len(from_adapter) == 2 and len(from_adapter[0]["tags"]) == 5


@pytest.mark.anyio
async def test_the_server_serves_an_adapter_folder_beside_checkpoints(folders) -> None:
    backbone, tokenizer = load_backbone(folders["base"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = create_app(folders["served"], backbone=backbone, tokenizer=tokenizer, max_wait_ms=10)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        names = [task["name"] for task in (await http.get("/tasks")).json()["tasks"]]
        answers = {
            name: (await http.post(f"/tasks/{name}/predict", json={"inputs": SENTENCES})).json()
            for name in ("native", "peftner")
        }
    assert sorted(names) == ["native", "peftner"]
    assert answers["peftner"]["predictions"] == answers["native"]["predictions"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_init_prefix_from_takes_the_prefix_of_an_adapter_whose_head_cannot_map(tmp_path) -> None:
    model = PromptModel(fixture_backbone("bert-seq-cls"), "ptuning-v2", PrefixConfig(prefix_length=3))
    model.add_task("sst2", HeadSpec(HeadKind.CLASSIFICATION, ["negative", "positive"]))
    folder = tmp_path / "adapter"
    shutil.copytree(adapter_dir("bert-seq-cls"), folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_prefix(model, "sst2", str(folder))
    table = load_file(str(folder / "adapter_model.safetensors"))["prompt_embeddings"]
    assert torch.equal(model.prefixes["sst2"].embedding.weight.detach(), table)


def _eval(checkpoint, data_dir, capsys) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(data_dir), "--split", "dev"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_scores_an_adapter_folder_like_the_checkpoint_it_came_from(folders, tmp_path, capsys) -> None:
    lines = ["John B-PER", "Smith I-PER", "flew O", "home O", "", "Anna B-PER", "slept O", ""]
    (tmp_path / "dev.txt").write_text("\n".join(lines) + "\n")
    from_adapter = _eval(folders["adapter"], tmp_path, capsys)
    assert from_adapter == _eval(folders["native"], tmp_path, capsys)
    assert "f1" in from_adapter
