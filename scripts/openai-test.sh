#!/usr/bin/env bash
# Check the server's OpenAI route (POST /v1/embeddings) with a client no one on this project
# wrote: OpenAI's official Python SDK, from PyPI, in a throwaway virtualenv. Starts
# target/release/modelhost-serve on a free loopback port against a temporary model
# repository (scripts/model-repo.sh), runs tests/openai/test_openai.py (embeddings with the
# SDK's default base64 encoding and with floats, against sentence-transformers' reference
# embeddings), then stops the server with SIGTERM and checks that it exits 0. The last line
# of the client's output is "N passed, M failed".
#
# Usage: scripts/openai-test.sh          # builds the server if it is not built
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-$root/target}/release/modelhost-serve"
cargo build --release --quiet --features server --bin modelhost-serve

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== virtualenv with openai"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check 'openai==3.57.0'

echo "== server"
scripts/model-repo.sh "$work/models" >/dev/null
"$bin" --models "$work/models" --addr 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
pid=$!
url=""
for _ in $(seq 1 600); do
  url="$(sed -n 's|^listening on http://||p' "$work/stdout")"
  [ -n "$url" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$work/stderr" >&2
    echo "the server exited before it listened" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$url" ] || { echo "the server did not listen within 60 s" >&2; exit 1; }
for _ in $(seq 1 600); do
  curl -sf "http://$url/v2/health/ready" >/dev/null && break
  sleep 0.1
done
echo "serving on $url"

echo "== openai checks"
status=0
"$work/venv/bin/python" tests/openai/test_openai.py "$url" || status=$?

echo "== SIGTERM"
kill -TERM "$pid"
if wait "$pid"; then
  echo "the server stopped cleanly"
else
  code=$?
  echo "the server exited with $code after SIGTERM" >&2
  status=1
fi
pid=""
exit "$status"
