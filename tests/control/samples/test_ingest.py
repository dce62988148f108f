"""Sample ingestion over the agent protocol: tenancy checked by the control plane, retention."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import httpx
import numpy as np
import pytest

from edgepcap.formats import samples as records
from tests.support.api import SIMPLE
from tests.support.packets import udp
from tests.support.processes import EDGEPCAP, wait_for
from tests.support.samples import claim, sampled
from tests.support.servers import MachineHeartbeat, start_server, stop_server


@pytest.fixture(params=["segments", "clickhouse"])
def short_retention(request, tmp_path):
    env = {
        "EDGEPCAP_SAMPLE_RETENTION": "3",
        "EDGEPCAP_SAMPLE_PARTITION": "1",
        "EDGEPCAP_SAMPLE_INTERVAL": "0",
    }
    if request.param == "clickhouse":
        host = request.getfixturevalue("clickhouse")
        env["EDGEPCAP_SAMPLE_STORE"] = f"clickhouse://{host}/ingest_{int(time.time() * 1000)}"
    server = start_server(tmp_path / "api", None, env)
    server.store = request.param  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(params=["segments", "clickhouse"])
def sample_server(request, tmp_path):
    env = {"EDGEPCAP_SAMPLE_INTERVAL": "0"}
    if request.param == "clickhouse":
        host = request.getfixturevalue("clickhouse")
        env["EDGEPCAP_SAMPLE_STORE"] = f"clickhouse://{host}/family_{int(time.time() * 1000)}"
    server = start_server(tmp_path / "api", None, env)
    try:
        yield server
    finally:
        stop_server(server)


def cli(server, *args):
    out = subprocess.run(
        [EDGEPCAP, *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_samples_are_checked_kept_queried_and_expired(short_retention):
    server = short_retention
    a = cli(server, "accounts", "create", "a", "--prefix", "203.0.113.0/25")
    b = cli(server, "accounts", "create", "b", "--prefix", "203.0.113.128/25")
    key = cli(server, "agents", "create-key", "--colo", "ORD", "--machine", "ord01")["agent_key"]
    machine = MachineHeartbeat(server.url, key, "ORD", "ord01")
    try:
        now = time.time_ns()
        snaps = [udp("198.51.100.1", "203.0.113.10", 1000 + i, 53) for i in range(40)]
        rows = records.parse(snaps, [now - i * 1000 for i in range(40)], [len(s) for s in snaps])
        honest = records.attribute(rows, {a["id"]: [ipaddress.ip_network("203.0.113.0/25")]})
        # The same samples claimed for account B, whose prefixes they are not in.
        forged = records.attribute(rows, {b["id"]: [ipaddress.ip_network("203.0.113.0/25")]})
        body = honest.tobytes() + forged.tobytes()
        r = httpx.post(
            f"{server.url}/agent/v1/samples",
            params=machine.me,
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"kept": 40, "rejected": 40}
        r = httpx.post(
            f"{server.url}/agent/v1/samples",
            params=machine.me,
            content=b"x" * 10,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 400
        r = httpx.post(
            f"{server.url}/agent/v1/samples",
            params=machine.me,
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 401

        def sample(account):
            r = httpx.post(
                f"{server.api}/accounts/{account['id']}/pcaps",
                headers={"Authorization": f"Bearer {account['api_token']}"},
                json=SIMPLE,
            )
            assert r.status_code == 200, r.text
            return r.json()["result"]

        assert sample(a)["packets_captured"] == 40
        assert sample(b)["packets_captured"] == 0

        # Retention 3 s, 1 s partitions: whole partitions go, and their disk space with them.
        if server.store == "segments":
            store = server.data_dir / "samples"
            assert list(store.rglob("*.seg"))
            wait_for(lambda: not list(store.rglob("*.seg")), 30, "old samples to be dropped")
            assert not [p for p in store.iterdir() if p.is_dir()]
        else:
            from clickhouse_driver import Client

            url = server.env["EDGEPCAP_SAMPLE_STORE"].removeprefix("clickhouse://")
            hostport, database = url.split("/")
            host, port = hostport.split(":")
            ch = Client(host, port=int(port), database=database)
            assert ch.execute("SELECT count() FROM samples")[0][0] == 40
            wait_for(
                lambda: (
                    ch.execute(
                        "SELECT count() FROM system.parts WHERE database = "
                        "%(d)s AND table = 'samples' AND active",
                        {"d": database},
                    )[0][0]
                    == 0
                ),
                30,
                "old partitions to be dropped",
            )
        assert sample(a)["packets_captured"] == 0
    finally:
        machine.stop()


def post_samples(server, key, machine, wire):
    r = httpx.post(
        f"{server.url}/agent/v1/samples",
        params=machine.me,
        content=wire.tobytes(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_ingest_checks_ownership_family_by_family(sample_server):
    from edgepcap.control.db import open_database
    from edgepcap.control.models import Prefix

    server = sample_server
    a = cli(server, "accounts", "create", "a", "--prefix", "203.0.113.0/25")
    legacy = cli(server, "accounts", "create", "legacy", "--prefix", "2001:db8:f::/48")
    # ::/80 covers ::ffff:0:0/96 and is refused now; a database from before may hold it.
    db = open_database(server.data_dir, None)
    try:
        with db.session() as session:
            session.add(Prefix(account_id=legacy["id"], cidr="::/80"))
    finally:
        db.close()
    key = cli(server, "agents", "create-key", "--colo", "ORD", "--machine", "ord01")["agent_key"]
    machine = MachineHeartbeat(server.url, key, "ORD", "ord01")
    try:
        now = time.time_ns()
        honest = claim([("198.51.100.1", "203.0.113.10")], a["id"], now)
        # An IPv6 packet to ::ffff:203.0.113.10, 160 bytes of the sender's choosing, filed
        # under the account that holds 203.0.113.10.
        mapped = claim([("2001:db8:c::1", "::ffff:203.0.113.10")], a["id"], now)
        # Account A's IPv4 samples filed under the account holding ::/80.
        v4_to_legacy = claim([("198.51.100.1", "203.0.113.10")], legacy["id"], now)
        v6_of_legacy = claim([("2001:db8:c::1", "::1:2:3")], legacy["id"], now)
        body = np.concatenate([honest, mapped, v4_to_legacy, v6_of_legacy])
        assert post_samples(server, key, machine, body) == {"kept": 2, "rejected": 2}
        assert sampled(server, a) == [("198.51.100.1", "203.0.113.10")]
        assert sampled(server, legacy) == [("2001:db8:c::1", "::1:2:3")]
    finally:
        machine.stop()
