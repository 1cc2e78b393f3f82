"""Session-wide tiny models, data sets and one finished run, shared by the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_tiny import (
    save_tiny_bert,
    train_args,
    uneven_sentences,
    write_conll2003,
    write_squad,
    write_sst2,
)

from ptuning.cli import main


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ddp: starts 2 processes (torchrun, gloo on CPU); under a minute")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """With BERT's usual dropout 0.1, so that resuming must restore the random state exactly."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), dropout=0.1)


@pytest.fixture(scope="session")
def tiny_bert_no_dropout(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-no-dropout"), dropout=0.0)


@pytest.fixture(scope="session")
def sst2_dir(tmp_path_factory) -> str:
    return write_sst2(tmp_path_factory.mktemp("sst2"))


@pytest.fixture(scope="session")
def conll_dir(tmp_path_factory) -> str:
    return write_conll2003(tmp_path_factory.mktemp("conll2003"))


@pytest.fixture(scope="session")
def uneven_conll_dir(tmp_path_factory) -> str:
    return write_conll2003(tmp_path_factory.mktemp("conll2003-uneven"), uneven_sentences())


@pytest.fixture(scope="session")
def squad_dir(tmp_path_factory) -> str:
    return write_squad(tmp_path_factory.mktemp("squad"))


@pytest.fixture(scope="session")
def sst2_run(tiny_bert, sst2_dir, tmp_path_factory) -> Path:
    """The output directory of a finished 2-epoch ``ptuning train`` on the tiny SST-2 set."""
    output_dir = tmp_path_factory.mktemp("runs") / "sst2"
    assert main(train_args(tiny_bert, sst2_dir, output_dir, "--epochs", "2", "--log-tensorboard")) == 0
    return output_dir
