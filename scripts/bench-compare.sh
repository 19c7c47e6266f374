#!/usr/bin/env bash
# Peer comparison for the README's performance section: modelhost's engines and ONNX Runtime
# on the same corpus, threads and sitting; ROUNDS rounds, medians and ratios at the end.
#
# Usage: scripts/bench-compare.sh [ROUNDS=3] [N=1024]
# Needs: scripts/fetch-models.sh, and `pip install onnxruntime tokenizers numpy` for the peer.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
n="${2:-1024}"
model="$(scripts/fetch-models.sh)"
corpus="${CORPUS:-$root/../shared/data/corpus-dev.txt}"
peers="${PEERS:-$root/../shared/tools/peers.py}"
export RAYON_NUM_THREADS=2
cargo build --release --example bench_embed >&2
bench="target/release/examples/bench_embed"
out="$(mktemp)"
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  python3 "$peers" --model "$model" --corpus "$corpus" --n "$n" --threads 2 --systems ort \
    | sed "s/^{/{\"round\":$r,\"label\":\"ort\",/" | tee -a "$out" >&2
  run() {
    local label="$1"; shift
    "$bench" --model "$model" --corpus "$corpus" --n "$n" "$@" \
      | sed "s/^{/{\"round\":$r,\"label\":\"$label\",/" | tee -a "$out" >&2
  }
  run packed-c32 --engine packed --concurrency 32 --max-batch-size 32
  run packed-c1 --engine packed --concurrency 1 --max-batch-size 1
  run packed-direct32 --engine packed --direct --max-batch-size 32
  run candle-c32 --engine candle --concurrency 32 --max-batch-size 32
  run candle-c32-length --engine candle --concurrency 32 --max-batch-size 32 --grouping length
  run candle-c1 --engine candle --concurrency 1 --max-batch-size 1
done
python3 - "$out" <<'PY'
import json, statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    key = d["label"] if d["label"] != "ort" else f'ort-b{d["batch"]}-{d["order"]}'
    runs[key].append(d["sent_per_s"])
med = {k: statistics.median(v) for k, v in runs.items()}
print("| run | texts/s (median) | all rounds |")
print("|---|---|---|")
for k, v in runs.items():
    print(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
def ratio(a, b):
    if a in med and b in med:
        print(f"{a} / {b} = {med[a] / med[b]:.2f}")
print()
ratio("packed-c32", "ort-b32-sorted-by-length")
ratio("packed-c1", "ort-b1-arrival")
ratio("packed-c32", "candle-c32")
ratio("packed-c1", "candle-c1")
ratio("packed-c32", "packed-direct32")
ratio("packed-c32", "packed-c1")
ratio("candle-c32-length", "candle-c32")
PY
