#!/usr/bin/env bash
# Attacks the encoder families from outside: writes the hostile model directories of
# scripts/make-hostile-arch.py (config numbers, model types, weights, tokenizers,
# tokenizer_config.json, inputs at the byte limits, the real all-mpnet-base-v2 when
# present), then loads and runs each in its own process (examples/hostile_arch.rs) under
# a 1.5 GB address-space cap (prlimit --as) and a 60 s timeout. A case fails on a panic
# (101), an abort or kill (>128), a timeout (124), a non-finite answer, or when it was
# expected to be refused (status 2-4) or to answer (status 0) and did not.
#
# Usage: scripts/hostile-arch.sh [DIR] [FILTER]   # Markdown table; exit 1 if any failed
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$(mktemp -d)}"
filter="${2:-.}"
mkdir -p "$dir"
cd "$root"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --example hostile_arch || exit 1
fi
bin="${HOSTILE_ARCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/examples/hostile_arch}"
python3 scripts/make-hostile-arch.py "$dir" >&2 || exit 1

failed=0
echo "| case | expected | exit | result | seconds | peak RSS (MB) |"
echo "|---|---|---|---|---|---|"
while IFS=$'\t' read -r name kind cdir args want attack; do
  [[ "$name" =~ $filter ]] || continue
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  out=$(/usr/bin/time -f '%M' -o "$dir/$name.rss" \
    timeout 60 prlimit --as=1500000000 "$bin" "$kind" "$cdir" $args 2>"$dir/$name.err")
  status=$?
  secs=$(printf '%.2f' "$(echo "$(date +%s.%N) - $start" | bc)")
  rss=$(( $(tail -1 "$dir/$name.rss" 2>/dev/null | grep -E '^[0-9]+$' || echo 0) / 1024 ))
  case "$status" in
    0) ok=$([ "$want" != refused ] && [[ "$out" != *NONFINITE* ]] && echo yes || echo no) ;;
    2|3|4) ok=$([ "$want" != ok ] && echo yes || echo no) ;;
    *) ok=no ;;
  esac
  [ "$ok" = yes ] || failed=1
  msg=$(echo "$out" | head -c 300 | tr '\n|' ' /')
  [ "$ok" = yes ] || msg="**FAILED** $msg $(tail -c 300 "$dir/$name.err" | tr '\n|' ' /')"
  echo "| \`$name\` ($attack) | $want | $status | $msg | $secs | $rss |"
done < "$dir/index.tsv"
exit $failed
