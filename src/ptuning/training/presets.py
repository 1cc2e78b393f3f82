"""Named bundles of training options: the reference P-tuning v2 runs, and CPU-sized runs on the packaged MiniLM.

A preset is the lowest layer of a run's options: a config file overrides it, and command-line flags override
both. Reference presets copy THUDM/P-tuning-v2 ``run_script/*.sh`` (batch size, learning rate, prefix length
``pre_seq_len``, epochs, ``max_seq_length``, seed, and ``--prefix_projection`` as the prefix-mlp method);
their ``hidden_dropout_prob`` becomes our prefix and head dropout, since a backbone dropout is not an option
here. MiniLM presets are sized (sample caps, epochs, lengths) to finish in minutes on a laptop CPU; only
sst2-minilm has a measured score, the others are untuned starting points. MPNet presets are the settings the
110 M quality campaign measured over three seeds (docs/RESULTS.md, second scale point), warmup included: without
it the every-layer prefix of that backbone can collapse to chance in its first epoch. SST-2 reads the mean of the
tokens, the pooling this sentence-embedding checkpoint was trained with; CoNLL-2003 puts the prefix on the top
half of the layers only. The ``-mlp`` presets are prefix-tuning's MLP reparameterization at its own measured
rate, no warmup: on SST-2 and COPA the closest any prompt method came to fine-tuning at 110 M.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ptuning.core.config import ConfigError

REFERENCE = "THUDM/P-tuning-v2 run_script/"
CPU = "CPU-sized for the packaged all-MiniLM-L6-v2"
MPNET = "measured on the packaged all-mpnet-base-v2 (docs/RESULTS.md, second scale point)"


@dataclass(frozen=True)
class Preset:
    """A named set of TrainConfig options and where its values come from."""

    name: str
    options: dict[str, Any]  # TrainConfig field -> value; always includes ``task``
    kind: str  # "reference" (the paper's runs, large models) or "cpu" (the packaged MiniLM)
    source: str
    note: str = ""

    @property
    def task(self) -> str:
        return self.options["task"]


def _reference(
    name: str,
    task: str,
    model: str,
    script: str,
    *,
    batch_size: int,
    learning_rate: float,
    prefix_length: int,
    epochs: int,
    dropout: float = 0.1,
    max_length: int = 128,
    seed: int = 11,
    method: str = "ptuning-v2",
    note: str = "",
) -> Preset:
    options = {
        "task": task,
        "model": model,
        "method": method,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "prefix_length": prefix_length,
        "epochs": float(epochs),
        "prefix_dropout": dropout,
        "head_dropout": dropout,
        "max_length": max_length,
        "seed": seed,
    }
    return Preset(name, options, "reference", REFERENCE + script, note)


def _cpu(name: str, task: str, note: str = "", **options: Any) -> Preset:
    return Preset(name, {"task": task, "model": "minilm", **options}, "cpu", CPU, note)


def _mpnet(name: str, task: str, note: str, **options: Any) -> Preset:
    # the campaign's runs were not clipped (clipping became the default after them): the preset trains what scored
    measured = {"task": task, "model": "mpnet", "warmup_ratio": 0.1, "max_grad_norm": None}
    return Preset(name, {**measured, **options}, "cpu", MPNET, note)


_ALL = (
    # --- reference runs (large models, GPU) --------------------------------------------------------------
    _reference("boolq-bert-large", "boolq", "bert-large-cased", "run_boolq_bert.sh",
               batch_size=32, learning_rate=5e-3, prefix_length=40, epochs=100),
    _reference("boolq-roberta-large", "boolq", "roberta-large", "run_boolq_roberta.sh",
               batch_size=32, learning_rate=7e-3, prefix_length=8, epochs=100),
    _reference("copa-bert-large", "copa", "bert-large-cased", "run_copa_bert.sh",
               batch_size=16, learning_rate=1e-2, prefix_length=16, epochs=80, seed=44),
    _reference("copa-roberta-large", "copa", "roberta-large", "run_copa_roberta.sh",
               batch_size=16, learning_rate=9e-3, prefix_length=8, epochs=120),
    _reference("superglue-rte-bert-large", "superglue-rte", "bert-large-cased", "run_rte_bert.sh",
               batch_size=32, learning_rate=1e-2, prefix_length=20, epochs=60),
    _reference("superglue-rte-roberta-large", "superglue-rte", "roberta-large", "run_rte_roberta.sh",
               batch_size=32, learning_rate=5e-3, prefix_length=128, epochs=100),
    _reference("wic-bert-large", "wic", "bert-large-cased", "run_wic_bert.sh",
               batch_size=16, learning_rate=1e-4, prefix_length=20, epochs=80, seed=44, method="prefix-mlp",
               note="the script adds --prefix_projection (MLP reparameterization) and template 1"),
    _reference("wic-roberta-large", "wic", "roberta-large", "run_wic_roberta.sh",
               batch_size=32, learning_rate=1e-2, prefix_length=8, epochs=50),
    _reference("wsc-bert-large", "wsc", "bert-large-cased", "run_wsc_bert.sh",
               batch_size=16, learning_rate=5e-3, prefix_length=20, epochs=80, seed=44),
    _reference("wsc-roberta-large", "wsc", "roberta-large", "run_wsc_roberta.sh",
               batch_size=16, learning_rate=1e-2, prefix_length=8, epochs=10, seed=44),
    _reference("conll2003-roberta-large", "conll2003", "roberta-large", "run_conll03_roberta.sh",
               batch_size=16, learning_rate=3e-2, prefix_length=11, epochs=30, max_length=152),
    _reference("conll2004-bert-large", "conll2004", "bert-large-uncased", "run_conll04_bert.sh",
               batch_size=32, learning_rate=2e-2, prefix_length=128, epochs=40, dropout=0.2),
    _reference("conll2004-roberta-large", "conll2004", "roberta-large", "run_conll04_roberta.sh",
               batch_size=32, learning_rate=6e-2, prefix_length=144, epochs=80),
    _reference("ontonotes-bert-large", "ontonotes", "bert-large-uncased", "run_ontonotes_bert.sh",
               batch_size=16, learning_rate=1e-2, prefix_length=16, epochs=30),
    _reference("ontonotes-roberta-large", "ontonotes", "roberta-large", "run_ontonotes_roberta.sh",
               batch_size=16, learning_rate=7e-3, prefix_length=48, epochs=60, seed=14),
    _reference("conll2005-srl-roberta-large", "conll2005-srl", "roberta-large", "run_conll05_roberta.sh",
               batch_size=16, learning_rate=6e-3, prefix_length=224, epochs=15),
    _reference("conll2012-srl-roberta-large", "conll2012-srl", "roberta-large", "run_conll12_roberta.sh",
               batch_size=32, learning_rate=5e-3, prefix_length=64, epochs=45,
               note="run_conll12_bert.sh also loads roberta-large (bs 16, P 128); not repeated here"),
    _reference("squad-roberta-large", "squad", "roberta-large", "run_squad_roberta.sh",
               batch_size=8, learning_rate=5e-3, prefix_length=16, epochs=30, dropout=0.2, max_length=384,
               note="the script sets no max_seq_length; 384 with doc stride 128 as in the reference QA reader"),
    _reference("squad_v2-roberta-large", "squad_v2", "roberta-large", "run_squad_v2_roberta.sh",
               batch_size=8, learning_rate=5e-3, prefix_length=8, epochs=10, dropout=0.2, max_length=384,
               note="the script sets no max_seq_length; 384 with doc stride 128 as in the reference QA reader"),
    # --- CPU runs on the packaged MiniLM (6 layers x 384) ------------------------------------------------
    _cpu("sst2-minilm", "sst2", "dev accuracy 0.810 (seed 42; 0.808 +- 0.007 over 3 seeds, gradients clipped at 1.0 "
         "as by default, docs/RESULTS.md)",
         learning_rate=3e-2, prefix_length=16, epochs=3.0, batch_size=32, max_length=64,
         max_train_samples=4000, test_split="none"),
    _cpu("superglue-rte-minilm", "superglue-rte", "RTE is hard for a 22M-parameter model: expect near chance",
         learning_rate=1e-2, prefix_length=16, epochs=2.0, batch_size=16, max_length=128,
         max_train_samples=1000, test_split="none"),
    _cpu("boolq-minilm", "boolq", "no train file locally: trains on 2/3 of val.jsonl, scores the other 1/3",
         learning_rate=1e-2, prefix_length=16, epochs=1.0, batch_size=16, max_length=128,
         train_split="train-from-val", dev_split="eval-from-val", test_split="none"),
    _cpu("copa-minilm", "copa", learning_rate=1e-2, prefix_length=8, epochs=5.0, batch_size=16,
         max_length=64, test_split="none"),
    _cpu("wic-minilm", "wic", "no train file locally: trains on 2/3 of val.jsonl, scores the other 1/3",
         learning_rate=1e-2, prefix_length=8, epochs=3.0, batch_size=16, max_length=96,
         train_split="train-from-val", dev_split="eval-from-val", test_split="none"),
    _cpu("wsc-minilm", "wsc", learning_rate=1e-2, prefix_length=8, epochs=3.0, batch_size=16, max_length=96,
         test_split="none"),
    _cpu("conll2003-minilm", "conll2003", "entity F1 well below the paper's large models",
         learning_rate=3e-2, prefix_length=11, epochs=1.0, batch_size=16, max_length=128,
         max_train_samples=3000, max_eval_samples=1000, test_split="none"),
    _cpu("conll2004-minilm", "conll2004", learning_rate=3e-2, prefix_length=16, epochs=3.0, batch_size=16,
         max_length=128, test_split="none"),
    _cpu("squad-minilm", "squad", "local SQuAD 1.1 half-dev file: 18 articles train, 6 articles dev",
         learning_rate=1e-2, prefix_length=16, epochs=1.0, batch_size=16, max_length=256,
         train_split="train-articles", dev_split="eval-articles", test_split="none"),
    # --- CPU runs on the packaged MPNet (12 layers x 768), the quality campaign's measured settings ----------
    _mpnet("sst2-mpnet", "sst2",
           "dev accuracy 90.4 ± 0.7 % over seeds 42-44 (87.7 ± 0.9 with [CLS] and no warmup; mean pooling without "
           "warmup stayed at chance)",
           learning_rate=1e-2, prefix_length=16, pooling="mean", epochs=3.0, batch_size=32, max_length=64,
           max_train_samples=4000, test_split="none"),
    _mpnet("conll2004-mpnet", "conll2004",
           "test F1 74.8 ± 4.2 over seeds 42-44 (52.1 ± 41.8 without warmup: seed 44 collapsed)",
           learning_rate=3e-2, prefix_length=16, epochs=5.0, batch_size=16, max_length=128, test_split="test"),
    _mpnet("conll2003-mpnet", "conll2003",
           "test F1 84.8 ± 0.5 over seeds 42-44 on the first 1,000 test sentences (79.9 ± 3.6 with the prefix on "
           "every layer and no warmup)",
           learning_rate=3e-2, prefix_length=16, prefix_layers=list(range(6, 12)), epochs=3.0, batch_size=16,
           max_length=128, max_train_samples=3000, max_eval_samples=1000, test_split="test"),
    # The prefix through a 2-layer MLP (prefix-tuning's reparameterization), the method's own sweep, no warmup:
    # 9.9 M parameters train (8.3 %), the 0.3 M-parameter table it produces is what the checkpoint keeps.
    _mpnet("sst2-mpnet-mlp", "sst2",
           "dev accuracy 92.0 ± 0.4 % over seeds 42-44, fine-tuning 92.8 ± 0.4; lr 1e-3 and 3e-3 stayed at chance",
           method="prefix-mlp", learning_rate=3e-4, prefix_length=16, warmup_ratio=0.0, epochs=3.0,
           batch_size=32, max_length=64, max_train_samples=4000, test_split="none"),
    _mpnet("copa-mpnet-mlp", "copa",
           "dev accuracy 74.3 ± 6.0 % over seeds 42-44 (100 questions), fine-tuning 75.7 ± 1.5",
           method="prefix-mlp", learning_rate=3e-4, prefix_length=16, warmup_ratio=0.0, epochs=10.0,
           batch_size=16, max_length=64, test_split="none"),
)  # fmt: skip

PRESETS: dict[str, Preset] = {preset.name: preset for preset in _ALL}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is a ConfigError that suggests the closest one."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (`ptuning tasks` lists the presets)")
    return PRESETS[name]


def presets_for_task(task: str) -> list[Preset]:
    return [preset for preset in PRESETS.values() if preset.task == task]
