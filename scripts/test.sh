#!/usr/bin/env bash
# The test command: sets up everything the suite needs, then lints and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
uv run --locked ruff check .
uv run --locked ruff format --check .
exec uv run --locked pytest "$@"
