"""`/metrics` over HTTP against a real server: machines, sampler counters, the collector."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.support.processes import EDGEPCAP, free_port
from tests.support.servers import new_account, start_server, stop_server

TOKEN = "operator-token-for-tests-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def metric(text: str, name: str) -> int:
    found = re.search(rf"^{re.escape(name)} (\d+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics:\n{text}"
    return int(found.group(1))


def test_startup_objects_are_frozen_and_collections_are_counted(tmp_path):
    server = start_server(tmp_path, None, env={"EDGEPCAP_METRICS_TOKEN": TOKEN})
    try:
        info = new_account(server, "metrics")
        url = f"{server.api}/accounts/{info['id']}/pcaps"
        headers = {"Authorization": f"Bearer {info['api_token']}"}
        before = httpx.get(f"{server.url}/metrics", headers=OPERATOR, timeout=10).text
        # What the process imported and built before serving (tens of thousands of
        # objects) is out of the collector's reach: full collections stay short.
        assert metric(before, "python_gc_frozen_objects") > 50_000
        young = metric(before, 'python_gc_collections_total{generation="0"}')
        with httpx.Client(timeout=10) as client:
            for _ in range(300):
                assert client.get(url, headers=headers).status_code == 200
        after = httpx.get(f"{server.url}/metrics", headers=OPERATOR, timeout=10).text
        # Serving allocates, so the youngest generation is collected: the counters are live.
        assert metric(after, 'python_gc_collections_total{generation="0"}') > young
    finally:
        stop_server(server)


def test_metrics_are_served_only_with_the_operator_token(tmp_path):
    # None configured: there is no /metrics, as for any path the server does not have.
    server = start_server(tmp_path / "none", None, env={"EDGEPCAP_METRICS_TOKEN": ""})
    try:
        r = httpx.get(f"{server.url}/metrics", headers=OPERATOR, timeout=10)
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == 1100
    finally:
        stop_server(server)

    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    server = start_server(
        tmp_path / "file",
        None,
        env={"EDGEPCAP_METRICS_TOKEN": ""},
        args=("--metrics-token-file", str(token_file)),
    )
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            r = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
            assert r.status_code == 401, r.text
            assert r.json()["errors"][0]["code"] == 10000
            assert "operator token" in r.json()["errors"][0]["message"]
        r = httpx.get(f"{server.url}/metrics", headers=OPERATOR, timeout=10)
        assert r.status_code == 200
        assert "# TYPE edgepcap_machine_up gauge" in r.text
        assert TOKEN.encode() not in Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    finally:
        stop_server(server)


def test_a_metrics_token_too_short_stops_the_server_at_once(tmp_path):
    out = subprocess.run(
        [EDGEPCAP, "api", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)],
        env={"EDGEPCAP_METRICS_TOKEN": "short", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "EDGEPCAP_METRICS_TOKEN: the token must be 16 or more" in out.stderr
    assert "Traceback" not in out.stderr
