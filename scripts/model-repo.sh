#!/usr/bin/env bash
# Lay out a model repository (ROOT/NAME/VERSION/) for modelhost-serve from the shipped
# digits models and the reference sentence embedder, as symlinks: no copies, no manifests.
#
#   minilm/1  -> models/all-MiniLM-L6-v2    (a sentence-transformers directory as it comes)
#   digits/1  -> examples/assets/digits-v1  (an MLP classifier)
#   digits/2  -> examples/assets/digits     (its successor: the highest version answers)
#
# With --all, also:
#   wine/1          -> examples/assets/wine (a tabular classifier)
#   digit-images/1/    the digits model's files and a modelhost.json naming the kind
#                      image-classifier (it reads PNG/JPEG files)
#
# Usage: scripts/model-repo.sh [--all] ROOT   # idempotent; fetches the embedder if needed
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
all=""
if [ "${1:-}" = "--all" ]; then all=1; shift; fi
dest="${1:?usage: scripts/model-repo.sh [--all] ROOT}"
minilm="$("$root/scripts/fetch-models.sh")"

mkdir -p "$dest/minilm" "$dest/digits"
ln -sfn "$minilm" "$dest/minilm/1"
ln -sfn "$root/examples/assets/digits-v1" "$dest/digits/1"
ln -sfn "$root/examples/assets/digits" "$dest/digits/2"
if [ -n "$all" ]; then
  mkdir -p "$dest/wine" "$dest/digit-images/1"
  ln -sfn "$root/examples/assets/wine" "$dest/wine/1"
  for f in model.json model.safetensors preprocessor_config.json; do
    ln -sfn "$root/examples/assets/digits/$f" "$dest/digit-images/1/$f"
  done
  echo '{"kind": "image-classifier"}' > "$dest/digit-images/1/modelhost.json"
fi
echo "$dest"
