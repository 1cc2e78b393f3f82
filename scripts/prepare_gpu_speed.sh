#!/usr/bin/env bash
# Fill the git-ignored folders that benchmarks/speed_gpu.py needs on a borrowed GPU machine (which has PyTorch,
# transformers 5.17 and no network): .whl/ (Python 3.12 wheels: transformers 5.23 and PEFT 0.21.2, the versions
# the PEFT rows need, and what ptuning imports that the image lacks: pydantic, seqeval, rouge-score, nltk) and
# .gpu/ (MiniLM's tokenizer, and .gpu/sst2, a link to ../shared's SST-2 folder: a path through a link travels
# when `carry` names it, so the data is never copied into the project).
# Then one device call (docs/BENCHMARKS.md, "GPU table"): carry .whl .gpu/tokenizer .gpu/sst2/train.tsv .gpu/sst2/dev.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p .whl .gpu
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl transformers==5.23.0 peft==0.21.2 "regex>=2025.10.22" \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 nltk==3.10.4
# The task registry imports every task module, so the metrics' packages the GPU image lacks travel too; these two
# ship only as source, so they are built here into pure-Python wheels.
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w .whl seqeval==1.2.2 \
  rouge_score==0.1.2
"$PYTHON" - <<'PY'
from transformers import AutoTokenizer

from ptuning.core.backbones import resolve_model_path

AutoTokenizer.from_pretrained(resolve_model_path("minilm")).save_pretrained(".gpu/tokenizer")
PY
rm -rf .gpu/sst2
ln -s "$(cd .. && pwd)/shared/data/sst2" .gpu/sst2
ls .whl .gpu/tokenizer .gpu/sst2/
