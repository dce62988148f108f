#!/usr/bin/env bash
# The test command: sets up everything the suite needs, then lints and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
uv run --locked ruff check .
uv run --locked ruff format --check .
uv run --locked lint-imports --no-cache  # the layers: pyproject.toml, [tool.importlinter]
exec uv run --locked pytest "$@"
