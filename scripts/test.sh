#!/usr/bin/env bash
# The test command: sets up everything the suite needs, then lints and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
uv run --locked ruff check .
uv run --locked ruff format --check .
uv run --locked lint-imports --no-cache  # the layers: pyproject.toml, [tool.importlinter]

# Given test paths: one pytest, as asked.
for arg in "$@"; do
    case "$arg" in tests*) exec uv run --locked pytest "$@" ;; esac
done
# The whole suite in two halves at once: most of its time is spent waiting on servers,
# kernels and browsers, so two pytest processes keep both cores busy. The halves share
# nothing: each starts its own database servers, labs are named after their own data dirs,
# and each half has its own temporary directory.
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
kernel=(tests/agent tests/lab tests/dashboard tests/bench tests/test_extcap.py
        tests/control/test_triggers.py tests/control/samples/test_sample_captures.py
        tests/api/test_retention.py tests/test_traffic_cli.py)
ignore=()
for path in "${kernel[@]}"; do ignore+=(--ignore "$path"); done
uv run --locked pytest "$@" --basetemp "$base/kernel" "${kernel[@]}" >"$base/kernel.log" 2>&1 &
kernel_pid=$!
rest=0
uv run --locked pytest "$@" --basetemp "$base/rest" "${ignore[@]}" tests || rest=$?
kernel_rc=0
wait "$kernel_pid" || kernel_rc=$?
echo "--- the other half: ${kernel[*]}"
cat "$base/kernel.log"
exit $((rest || kernel_rc))
