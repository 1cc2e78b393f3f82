"""POST /tasks/{task}/generate on a tiny random GQA Llama: answers equal ``ptuning predict``, mixed tasks
share the decoding batch, limits answer 413/422/429 with JSON, streaming sends the same answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from generative_tiny import tiny_causal_lm, tiny_tokenizer, write_jsonl
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ptuning.cli import main
from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import save_checkpoint
from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel
from ptuning.generation.texts import generation_prompts
from ptuning.serve.app import create_app
from ptuning.serve.generate import GenerateRequest, GenerationLimits, prompt_token_ids
from ptuning.tasks.generative import CausalLmTask, Conll2003JsonTask, SquadGenerativeTask
from ptuning.training.predict import load_for_inference, predict

PROMPTS = ["what is the capital of france", "hello how are you", "say one two three", "red green blue cat"]
CHECKPOINTS = {"capitals": 3, "chat": 6}  # served task -> prefix length


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A folder of two causal-LM prompt checkpoints (random prefixes) over one saved tiny Llama."""
    base = tmp_path_factory.mktemp("llama")
    tiny_causal_lm("llama").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    folder = tmp_path_factory.mktemp("prompts")
    for seed, (name, length) in enumerate(CHECKPOINTS.items()):
        backbone, _ = load_backbone(str(base), causal_lm=True)
        torch.manual_seed(seed)
        model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=length, init_std=1.0))
        model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
        save_checkpoint(model, folder / name, task_names={"lm": "causal-lm"})
    return folder


def serve(root: Path, backbone_quantization: str | None = None, **limits) -> TestClient:
    base = json.loads((root / "capitals" / "prompt_config.json").read_text())["base_model"]["name_or_path"]
    return TestClient(
        create_app(
            root,
            base,
            generation_limits=GenerationLimits(**limits),
            backbone_quantization=backbone_quantization,
        )
    )


def predicted(
    root: Path, name: str, prompts: list[str], tmp_path: Path, quantization: str | None = None
) -> list[str]:
    """What ``ptuning predict`` answers for these prompts, given as text lines."""
    source, output = tmp_path / f"{name}.txt", tmp_path / f"{name}-predictions.jsonl"
    source.write_text("\n".join(prompts) + "\n")
    argv = ["predict", "--checkpoint", str(root / name), "--input", str(source), "--output", str(output)]
    assert main(argv + (["--backbone-quantization", quantization] if quantization else [])) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["prompt"] for record in records] == prompts
    return [record["prediction"] for record in records]


def test_the_predict_route_sends_a_generating_task_to_generate(root) -> None:
    response = serve(root).post("/tasks/capitals/predict", json={"input": "what is the capital of france"})
    assert response.status_code == 422
    assert response.json()["detail"] == "'capitals' generates text: POST /tasks/capitals/generate"


def test_predict_reads_prompts_from_jsonl_with_a_history_as_from_the_task_files(root, tmp_path) -> None:
    """``ptuning predict`` on JSONL inputs (a prompt, optionally a history; no response) answers as the task's
    own reader would have it, and says what it answered."""
    rows = [
        {"id": "a", "prompt": "say one two three"},
        {"prompt": "how are you", "history": [["hi", "hello"]]},
    ]
    source, output = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert (
        main(["predict", "--checkpoint", str(root / "chat"), "--input", str(source), "--output", str(output)])
        == 0
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["id"], r["prompt"], r["references"]) for r in records] == [
        ("a", "say one two three", []),
        (1, "how are you", []),
    ]
    loaded = load_for_inference(root / "chat")
    labelled = [{**row, "response": "-"} for row in rows]
    examples, _ = loaded.task.read(str(write_jsonl(tmp_path / "labelled.jsonl", labelled)), "dev")
    assert [r["prediction"] for r in records] == [r["prediction"] for r in predict(loaded, examples)]


