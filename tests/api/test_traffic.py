"""The sampled-traffic view over HTTP: estimates per group and step, tenancy, bad input."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.api import error_of
from tests.support.packets import udp
from tests.support.samples import icmp, owned_by, ship
from tests.support.servers import new_account, register_machine, start_server, stop_server


@pytest.fixture(params=["segments", "clickhouse"])
def server(request, tmp_path):
    env = {"EDGEPCAP_SAMPLE_INTERVAL": "0"}
    if request.param == "clickhouse":
        host = request.getfixturevalue("clickhouse")
        env["EDGEPCAP_SAMPLE_STORE"] = f"clickhouse://{host}/traffic_{int(time.time() * 1000)}"
    s = start_server(tmp_path / "api", None, env)
    try:
        yield s
    finally:
        stop_server(s)


def traffic(server, account, **params):
    return httpx.get(
        f"{server.api}/accounts/{account['id']}/traffic",
        params=params,
        headers={"Authorization": f"Bearer {account['api_token']}"},
        timeout=30,
    )


def series(r: httpx.Response) -> dict[str, dict]:
    assert r.status_code == 200, r.text
    return {s["key"]: s for s in r.json()["result"]["series"]}


def test_traffic_counts_estimates_per_group_and_keeps_to_the_account(server):
    a = new_account(server, "a", ("203.0.113.0/25",))
    b = new_account(server, "b", ("203.0.113.128/25",))
    ord01 = register_machine(server, "ORD", "ord01")
    ams01 = register_machine(server, "AMS", "ams01")
    try:
        now = time.time_ns()
        step = 10
        # Both in one step: 300 DNS datagrams seen in ORD, 100 pings seen in AMS.
        base = (now // 10**9 - 30) // step * step * 10**9
        dns = [udp("198.51.100.7", "203.0.113.10", 40000 + i, 53) for i in range(300)]
        pings = [icmp("198.51.100.8", "203.0.113.11") for _ in range(100)]
        assert ship(ord01, owned_by(a["id"], dns, [base + 1000 * i for i in range(300)])) == {
            "kept": 300,
            "rejected": 0,
        }
        assert ship(ams01, owned_by(a["id"], pings, [base + 5 * 10**9] * 100))["kept"] == 100
        other = [udp("198.51.100.9", "203.0.113.200", 1, 9999)] * 50
        assert ship(ord01, owned_by(b["id"], other, [base] * 50))["kept"] == 50

        r = traffic(server, a, group_by="destination_port", step=step, since=now // 10**9 - 120)
        got = series(r)
        result = r.json()["result"]
        assert result["sample_rate"] == 100 and result["step"] == step
        assert result["samples"] == 400
        assert got["53"]["samples"] == 300 and got["53"]["packets"] == 30_000
        assert got["none"]["samples"] == 100  # ICMP has no ports
        assert set(got) == {"53", "none"}  # nothing of account B's
        # 1.96 * 100 * sqrt(300 * 0.99)
        assert got["53"]["packets_error_95"] == 3378
        point = next(p for p in got["53"]["points"] if p[0] == base // 10**9)
        assert point[1] == pytest.approx(30_000 / step)
        assert point[2] == pytest.approx(300 * len(dns[0]) * 8 * 100 / step)
        assert sum(p[1] for p in got["53"]["points"]) * step == pytest.approx(30_000)

        colos = series(traffic(server, a, group_by="colo"))
        assert {k: s["samples"] for k, s in colos.items()} == {"ORD": 300, "AMS": 100}
        by_machine = series(traffic(server, a, group_by="machine"))
        assert {k: s["samples"] for k, s in by_machine.items()} == {"ord01": 300, "ams01": 100}
        assert set(series(traffic(server, a, group_by="protocol"))) == {"17", "1"}
        sources = series(traffic(server, a, group_by="source_address", protocol=1))
        assert {k: s["samples"] for k, s in sources.items()} == {"198.51.100.8": 100}
        top = series(traffic(server, a, group_by="destination_address", limit=1))
        assert {k: s["samples"] for k, s in top.items()} == {"203.0.113.10": 300, "other": 100}
        assert set(series(traffic(server, a, port=53))) == {"17"}
        assert series(traffic(server, a, source_address="198.51.100.99")) == {}
        # Account B sees its own 50 and nothing of A's.
        assert {k: s["samples"] for k, s in series(traffic(server, b)).items()} == {"17": 50}
    finally:
        ord01.stop()
        ams01.stop()


def test_traffic_refuses_what_it_cannot_answer(server):
    a = new_account(server, "a", ("203.0.113.0/25",))
    b = new_account(server, "b", ("203.0.113.128/25",))
    now = int(time.time())
    cases = [
        ({"step": 15}, "`step` must be a multiple of 10 seconds"),
        ({"step": 0}, "`step`"),
        ({"group_by": "flows"}, "`group_by` must be one of protocol"),
        ({"limit": 0}, "`limit` must be between 1 and 50"),
        ({"since": now - 2 * 86400}, "more than 24 h ago"),
        ({"since": now, "until": now - 60}, "`since` must be before `until`"),
        ({"until": now + 3600}, "`until` is in the future"),
        ({"since": "yesterday"}, "`since` must be RFC 3339"),
        ({"since": "2026-12-06T10:00:00"}, "`since` must be RFC 3339"),
        ({"source_address": "203.0.113.0/24"}, "`source_address`"),
        ({"destination_port": 70000}, "`destination_port`"),
        ({"protocol": "udp"}, "protocol`: Input should be a valid integer"),
    ]
    for params, message in cases:
        r = traffic(server, a, **params)
        assert r.status_code == 400, (params, r.text)
        code, text = error_of(r)
        assert code == 1003, (params, code)
        assert message in text, (params, text)
    default = traffic(server, a)
    assert default.status_code == 200, default.text
    result = default.json()["result"]
    assert result["group_by"] == "protocol" and result["step"] == 10 and result["series"] == []
    # Another account's credentials: 403, as everywhere.
    r = httpx.get(
        f"{server.api}/accounts/{a['id']}/traffic",
        headers={"Authorization": f"Bearer {b['api_token']}"},
    )
    assert r.status_code == 403
    assert httpx.get(f"{server.api}/accounts/{a['id']}/traffic").status_code == 401
