#!/usr/bin/env bash
# Coverage-guided fuzzing of what an outsider can feed (fuzz/, cargo-fuzz): the weight
# loaders, image decoding and preprocessing, tabular rows, the server's infer request decoding
# (JSON and binary tensor data). Seeds each target's corpus from
# tests/fixtures/formats/ and fuzz/seeds/, then runs each target for SECONDS (default 10:
# a smoke run; docs/FUZZING.md records the long runs). Not wired into CI.
#
# Needs `cargo install cargo-fuzz`. The toolchain is stable: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz use the nightly-only flags it needs; `--sanitizer none` skips ASan.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-10}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(detect_and_load pickle npz gguf image tabular oip)
fixtures="$root/tests/fixtures/formats"
corpus="$root/fuzz/corpus"
export RUSTC_BOOTSTRAP=1

seed() {
  mkdir -p "$corpus"/{detect_and_load,pickle,npz,gguf,image,tabular,oip}
  cp "$root"/fuzz/seeds/image/* "$corpus/image/"
  cp "$root"/fuzz/seeds/tabular/* "$corpus/tabular/"
  # Requests as tritonclient sends them (scripts/make-oip-seeds.py wrote them).
  cp "$root"/fuzz/seeds/oip/* "$corpus/oip/"
  cp "$fixtures"/* "$corpus/detect_and_load/"
  cp "$fixtures/model.gguf" "$corpus/gguf/"
  cp "$fixtures/model.npz" "$corpus/npz/"
  python3 - "$fixtures" "$corpus" <<'PY'
import sys, zipfile, pathlib
fx, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for name in ["model.pth", "model-p4.pth", "malicious.pth"]:
    with zipfile.ZipFile(fx / name) as z:
        for e in z.namelist():
            if e.endswith("data.pkl"):
                (corpus / "pickle" / f"{name}.pkl").write_bytes(z.read(e))
(corpus / "pickle" / "malicious-p4.pkl").write_bytes((fx / "malicious-p4.pkl").read_bytes()[2:])
with zipfile.ZipFile(fx / "model.npz") as z:
    for e in z.namelist():
        (corpus / "npz" / e.replace("/", "_")).write_bytes(z.read(e))
PY
}

seed
cd "$root"
cargo fuzz build --sanitizer none -O
for t in "${targets[@]}"; do
  # Loaders must stay under 512 MB; an image may use its 512 MiB budget plus the decoder's.
  rss=1024
  [ "$t" != image ] || rss=1536
  echo "== $t ($secs s, rss limit $rss MB)"
  cargo fuzz run --sanitizer none -O "$t" "$corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb="$rss" -timeout=10 -print_final_stats=1 2>&1 |
    grep -E "^(stat::|#[0-9]+ *DONE|==|SUMMARY|Done)|artifact|panicked" || true
done
