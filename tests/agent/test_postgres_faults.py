"""The lab on PostgreSQL, whose server crashes and comes back mid-capture."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edgepcap.control import fleet
from tests.support.captures import captured, expected, in_prefixes
from tests.support.lab import Lab, running_lab
from tests.support.postgres import Postgres
from tests.support.processes import wait_for

pytestmark = pytest.mark.root  # running_lab: namespaces, nftables

MACHINES = ("ord01", "ord02")


@pytest.fixture(scope="module")
def pg_lab(
    private_postgres: Postgres, tmp_path_factory: pytest.TempPathFactory, s3_server: str
) -> Iterator[Lab]:
    with running_lab(
        tmp_path_factory.mktemp("pglab"), s3_server, private_postgres.new_database()
    ) as lab:
        yield lab


def test_postgres_crash_mid_capture_the_api_recovers_and_the_capture_completes(
    private_postgres, pg_lab
):
    lab = pg_lab
    api_log = lab.data_dir / "logs" / "api.log"
    pcap = lab.start_full(filter_v1={"protocol": 17})
    sent = lab.send(20)
    down = time.monotonic()
    private_postgres.crash()
    try:
        sent += lab.send(30)
        # While the database is away the api says so, quickly, instead of hanging.
        with lab.client() as c:
            r = c.get(f"/pcaps/{pcap['id']}")
        assert r.status_code == 503, r.text
        assert "database" in r.json()["errors"][0]["message"]
        wait_for(
            lambda: "database is unreachable" in api_log.read_text(errors="replace"),
            10,
            "the api to notice the outage",
        )
        # The fault itself: longer than the heartbeat timeout, so that every machine's
        # last heartbeat is stale when the database comes back.
        outage = fleet.HEARTBEAT_TIMEOUT.total_seconds() + 1
        time.sleep(max(0.0, down + outage - time.monotonic()))
    finally:
        private_postgres.start()
    with lab.client() as c:
        wait_for(
            lambda: c.get(f"/pcaps/{pcap['id']}").status_code == 200, 20, "the api to answer again"
        )
    # Silence while the database was away is not held against the machines.
    assert lab.get(pcap["id"])["status"] == "running"
    sent += lab.send(10)
    with lab.client() as c:
        assert c.put(f"/pcaps/{pcap['id']}/stop").status_code == 200
    done = lab.wait_end(pcap["id"], timeout=30)
    assert done["status"] == "success" and done["error_message"] is None, done
    assert {m["machine"]: m["state"] for m in done["machines"]} == dict.fromkeys(MACHINES, "done")
    want = expected(sent, lambda k: in_prefixes(k[1], lab["prefixes"]))
    assert sum(want.values()) == 2 * (20 + 30 + 10)
    assert captured(lab, pcap["id"]) == want
    assert done["packets_captured"] == sum(want.values())
    for machine in MACHINES:
        assert lab.tables(machine) == []

    wait_for(lambda: all(lab.machines_up().values()), 10, "every machine to be live again")
    again = lab.start_full(time_limit=1)
    assert lab.wait_end(again["id"], timeout=10)["status"] == "success"
