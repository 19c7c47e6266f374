# Shared by scripts/triton-test.sh and scripts/openai-test.sh (source it, do not run it):
# builds target/release/modelhost-serve, makes a throwaway virtualenv with the client's
# packages, starts the server on a free loopback port against a temporary model repository
# (scripts/model-repo.sh), runs the client check, then stops the server with SIGTERM and
# checks that it exits 0.
#
# Usage: run_client_check NAME "PIP PACKAGE..." CHECK_SCRIPT [ARGS...]
#   the check is run as: venv/bin/python CHECK_SCRIPT URL ARGS... ($work/models in ARGS
#   is the repository's path)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
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

run_client_check() {
  local name="$1" packages="$2"
  shift 2
  echo "== virtualenv with $name"
  python3 -m venv "$work/venv"
  # shellcheck disable=SC2086  # the packages are words
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check $packages

  echo "== server"
  scripts/model-repo.sh "$work/models" >/dev/null
  "$bin" --models "$work/models" --addr 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" &
  pid=$!
  local url=""
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

  echo "== $name checks"
  local script="$1"
  shift
  local status=0
  "$work/venv/bin/python" "$script" "$url" "$@" || status=$?

  echo "== SIGTERM"
  kill -TERM "$pid"
  if wait "$pid"; then
    echo "the server stopped cleanly"
  else
    local code=$?
    echo "the server exited with $code after SIGTERM" >&2
    status=1
  fi
  pid=""
  exit "$status"
}
