#!/usr/bin/env bash
# The main job: set up .venv, then train P-tuning v2 on the packaged all-MiniLM-L6-v2 with real SST-2
# (offline) and print the dev accuracy and where the prompt checkpoint went. Extra arguments are passed to
# `ptuning train` (e.g. --epochs 2 --max-train-samples 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DATA="${PTUNING_DATA:-../shared/data}"
.venv/bin/ptuning train --preset sst2-minilm --data "$DATA/sst2" --output-dir outputs/sst2-minilm "$@"
