"""`/metrics` over HTTP against a real server: machines, sampler counters, the collector."""

from __future__ import annotations

import re

import httpx

from tests.conftest import new_account, start_server, stop_server


def metric(text: str, name: str) -> int:
    found = re.search(rf"^{re.escape(name)} (\d+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics:\n{text}"
    return int(found.group(1))


def test_startup_objects_are_frozen_and_collections_are_counted(tmp_path):
    server = start_server(tmp_path, None)
    try:
        info = new_account(server, "metrics")
        url = f"{server.api}/accounts/{info['id']}/pcaps"
        headers = {"Authorization": f"Bearer {info['api_token']}"}
        before = httpx.get(f"{server.url}/metrics", timeout=10).text
        # What the process imported and built before serving (tens of thousands of
        # objects) is out of the collector's reach: full collections stay short.
        assert metric(before, "python_gc_frozen_objects") > 50_000
        young = metric(before, 'python_gc_collections_total{generation="0"}')
        with httpx.Client(timeout=10) as client:
            for _ in range(300):
                assert client.get(url, headers=headers).status_code == 200
        after = httpx.get(f"{server.url}/metrics", timeout=10).text
        # Serving allocates, so the youngest generation is collected: the counters are live.
        assert metric(after, 'python_gc_collections_total{generation="0"}') > young
    finally:
        stop_server(server)