def test_greedy_answers_equal_ptuning_predict(root, tmp_path) -> None:
    client = serve(root)
    for name in CHECKPOINTS:
        expected = predicted(root, name, PROMPTS, tmp_path)
        answers = [client.post(f"/tasks/{name}/generate", json={"prompt": p}).json() for p in PROMPTS]
        assert [a["text"] for a in answers] == expected
        assert all(a["finish_reason"] in ("eos", "length") and a["seed"] is None for a in answers)
    assert predicted(root, "capitals", PROMPTS[:1], tmp_path) != predicted(
        root, "chat", PROMPTS[:1], tmp_path
    )


def test_a_prompt_longer_than_the_checkpoints_max_length_is_cut_as_predict_cuts_it(root, tmp_path) -> None:
    long = " ".join(["what is the capital of france"] * 30)  # 180 tokens: over the checkpoints' 128
    answer = serve(root).post("/tasks/capitals/generate", json={"prompt": long}).json()
    assert answer["text"] == predicted(root, "capitals", [long], tmp_path)[0]
    assert answer["prompt_tokens"] + answer["prompt_cut_tokens"] == 180 and answer["prompt_cut_tokens"] > 0
    short = serve(root).post("/tasks/capitals/generate", json={"prompt": PROMPTS[0]}).json()
    assert short["prompt_cut_tokens"] == 0


def test_an_int8_server_generates_what_predict_generates_on_int8(root, tmp_path) -> None:
    """--backbone-quantization int8 (weight-only, CPU): the shared backbone is quantized once and both causal-LM
    checkpoints load onto it; greedy answers equal ``ptuning predict --backbone-quantization int8``'s."""
    client = serve(root, backbone_quantization="int8")
    assert client.get("/health").json()["backbone"]["quantization"] == "int8"
    for name in CHECKPOINTS:
        answers = [client.post(f"/tasks/{name}/generate", json={"prompt": p}).json()["text"] for p in PROMPTS]
        assert answers == predicted(root, name, PROMPTS, tmp_path, quantization="int8")


def test_chat_messages_are_the_prompt_with_its_history(root, tmp_path) -> None:
    client = serve(root)
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you"},
    ]
    answer = client.post("/tasks/chat/generate", json={"messages": messages, "max_new_tokens": 8}).json()
    loaded = load_for_inference(root / "chat")
    loaded.task.max_new_tokens = 8
    rows = [{"prompt": "how are you", "response": "-", "history": [["hi", "hello"]]}]
    examples, _ = loaded.task.read(str(write_jsonl(tmp_path / "chat.jsonl", rows)), "dev")
    assert answer["text"] == predict(loaded, examples)[0]["prediction"]
    bad = client.post("/tasks/chat/generate", json={"messages": messages[:2]})
    assert bad.status_code == 422 and "end with user" in bad.json()["detail"]


