#!/usr/bin/env bash
# Lay out a model repository (ROOT/NAME/VERSION/) for modelhost-serve from the shipped
# digits models and the reference sentence embedder, as symlinks: no copies, no manifests.
#
#   minilm/1  -> models/all-MiniLM-L6-v2    (a sentence-transformers directory as it comes)
#   digits/1  -> examples/assets/digits-v1  (an MLP classifier)
#   digits/2  -> examples/assets/digits     (its successor: the highest version answers)
#
# Usage: scripts/model-repo.sh ROOT          # idempotent; fetches the embedder if needed
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: scripts/model-repo.sh ROOT}"
minilm="$("$root/scripts/fetch-models.sh")"

mkdir -p "$dest/minilm" "$dest/digits"
ln -sfn "$minilm" "$dest/minilm/1"
ln -sfn "$root/examples/assets/digits-v1" "$dest/digits/1"
ln -sfn "$root/examples/assets/digits" "$dest/digits/2"
echo "$dest"
