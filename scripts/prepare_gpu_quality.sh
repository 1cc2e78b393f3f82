#!/usr/bin/env bash
# Fill the git-ignored folders that the MPNet quality campaign needs on a borrowed GPU machine, and print what
# each device call must carry (docs/RESULTS.md, "Before asking for the accelerator", gives their commands).
# - .whl/: the wheels ptuning needs there (scripts/prepare_gpu_speed.sh, run only if .whl/ is missing).
# - .gpu/mpnet-parts/: the cached all-mpnet-base-v2 folder as tar parts (scripts/gpu_parts.sh) that each fit one
#   call's 64 MiB with the tree, plus SHA256SUMS.
# - .gpu/data/<folder>: links to ../shared/data/<folder>; the data travels through the links when `carry`
#   names the files, it is never copied into the project (licences).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
MAX_MIB="${MAX_MIB:-56}"
LIMIT=$((64 << 20))
# The files the campaign's tasks read (benchmarks/quality_protocol.py BUDGETS): RTE train + val.jsonl (no test
# split), BoolQ val.jsonl (split 2:1 into train and eval), SQuAD part 1 (split by article).
DATA_FILES=(rte/train.jsonl rte/val.jsonl boolq/val.jsonl squad_v1.1/dev-v1.1.part1.json)

if ! compgen -G ".whl/*.whl" >/dev/null; then
  bash scripts/prepare_gpu_speed.sh
fi
MPNET=$("$PYTHON" -c 'from ptuning.core.backbones import resolve_model_path as r; print(r("mpnet"))')
bash scripts/gpu_parts.sh split "$MPNET" .gpu/mpnet-parts "$MAX_MIB"

mkdir -p .gpu/data
SHARED_DATA="$(cd .. && pwd)/shared/data"
for file in "${DATA_FILES[@]}"; do
  folder="${file%%/*}"
  rm -f ".gpu/data/$folder"
  ln -s "$SHARED_DATA/$folder" ".gpu/data/$folder"
  test -f ".gpu/data/$file" || { echo "missing $SHARED_DATA/$file" >&2; exit 1; }
done

# What travels in every call: tracked files and untracked ones git does not ignore.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
bytes() { du -cbL "$@" | tail -1 | cut -f1; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
parts=(.gpu/mpnet-parts/part-*)
last=$((${#parts[@]} - 1))
echo "the tree: $(mib "$tree") in every call; limit $(mib "$LIMIT"), at most 8 carry paths"
for i in "${!parts[@]}"; do
  carry=(.gpu/mpnet-parts/SHA256SUMS "${parts[$i]}")
  if [ "$i" -eq "$last" ]; then
    carry+=(.whl "${DATA_FILES[@]/#/.gpu/data/}")
  fi
  total=$((tree + $(bytes "${carry[@]}")))
  verdict=ok
  if [ "$total" -gt "$LIMIT" ] || [ "${#carry[@]}" -gt 8 ]; then
    verdict="TOO LARGE: run again with a smaller MAX_MIB"
  fi
  printf 'call %d carry: [%s]  (%s with the tree: %s)\n' "$((i + 1))" \
    "$(printf '"%s", ' "${carry[@]}" | sed 's/, $//')" "$(mib "$total")" "$verdict"
done
