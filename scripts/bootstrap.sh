#!/usr/bin/env bash
# Installs what edgepcap needs on a fresh Debian machine (root): Debian packages,
# uv, and the Python packages pinned in uv.lock. Usage: bootstrap.sh run|test|bench
set -euo pipefail
profile=${1:-run}
cd "$(dirname "$0")/.."

packages=(nftables iproute2 tcpdump)
if [ "$profile" = test ] || [ "$profile" = bench ]; then
    # netsniff-ng brings trafgen, the benchmarks' (and their tests') traffic generator.
    packages+=(tshark postgresql clickhouse-server chromium firefox-esr netsniff-ng)
    # systemd-analyze checks the reference deployment's units (deploy/).
    packages+=(systemd)
fi
if [ "$profile" = bench ]; then
    packages+=(wrk)  # the API figure's load generator
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
    echo "bootstrap: installing uv" >&2
    python3 -m pip install --quiet --root-user-action=ignore uv
fi

# Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines) every process would otherwise compile each module it imports, and an API
# worker took 2 s instead of 1 to start.
if [ "$profile" != run ]; then
    uv sync --locked --quiet --compile-bytecode
else
    uv sync --locked --quiet --no-dev --compile-bytecode
fi
uv run --locked --no-sync python -m compileall -q src bench >/dev/null

if [ "$profile" = test ]; then
    # puppeteer-core drives Debian's Firefox in the dashboard tests (no browser download).
    npm ci --prefix tests/dashboard/firefox --silent --no-audit --no-fund
fi