@pytest.mark.anyio
async def test_requests_for_different_tasks_decode_in_one_batch(root) -> None:
    app = serve(root).app
    alone = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name in CHECKPOINTS:
            for prompt in PROMPTS:
                response = await client.post(f"/tasks/{name}/generate", json={"prompt": prompt})
                alone[name, prompt] = response.json()["text"]
        assert app.state.generation.peak_rows == 1
        jobs = [(name, prompt) for prompt in PROMPTS for name in CHECKPOINTS]
        responses = await asyncio.gather(
            *(client.post(f"/tasks/{name}/generate", json={"prompt": prompt}) for name, prompt in jobs)
        )
    assert [r.json()["text"] for r in responses] == [alone[job] for job in jobs]
    assert app.state.generation.peak_rows > 2  # several tasks' sequences shared decoding steps


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"prompt": "hi \\ud800"}', "prompt"),
        (b'{"messages": [{"role": "user", "content": "x\\udfff"}]}', "messages[0].content"),
        (b'{"prompt": "hi", "stop": ["a", "\\ud800"]}', "stop[1]"),
    ],
)
def test_a_lone_surrogate_is_422_naming_its_field(root, body, field) -> None:
    """JSON can spell a lone surrogate: the tokenizer refused a prompt naming no field, and a stop string that
    could never match was accepted (200)."""
    client = serve(root)
    answer = client.post("/tasks/chat/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert f"field '{field}': not valid Unicode (a lone surrogate)" in str(answer.json()["detail"])


def test_limits_answer_with_json(root) -> None:
    client = serve(root, max_new_tokens=16, max_prompt_tokens=5, max_seconds=1e-6)
    too_many = client.post("/tasks/chat/generate", json={"prompt": "hello", "max_new_tokens": 17})
    assert too_many.status_code == 422 and "at most 16" in too_many.json()["detail"]
    too_long = client.post("/tasks/chat/generate", json={"prompt": "a b c d e f"})
    assert too_long.status_code == 413 and "6 tokens" in too_long.json()["detail"]
    timed = client.post("/tasks/chat/generate", json={"prompt": "hello"}).json()
    assert timed["finish_reason"] == "time" and timed["tokens"] == 1
    for body in (
        {"prompt": "hi", "top_p": 0},
        {"prompt": "hi", "temperature": -1},
        {"prompt": "hi", "stop": [""]},
    ):
        assert client.post("/tasks/chat/generate", json=body).status_code == 422
    for infinite in ("Infinity", "1e999"):  # sampled uniformly, ignoring the model (a 200)
        body = f'{{"prompt": "hi", "temperature": {infinite}}}'.encode()
        headers = {"content-type": "application/json"}
        assert client.post("/tasks/chat/generate", content=body, headers=headers).status_code == 422
    # every decoding step matches each stop string against the text's tail on the one model thread: 240 of
    # 4,000 characters (under the 1 MB body limit) slowed every generation on the server ~10x
    many = client.post("/tasks/chat/generate", json={"prompt": "hi", "stop": ["x"] * 17})
    assert many.status_code == 422 and many.json()["detail"] == "17 stop strings; at most 16 per request"
    long = client.post("/tasks/chat/generate", json={"prompt": "hi", "stop": ["ok", "y" * 257]})
    assert long.status_code == 422 and long.json()["detail"].startswith(
        "field 'stop[1]': a stop string of 257"
    )
    fits = {"prompt": "hi", "max_new_tokens": 2, "stop": ["y" * 256] * 16}
    assert serve(root).post("/tasks/chat/generate", json=fits).status_code == 200
    assert client.post("/tasks/nope/generate", json={"prompt": "hi"}).status_code == 404
    empty = client.post("/tasks/chat/generate", json={"prompt": ""})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]


