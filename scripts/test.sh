#!/usr/bin/env bash
# The test command: set up .venv, lint, run the whole suite on the pinned (newest) transformers, the DeepSpeed
# ZeRO-3 test in its side environment, then the core, generation and interop suites again on transformers 5.23
# (before `past_key_values` -> `cache`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
LINT=(src tests benchmarks scripts)
.venv/bin/ruff check "${LINT[@]}"
.venv/bin/ruff format --check "${LINT[@]}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# SmolLM2 is converted from its GGUF once (~25 s) into this ignored folder and reused by the second run below;
# PTUNING_REQUIRE_PACKAGED turns a missing packaged model into a failure instead of a skip.
export PTUNING_CACHE="${PTUNING_CACHE:-$PWD/.cache/ptuning}" PTUNING_REQUIRE_PACKAGED=1
# torch.compile's on-disk cache in this checkout, not the machine-wide /tmp/torchinductor_$USER: its keys do not
# hold the CPU's instruction set, and a kernel cached by another CPU (or ATEN_CPU_CAPABILITY) gave NaN or aborted
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/inductor}"
# -rs: every skipped test and its reason is listed at the end (a missing ../shared/data skips the real-data tests)
.venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
# DeepSpeed ZeRO-3 (skipped above: deepspeed is not in .venv, see scripts/setup_deepspeed.sh for why)
bash scripts/setup_deepspeed.sh
.venv-deepspeed/bin/python -m pytest -q -p no:cacheprovider tests/training/test_deepspeed_zero3.py
VENV=.venv-transformers-5.23 TRANSFORMERS_VERSION=5.23.0 bash scripts/setup.sh
.venv-transformers-5.23/bin/python -m pytest -q -p no:cacheprovider tests/core tests/generative tests/generation tests/interop
