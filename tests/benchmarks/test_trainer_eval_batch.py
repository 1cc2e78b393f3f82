"""The speed benchmark gives HF Trainer.predict its fastest eval batch, never a weaker one (speed_systems.py)."""

from __future__ import annotations

from test_smoke import load_benchmark


def test_a_trainer_system_predicts_at_every_candidate_eval_batch_and_its_fastest_counts(monkeypatch):
    systems = load_benchmark("speed_systems")
    seconds = {16: 3.0, 32: 1.0, 64: 2.0}
    assert tuple(seconds) == systems.TRAINER_EVAL_BATCH_SIZES
    tried = []

    def infer_at(self, seed, size):
        tried.append(size)
        return systems.Round(seconds[size], 512, 0, [], size)

    monkeypatch.setattr(systems.PeftTrainerSystem, "_infer_at", infer_at)
    best = systems.PeftTrainerSystem.infer_round(object.__new__(systems.PeftTrainerSystem), seed=0)
    assert tried == [16, 32, 64]
    assert (best.seconds, best.eval_batch_size) == (1.0, 32)


def test_a_trainer_round_times_the_training_loop_not_the_setup_of_train(tmp_path, monkeypatch) -> None:
    """``Trainer.train()`` starts with ``accelerator.free_memory()`` (a full gc.collect, 0.2-0.3 s in the
    benchmark's process): once per run for a user, so it must not be charged to every 8-step round."""
    import time

    import torch
    from accelerate import Accelerator
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    systems = load_benchmark("speed_systems")

    def slow_free_memory(self, *objects):
        time.sleep(0.5)
        return objects

    monkeypatch.setattr(Accelerator, "free_memory", slow_free_memory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(config)
    timer = systems.loop_timer(model)
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
        save_strategy="no", disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    features = [{"input_ids": [1, 2, 3, 4], "labels": i % 2} for i in range(8)]
    trainer = Trainer(model=model, args=arguments, train_dataset=features, callbacks=[timer])
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    assert timer.seconds > 0 and wall - timer.seconds >= 0.5
