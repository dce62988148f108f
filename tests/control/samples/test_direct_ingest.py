"""Agents inserting samples straight into ClickHouse (`samples.direct`): what they insert
is filed under their machine, checked, and read back by sample captures and the traffic
view; a machine's ClickHouse user inserts into its own table and reads nothing."""

from __future__ import annotations

import ipaddress
import os
import secrets
import time

import httpx
import pytest
from clickhouse_driver import Client

from edgepcap.agent.sample_sink import ClickHouseSink
from edgepcap.control.samples import direct
from edgepcap.formats import samples as records
from tests.support.clickhouse import clickhouse_process
from tests.support.packets import udp
from tests.support.processes import EDGEPCAP, wait_for
from tests.support.samples import claim, sampled
from tests.support.servers import new_account, start_server, stop_server

pytestmark = pytest.mark.clickhouse
KEY = "k" * 32
CREATE_KEY = (EDGEPCAP, "agents", "create-key")


@pytest.fixture(scope="module")
def locked():
    """A server whose every user has a password (its agents' users can reach its loopback)."""
    with clickhouse_process(secrets.token_hex(16)) as ch:
        yield ch


@pytest.fixture
def server(locked, tmp_path):
    key_file = tmp_path / "ingest.key"
    key_file.write_text(KEY)
    database = f"direct_{int(time.time() * 1000)}"
    env = {
        "EDGEPCAP_SAMPLE_INTERVAL": "0",
        "EDGEPCAP_SAMPLE_STORE": f"clickhouse://{locked.host}/{database}",
        "EDGEPCAP_SAMPLE_INGEST": locked.http,
        "EDGEPCAP_SAMPLE_INGEST_KEY_FILE": str(key_file),
    }
    s = start_server(tmp_path / "api", None, env)
    s.database_name = database  # type: ignore[attr-defined]
    # What the operator installs: the users of the machines that may insert.
    users = direct.users_xml(database, KEY, ["ord01", "ord-02"])
    (locked.users_d / f"{database}.xml").write_text(users)
    try:
        yield s
    finally:
        stop_server(s)


