#!/usr/bin/env bash
# Check the HTTP server with a client no one on this project wrote: NVIDIA's
# tritonclient[http], from PyPI, in a throwaway virtualenv. Starts target/release/modelhost-serve
# on a free loopback port against a temporary model repository (scripts/model-repo.sh), runs
# tests/triton/test_tritonclient.py, then stops the server with SIGTERM and checks that it
# exits 0. The last line of the client's output is "N passed, M failed".
#
# Usage: scripts/triton-test.sh          # builds the server if it is not built
set -euo pipefail

# shellcheck source=lib/client-check.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/client-check.sh"
run_client_check "tritonclient[http]" \
  "tritonclient[http]==2.73.0 numpy==2.4.6 openapi-spec-validator==0.9.0" \
  tests/triton/test_tritonclient.py "$work/models"
