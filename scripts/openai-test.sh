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

# shellcheck source=lib/client-check.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/client-check.sh"
run_client_check openai "openai==3.57.0" tests/openai/test_openai.py
