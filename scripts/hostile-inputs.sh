#!/usr/bin/env bash
# Feeds crafted hostile inputs to the image preprocessing, the embedder and the `embed`
# example, each in its own process under a 1.5 GiB address-space cap and 30 s, and checks
# that each gets the typed error (or answer) it should. Prints peak RSS and time per case.
#   scripts/hostile-inputs.sh            (needs models/ from scripts/fetch-models.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example hostile_inputs --example embed >/dev/null 2>&1 || exit 1
bin=target/release/examples/hostile_inputs
dir=${TMPDIR:-/tmp}/modelhost-hostile
"$bin" make "$dir" || exit 1
cap=$((3 << 29))
fail=0
run() { # name, expected, command...
  local name=$1 expected=$2; shift 2
  local out rc kb secs
  out=$(/usr/bin/time -o "$dir/time" -f '%M %e' prlimit --as=$cap timeout 30 "$@" 2>&1 | head -c 160)
  rc=${PIPESTATUS[0]}
  read -r kb secs < <(tail -n1 "$dir/time")
  printf '%-28s %-16s rc=%-3s peak=%5s MB  %5ss  %s\n' "$name" "$expected" "$rc" \
    "$((kb / 1024))" "$secs" "$out"
  [ "$rc" = 0 ] || fail=1
}
for case in "wide-40M.png ImageOverBudget" "tall-40M.png ok" "tall-40M-exif.png ImageOverBudget" \
            "rgba16-40M.png ImageOverBudget" "gray-6000.png ok" "rgb-8000x5000.jpg ok"; do
  set -- $case
  run "$1 ($(( $(stat -c %s "$dir/$1") / 1024 )) KB)" "$2" "$bin" image "$dir/$1" "$2"
done
run "long-8MB.txt" ok "$bin" text "$dir/long-8MB.txt" ok
run "long-8MB.txt --no-truncate" TooManyBytes "$bin" text "$dir/long-8MB.txt" TooManyBytes --no-truncate
run "word-8MB.txt" TooManyBytes "$bin" text "$dir/word-8MB.txt" TooManyBytes
run "chinese-8MB.txt" ok "$bin" text "$dir/chinese-8MB.txt" ok
run "masks-8MB.txt" ok "$bin" text "$dir/masks-8MB.txt" ok
run "accents-8MB.txt" TooManyBytes "$bin" text "$dir/accents-8MB.txt" TooManyBytes
rows=$(prlimit --as=$cap timeout 30 target/release/examples/embed --model models/all-MiniLM-L6-v2 \
  --input "$dir/not-utf8.txt" | grep -c '"error":"the line is not valid UTF-8')
run "embed not-utf8.txt" "1 error row" test "$rows" = 1
exit $fail
