#!/usr/bin/env bash
# Peer comparison for the README's performance section: modelhost's packed engine in each
# precision against ONNX Runtime (fp32 and int8 exports) and sentence-transformers (fp32 and
# bf16), on the same corpus, threads and sitting, in alternating rounds; medians and ratios
# at the end ("the best peer" of a precision is the faster of ONNX Runtime and
# sentence-transformers in it).
#
# Usage: scripts/bench-compare.sh [ROUNDS=3] [N=1024]
# Needs: scripts/fetch-models.sh, and a Python with the peers (install once, ~6 GB):
#   python3 -m venv ~/.cache/modelhost-peers
#   ~/.cache/modelhost-peers/bin/pip install onnxruntime tokenizers numpy sentence-transformers
#   PYTHON=~/.cache/modelhost-peers/bin/python scripts/bench-compare.sh
# SYSTEMS=ort limits the peers to ONNX Runtime (no PyTorch needed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${1:-3}"
n="${2:-1024}"
model="$(scripts/fetch-models.sh)"
corpus="${CORPUS:-$root/../shared/data/corpus-dev.txt}"
peers="${PEERS:-$root/../shared/tools/peers.py}"
int8_onnx="${INT8_ONNX:-$root/../shared/models/all-MiniLM-L6-v2-int8.onnx}"
python="${PYTHON:-python3}"
systems="${SYSTEMS:-ort,st,st-bf16}"
export RAYON_NUM_THREADS=2
cargo build --release --example bench_embed >&2
bench="target/release/examples/bench_embed"
out="$(mktemp)"
tag() { sed "s/^{/{\"round\":$1,\"label\":\"$2\",/" | tee -a "$out" >&2; }
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  "$python" "$peers" --model "$model" --corpus "$corpus" --n "$n" --threads 2 --systems "$systems" \
    | tag "$r" peer
  if [[ ",$systems," == *",ort,"* && -f "$int8_onnx" ]]; then
    "$python" "$peers" --model "$model" --corpus "$corpus" --n "$n" --threads 2 --systems ort \
      --onnx "$int8_onnx" | tag "$r" ort-int8
  fi
  for precision in f32 bf16 int8; do
    "$bench" --model "$model" --corpus "$corpus" --n "$n" --precision "$precision" \
      --concurrency 32 --max-batch-size 32 | tag "$r" "modelhost-$precision-c32"
    "$bench" --model "$model" --corpus "$corpus" --n "$n" --precision "$precision" \
      --concurrency 1 --max-batch-size 1 | tag "$r" "modelhost-$precision-c1"
  done
  for c in 32 1; do
    MODELHOST_ISA=avx2 "$bench" --model "$model" --corpus "$corpus" --n "$n" \
      --concurrency "$c" --max-batch-size "$c" | tag "$r" "modelhost-f32-avx2-c$c"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys, collections
runs = collections.defaultdict(list)
isa = "?"
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["label"] == "peer" or d["label"] == "ort-int8":
        system = d["system"] + ("-int8" if d["label"] == "ort-int8" else "")
        key = f'{system}-b{d["batch"]}-{d["order"]}'
    else:
        key = d["label"]
        if d.get("isa") and "avx2" not in key:
            isa = d["isa"]
    runs[key].append(d["sent_per_s"])
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"modelhost ISA: {isa}\n")
print("| run | texts/s (median) | all rounds |")
print("|---|---|---|")
for k, v in sorted(runs.items()):
    print(f"| {k} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
def best(*keys):
    have = [(med[k], k) for k in keys if k in med]
    return max(have) if have else None
peers = {
    "f32": (best("onnxruntime-b32-sorted-by-length", "sentence-transformers-b32-sorted-by-length"),
            best("onnxruntime-b1-arrival", "sentence-transformers-b1-sorted-by-length")),
    "bf16": (best("sentence-transformers-bf16-b32-sorted-by-length"),
             best("sentence-transformers-bf16-b1-sorted-by-length")),
    "int8": (best("onnxruntime-int8-b32-sorted-by-length"), best("onnxruntime-int8-b1-arrival")),
}
print("\n| precision | modelhost c32 | best peer b32 | ratio | modelhost c1 | best peer b1 | ratio |")
print("|---|---|---|---|---|---|---|")
for p, (b32, b1) in peers.items():
    c32, c1 = med.get(f"modelhost-{p}-c32"), med.get(f"modelhost-{p}-c1")
    cell = lambda ours, peer: (f"{peer[0]:.1f} ({peer[1]})", f"{ours / peer[0]:.2f}") if ours and peer else ("-", "-")
    (p32, r32), (p1, r1) = cell(c32, b32), cell(c1, b1)
    print(f"| {p} | {c32 or '-'} | {p32} | {r32} | {c1 or '-'} | {p1} | {r1} |")
for c in (32, 1):
    a, b = med.get(f"modelhost-f32-avx2-c{c}"), med.get(f"modelhost-f32-c{c}")
    if a and b:
        print(f"\nf32 capped at AVX2 (MODELHOST_ISA=avx2), c{c}: {a:.1f} texts/s ({a / b:.2f}x the detected level)")
PY
