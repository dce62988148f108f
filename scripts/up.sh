#!/usr/bin/env bash
# The run command: sets up a single node and runs `edgepcap up` in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh run
exec uv run --locked --no-dev edgepcap up "$@"