def register(server, colo: str, machine: str) -> dict:
    """The machine's registration answer, through the agent protocol with its own key."""
    import json
    import subprocess

    out = subprocess.run(
        [*CREATE_KEY, "--colo", colo, "--machine", machine, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = json.loads(out.stdout)["agent_key"]
    r = httpx.post(
        f"{server.url}/agent/v1/register",
        json={"colo": colo, "machine": machine, "boot_id": os.urandom(16).hex()},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def logged_in(sink: dict) -> ClickHouseSink:
    """The machine's sink, once ClickHouse has read the users.d file its user is in."""
    out = ClickHouseSink(sink)
    wait_for(
        lambda: (
            httpx.get(
                sink["url"], params={"query": "SELECT 1"}, auth=(sink["user"], sink["password"])
            ).status_code
            == 200
        ),
        30,
        "ClickHouse to read the machines' users",
    )
    return out


def admin(locked, server) -> Client:
    return Client(
        "127.0.0.1", port=locked.port, password=locked.password, database=server.database_name
    )


def test_a_machine_inserts_samples_that_captures_and_the_traffic_view_read_back(locked, server):
    a = new_account(server, "a", ("203.0.113.0/25",))
    b = new_account(server, "b", ("203.0.113.128/25",))
    welcome = register(server, "ORD", "ord01")
    sink = welcome["samples_to"]
    assert sink["url"] == locked.http and sink["table"].endswith("_in_ord01.samples")
    assert sink["password"] == direct.password(KEY, "ord01")
    ord01 = logged_in(sink)
    now = time.time_ns()
    snaps = [udp("198.51.100.1", "203.0.113.10", 1000 + i, 53) for i in range(40)]
    rows = records.parse(snaps, [now - i * 1000 for i in range(40)], [len(s) for s in snaps])
    nets = [ipaddress.ip_network("203.0.113.0/25")]
    honest = records.attribute(rows, {a["id"]: nets})
    # The same samples filed under B, whose prefixes they are not in: kept, never shown.
    forged = records.attribute(rows, {b["id"]: nets})
    # What admission refuses: an hour old, and more bytes than the packet had.
    stale = claim([("198.51.100.1", "203.0.113.11")] * 5, a["id"], now - 3600 * 10**9)
    long = claim([("198.51.100.1", "203.0.113.12")] * 3, a["id"], now)
    long["orig_len"] = 20
    ord01.insert(honest.tobytes() + forged.tobytes() + stale.tobytes() + long.tobytes())

    ch = admin(locked, server)
    wait_for(
        lambda: ch.execute("SELECT count() FROM samples")[0][0] == 80, 30, "rows to be flushed"
    )
    assert ch.execute("SELECT machine, count() FROM samples GROUP BY machine") == [("ord01", 80)]
    assert sorted(set(sampled(server, a))) == [("198.51.100.1", "203.0.113.10")]
    assert len(sampled(server, a)) == 40
    assert sampled(server, b) == []
    r = httpx.get(
        f"{server.api}/accounts/{a['id']}/traffic",
        params={"group_by": "machine", "since": now // 10**9 - 600},
        headers={"Authorization": f"Bearer {a['api_token']}"},
    )
    assert r.status_code == 200, r.text
    series = {s["key"]: s for s in r.json()["result"]["series"]}
    assert set(series) == {"ord01"}
    r = httpx.get(
        f"{server.api}/accounts/{b['id']}/traffic",
        params={"group_by": "machine", "since": now // 10**9 - 600},
        headers={"Authorization": f"Bearer {b['api_token']}"},
    )
    assert r.status_code == 200 and r.json()["result"]["series"] == []
    ord01.close()


def test_a_machine_inserts_into_its_own_table_only_and_reads_nothing(locked, server):
    a = new_account(server, "a", ("203.0.113.0/25",))
    ord01 = register(server, "ORD", "ord01")["samples_to"]
    ord02 = register(server, "ORD", "ord-02")["samples_to"]
    logged_in(ord01).close()
    now = time.time_ns()
    batch = claim([("198.51.100.1", "203.0.113.10")] * 7, a["id"], now).tobytes()
    db = server.database_name

    def as_ord01(query: str, body: bytes = b"") -> httpx.Response:
        return httpx.post(
            ord01["url"],
            params={"query": query},
            content=body,
            auth=(ord01["user"], ord01["password"]),
        )

    # Another machine's table, under its own name: refused.
    assert as_ord01(f"INSERT INTO {ord02['table']} FORMAT RowBinary", batch).status_code != 200
    # The other machine's password does not open ord01's user either.
    r = httpx.post(
        ord01["url"],
        params={"query": f"INSERT INTO {ord01['table']} FORMAT RowBinary"},
        content=batch,
        auth=(ord01["user"], ord02["password"]),
    )
    assert r.status_code != 200
    # What the user may try beyond its INSERT (names are the test's own: S608 is moot).
    for query in (
        f"SELECT count() FROM {ord01['table']}",  # its own batches: through to the store's  # noqa: S608
        f"SELECT count() FROM {db}.samples",  # noqa: S608
        f"SELECT count() FROM {db}.incoming",  # noqa: S608
        f"SELECT count() FROM remote('127.0.0.1:{locked.port}', {db}, samples)",  # noqa: S608
        f"SELECT * FROM url('{locked.http}?query=SELECT+1', TSV, 'x UInt8')",  # noqa: S608
        f"INSERT INTO {db}.samples SELECT * FROM {db}.samples",  # noqa: S608
        f"INSERT INTO {db}.in_ord01 SELECT * FROM {ord01['table']}",  # noqa: S608
        f"DROP TABLE {ord01['table']}",
        f"CREATE TABLE {ord01['table'][:-8]}.other (x UInt8) ENGINE = Memory",
        "SET allow_ddl = 1",
    ):
        r = as_ord01(query)
        assert r.status_code != 200, (query, r.text)
    assert as_ord01(f"INSERT INTO {ord01['table']} FORMAT RowBinary", batch).status_code == 200
    ch = admin(locked, server)
    wait_for(lambda: ch.execute("SELECT count() FROM samples")[0][0] == 7, 30, "rows to land")
    assert ch.execute("SELECT DISTINCT machine FROM samples") == [("ord01",)]
