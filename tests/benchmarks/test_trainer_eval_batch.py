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