@pytest.mark.anyio
async def test_sequences_over_the_limit_are_refused_with_429(root) -> None:
    app = serve(root, max_sequences=1).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = asyncio.create_task(
            client.post("/tasks/chat/generate", json={"prompt": "hello", "max_new_tokens": 200})
        )
        while app.state.generation.in_flight == 0:
            await asyncio.sleep(0.001)
        refused = await client.post("/tasks/capitals/generate", json={"prompt": "hello"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "limit is 1" in refused.json()["detail"]
        assert (await first).status_code == 200
        assert (await client.post("/tasks/capitals/generate", json={"prompt": "hello"})).status_code == 200


def test_streaming_sends_each_token_then_the_same_answer(root) -> None:
    client = serve(root)
    plain = client.post("/tasks/capitals/generate", json={"prompt": PROMPTS[0], "max_new_tokens": 12}).json()
    with client.stream(
        "POST", "/tasks/capitals/generate", json={"prompt": PROMPTS[0], "max_new_tokens": 12, "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    *tokens, last = events
    assert last["done"] and {k: last[k] for k in plain} == plain
    assert "".join(event["text"] for event in tokens).strip() == plain["text"]
    assert len([event for event in tokens if event["token"] is not None]) == plain["tokens"]


def test_a_seeded_sample_repeats_and_reports_its_seed(root) -> None:
    client = serve(root)
    body = {"prompt": PROMPTS[1], "temperature": 1.2, "top_p": 0.95, "seed": 5, "max_new_tokens": 10}
    first, second = (client.post("/tasks/chat/generate", json=body).json() for _ in range(2))
    assert first == second and first["seed"] == 5
    unseeded = client.post("/tasks/chat/generate", json={**body, "seed": None}).json()
    assert isinstance(unseeded["seed"], int)


@pytest.mark.parametrize("temperature", [1e-40, 1e-300])  # 1e-300 is 0 in float32: 0 / 0 was NaN, a 500
def test_a_tiny_temperature_answers_greedily_beside_a_greedy_request(root, temperature) -> None:
    client = serve(root)
    greedy = client.post("/tasks/chat/generate", json={"prompt": PROMPTS[1], "max_new_tokens": 8})
    tiny = client.post(
        "/tasks/chat/generate", json={"prompt": PROMPTS[1], "max_new_tokens": 8, "temperature": temperature}
    )
    assert greedy.status_code == tiny.status_code == 200
    assert tiny.json()["text"] == greedy.json()["text"]


def test_a_seed_torch_cannot_take_is_a_422_naming_it(root) -> None:
    """2**70 reached manual_seed inside the shared decoding step: a 500 for every sequence beside it."""
    client = serve(root)
    body = {"prompt": PROMPTS[1], "max_new_tokens": 4, "temperature": 1.0}
    refused = client.post("/tasks/chat/generate", json={**body, "seed": 2**70})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "seed"
    assert client.post("/tasks/chat/generate", json={**body, "seed": 2**64 - 1}).status_code == 200


def test_a_streamed_generation_that_fails_is_counted_as_a_failure_not_a_client_that_left(
    root, monkeypatch
) -> None:
    client = serve(root)
    service = client.app.state.generation

    def failing_step(admit, cancel):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(service, "_step", failing_step)
    with client.stream(
        "POST", "/tasks/capitals/generate", json={"prompt": "hello", "stream": True}
    ) as response:
        body = "".join(response.iter_lines())
    assert "event: error" in body and '"status": 500' in body and "failed with it" in body
    assert client.get("/metrics").json()["requests"] == {"capitals": {"500": 1}}


def test_causal_lm_checkpoints_are_listed_unloaded_and_kept_off_predict(root) -> None:
    client = serve(root)
    tasks = {task["name"]: task for task in client.get("/tasks").json()["tasks"]}
    assert tasks["chat"]["kind"] == "causal-lm" and tasks["chat"]["prefix_length"] == 6
    assert client.post("/tasks/chat/predict", json={"input": "hello"}).status_code == 422
    assert client.delete("/checkpoints/chat").status_code == 200
    assert client.post("/tasks/chat/generate", json={"prompt": "hello"}).status_code == 404
    assert client.post("/tasks/capitals/generate", json={"prompt": "hello"}).status_code == 200


def test_the_serve_command_passes_the_generation_limits(monkeypatch, tmp_path) -> None:
    import argparse

    from ptuning.serve import command

    seen = {}
    monkeypatch.setattr("ptuning.serve.app.create_app", lambda *a, **k: seen.update(k) or "app")
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    parser = argparse.ArgumentParser()
    command.add_serve_arguments(parser)
    flags = [
        "--max-new-tokens",
        "32",
        "--max-prompt-tokens",
        "100",
        "--max-sequences",
        "3",
        "--max-seconds",
        "9",
    ]
    command.run_serve(parser.parse_args(["--checkpoints", str(tmp_path), *flags]))
    assert seen["generation_limits"] == GenerationLimits(32, 100, 3, 9.0) and seen["compile"] is False
    command.run_serve(parser.parse_args(["--checkpoints", str(tmp_path), "--compile"]))
    assert seen["compile"] is True


def test_compile_is_refused_for_a_generating_backbone_before_anything_is_served(root) -> None:
    from ptuning.core.config import ConfigError

    base = json.loads((root / "capitals" / "prompt_config.json").read_text())["base_model"]["name_or_path"]
    with pytest.raises(ConfigError, match="--compile serves encoder checkpoints"):
        create_app(root, base, compile=True)


@pytest.mark.anyio
async def test_unloading_a_checkpoint_lets_its_running_generations_finish(root, tmp_path) -> None:
    app = serve(root).app
    expected = predicted(root, "chat", ["hello"], tmp_path)[0]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        running = asyncio.create_task(client.post("/tasks/chat/generate", json={"prompt": "hello"}))
        while not (app.state.generation.decoder and app.state.generation.decoder.rows):
            await asyncio.sleep(0.001)
        assert (await client.delete("/checkpoints/chat")).status_code == 200
        assert app.state.generation.in_flight == 1  # removed mid-generation (64 steps, one step per slot)
        answer = (await running).json()
        assert answer["text"] == expected  # its prefix was already in the cache
        assert (await client.post("/tasks/chat/generate", json={"prompt": "hello"})).status_code == 404


@pytest.mark.anyio
async def test_a_request_whose_task_went_away_before_it_joined_gets_503(root) -> None:
    from fastapi import HTTPException

    from ptuning.generation import SamplingParams, Sequence

    service = serve(root).app.state.generation
    queue = service.submit(Sequence([4, 5, 6], "c999_unloaded", SamplingParams(4)))
    item = await queue.get()
    assert isinstance(item, HTTPException) and item.status_code == 503 and service.in_flight == 0


def test_a_shift_mode_checkpoint_generates_what_predict_generates(root, tmp_path) -> None:
    """PEFT's numbering (every causal-LM PEFT adapter's): the server used to answer 422 "generation needs
    'keep'" where ``ptuning predict`` answered; both now number the prompt after the prefix's positions."""
    base = json.loads((root / "chat" / "prompt_config.json").read_text())["base_model"]["name_or_path"]
    backbone, _ = load_backbone(base, causal_lm=True)
    torch.manual_seed(7)
    model = PromptModel(
        backbone, "ptuning-v2", PrefixConfig(prefix_length=4, init_std=1.0, position_mode="shift")
    )
    model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    shifted = tmp_path / "served"
    save_checkpoint(model, shifted / "shifted", task_names={"lm": "causal-lm"})
    client = TestClient(create_app(shifted, base))
    answers = [client.post("/tasks/shifted/generate", json={"prompt": p}).json()["text"] for p in PROMPTS]
    assert answers == predicted(shifted, "shifted", PROMPTS, tmp_path) and any(answers)


def test_a_checkpoint_whose_task_decodes_with_generate_kwargs_is_refused_with_the_reason(
    root, tmp_path
) -> None:
    """predict decodes with the task's generate_kwargs (here a repetition penalty); the server's continuous
    decoder cannot, and answered greedy without a word. It now refuses the checkpoint at load, naming them;
    kwargs that leave decoding greedy are served."""
    base = json.loads((root / "chat" / "prompt_config.json").read_text())["base_model"]["name_or_path"]
    backbone, _ = load_backbone(base, causal_lm=True)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4))
    model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    folder = tmp_path / "served"
    for name, settings in (("penalized", {"repetition_penalty": 10.0}), ("greedy", {"num_beams": 1})):
        options = {"lm": {"generate_kwargs": settings}}
        save_checkpoint(model, folder / name, task_names={"lm": "causal-lm"}, task_options=options)
    registry = create_app(folder, base).state.registry
    assert list(registry.tasks) == ["greedy"]
    assert (
        "decodes with generate_kwargs {'repetition_penalty': 10.0}, which the server's"
        in (registry.failed["penalized"])
    )


def test_a_checkpoint_with_its_own_stop_ids_is_served_and_stops_where_predict_stops(root, tmp_path) -> None:
    """Chat models end a turn on a marker of their own: a task's ``eos_token_id`` list decodes greedy, so the
    server serves it (it refused it) and each answer ends at either id, where ``ptuning predict``'s ends."""
    base = json.loads((root / "chat" / "prompt_config.json").read_text())["base_model"]["name_or_path"]
    backbone, tokenizer = load_backbone(base, causal_lm=True)
    torch.manual_seed(0)
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=4, init_std=1.0))
    model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    folder = tmp_path / "served"
    save_checkpoint(model, folder / "plain", task_names={"lm": "causal-lm"})
    plain = predicted(folder, "plain", PROMPTS, tmp_path)
    word = next(w for text in plain for w in text.split()[1:])  # one the model says after its first word
    stops = {
        "lm": {
            "generate_kwargs": {
                "eos_token_id": [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(word)]
            }
        }
    }
    save_checkpoint(model, folder / "stopping", task_names={"lm": "causal-lm"}, task_options=stops)
    expected = predicted(folder, "stopping", PROMPTS, tmp_path)
    cut = [
        " ".join(text.split()[: text.split().index(word)] if word in text.split() else text.split())
        for text in plain
    ]
    assert expected == cut and expected != plain
    client = TestClient(create_app(folder, base))
    answers = [client.post("/tasks/stopping/generate", json={"prompt": p}).json() for p in PROMPTS]
    assert [a["text"] for a in answers] == expected
    assert "eos" in {a["finish_reason"] for a in answers}


