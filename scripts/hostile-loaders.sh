#!/usr/bin/env bash
# Attacks the weight loaders from outside: writes the hostile files of tests/hostile/mod.rs
# (examples/hostile_loaders.rs), then loads each in its own process under a 1 GiB
# address-space cap (prlimit --as) and a 30 s timeout. A file passes when the loader exits
# with status 2 and the typed error expected (or loads, for the valid-but-tricky ones);
# a panic (101), an abort or kill (>128) or a timeout (124) fails it.
#
# Usage: scripts/hostile-loaders.sh [DIR]    # prints a Markdown table; exit 1 if any failed
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$(mktemp -d)}"
mkdir -p "$dir"
cd "$root"
cargo build --release --quiet --example hostile_loaders || exit 1
bin="$root/target/release/examples/hostile_loaders"
"$bin" write "$dir" > "$dir/index.tsv" || exit 1

failed=0
echo "| file | bytes | expected | exit | result | seconds | peak RSS (MB) |"
echo "|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r name size want attack; do
  start=$(date +%s.%N)
  out=$(/usr/bin/time -f '%M' -o "$dir/$name.rss" \
    timeout 30 prlimit --as=$((1 << 30)) "$bin" load "$dir/$name" 2>"$dir/$name.err")
  status=$?
  secs=$(printf '%.2f' "$(echo "$(date +%s.%N) - $start" | bc)")
  rss=$(( $(tail -1 "$dir/$name.rss" 2>/dev/null || echo 0) / 1024 ))
  kind="${out%%:*}"
  if [ "$want" = loads ]; then ok=$([ $status -eq 0 ] && echo yes || echo no)
  else ok=$([ $status -eq 2 ] && [ "$kind" = "$want" ] && echo yes || echo no); fi
  [ "$ok" = yes ] || failed=1
  result=$([ $status -eq 0 ] && echo "$out" || echo "$kind")
  [ "$ok" = yes ] || result="**FAILED** ($out $(head -c 200 "$dir/$name.err"))"
  echo "| \`$name\` | $size | $want | $status | $result | $secs | $rss |"
done < "$dir/index.tsv"
exit $failed
