#!/usr/bin/env bash
# Carry a folder too large for one device call (64 MiB each) in parts: tar | split here, one part per call
# there, kept in a store under /tmp (each call gets a fresh working tree; /tmp lives as long as the warm
# machine), then unpacked once every part has arrived. sha256sum names a damaged part. Coreutils only, so it
# runs on the device before any Python package is installed.
#   gpu_parts.sh split FOLDER PARTS_DIR MIB   here: PARTS_DIR/part-000, part-001, ... and PARTS_DIR/SHA256SUMS
#   gpu_parts.sh receive PARTS_DIR STORE      each call: move the carried parts into STORE, say what is missing
#   gpu_parts.sh join STORE PARENT            last call: check every part, unpack into PARENT/<folder>
set -euo pipefail

split_folder() {  # FOLDER PARTS_DIR MIB
  rm -rf "$2" && mkdir -p "$2"
  tar -C "$(dirname "$1")" -cf - "$(basename "$1")" | split -b "${3}M" -d -a 3 - "$2/part-"
  (cd "$2" && sha256sum part-* > SHA256SUMS)
}

check_store() {  # STORE: count the parts, name the missing ones, fail on a damaged one
  missing=$(cd "$1" && awk '{print $2}' SHA256SUMS | while read -r part; do [ -f "$part" ] || printf '%s ' "$part"; done)
  echo "$1: $(cd "$1" && ls part-* 2>/dev/null | wc -l) of $(wc -l < "$1/SHA256SUMS") parts; missing: ${missing:-none}"
  (cd "$1" && sha256sum --check --ignore-missing --quiet SHA256SUMS)  # prints "part-00N: FAILED": carry it again
}

receive() {  # PARTS_DIR STORE
  mkdir -p "$2"
  if [ -f "$2/SHA256SUMS" ] && ! cmp -s "$1/SHA256SUMS" "$2/SHA256SUMS"; then
    echo "$2 holds parts of another split: rm -rf $2 and carry every part again" >&2
    exit 1
  fi
  cp "$1/SHA256SUMS" "$2/"
  for part in "$1"/part-*; do [ ! -e "$part" ] || mv "$part" "$2/"; done
  check_store "$2"
}

join_parts() {  # STORE PARENT: unpacked beside its target first, so PARENT never holds half a folder
  check_store "$1"
  [ -z "$missing" ] || { echo "cannot join: carry $missing" >&2; exit 1; }
  mkdir -p "$2"
  staging=$(mktemp -d "$2/.unpacking.XXXXXX")
  cat "$1"/part-* | tar -x -C "$staging"
  for unpacked in "$staging"/*; do
    rm -rf "${2:?}/$(basename "$unpacked")" && mv "$unpacked" "$2/"
  done
  rmdir "$staging"
  echo "unpacked into $2"
}

case "${1:-}" in
  split) split_folder "$2" "$3" "$4" ;;
  receive) receive "$2" "$3" ;;
  join) join_parts "$2" "$3" ;;
  *) echo "usage: gpu_parts.sh split FOLDER PARTS_DIR MIB | receive PARTS_DIR STORE | join STORE PARENT" >&2; exit 2 ;;
esac