def spaced_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny vocabulary with " " and "\\n" as tokens of their own, as a BPE tokenizer (SmolLM2's) has them."""
    vocab = tiny_tokenizer().get_vocab()
    vocab.update({" ": len(vocab), "\n": len(vocab) + 1})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.parametrize("task", [SquadGenerativeTask(), Conll2003JsonTask(), CausalLmTask()])
def test_the_server_cuts_a_long_prompt_to_the_tokens_evaluation_and_predict_decode_from(task) -> None:
    """squad-generative and conll2003-json render an empty response as a token (" ", "\\n"): the server took
    its prompt from the training input and cut one token more than evaluation and predict did."""
    tokenizer, long = spaced_tokenizer(), " ".join(["what is the capital of france"] * 10)
    empty = tokenizer(task.render_response({"response": ""}), add_special_tokens=False)["input_ids"]
    assert len(empty) == (0 if task.name == "causal-lm" else 1)
    served = SimpleNamespace(task=task, max_length=32, name=task.name)
    prompt, cut = prompt_token_ids(served, tokenizer, GenerateRequest(prompt=long))
    example = {"id": 0, "source": "x", "prompt": long, "response": "", "history": [], "references": []}
    decoded = generation_prompts(task.featurize([example], tokenizer, 32)[0])[0]
    whole = generation_prompts(task.featurize([example], tokenizer, 1 << 30)[0])[0]
    assert prompt == decoded and len(prompt) == 31  # max_length less the EOS a trained answer ends with
    assert cut == len(whole) - 31 > 0


def test_compile_is_refused_for_a_generating_checkpoint_in_predict_and_eval(root, tmp_path, capsys) -> None:
    """Decoding runs eager: --compile was accepted, printed "0 graph(s) compiled" and changed nothing."""
    source = tmp_path / "prompts.txt"
    source.write_text(PROMPTS[0] + "\n")
    data = write_jsonl(tmp_path / "dev.jsonl", [{"prompt": PROMPTS[0], "response": "paris"}])
    for argv in (
        ["predict", "--checkpoint", str(root / "capitals"), "--input", str(source), "--compile"],
        ["eval", "--checkpoint", str(root / "capitals"), "--data", str(data), "--compile"],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert "--compile runs encoder heads" in capsys.readouterr().err
