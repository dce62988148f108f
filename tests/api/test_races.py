"""Rate limits hold across API processes: two servers on one PostgreSQL racing each other;
and a colo's machines ending a capture together close it once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from edgepcap.control import completion, execution, fleet
from edgepcap.control.accounts import create_account
from edgepcap.control.credentials import new_id
from edgepcap.control.db import open_database
from edgepcap.control.models import Pcap
from edgepcap.formats import protocol
from tests.support.api import SIMPLE, full
from tests.support.packets import udp
from tests.support.samples import owned_by, ship
from tests.support.servers import S3_ENV, register_machine
from tests.support.stack import Stack, two_api_processes


@pytest.fixture(scope="module")
def twin(postgres, tmp_path_factory, s3_server) -> Iterator[tuple[Stack, Stack]]:
    # Machines registered by hand here send no heartbeats: lost only after 5 intervals of 30 s, not
    # while a loaded machine takes seconds over a hundred of them.
    env = {**S3_ENV, "EDGEPCAP_S3_ENDPOINT": s3_server, "EDGEPCAP_HEARTBEAT_INTERVAL": "30"}
    data_dir = tmp_path_factory.mktemp("twin")
    with two_api_processes(data_dir, postgres.new_database(), env) as (first, second):
        machine = register_machine(first.server)
        try:
            yield first, second
        finally:
            machine.stop()


def race(urls: list[str], account, body: dict, per_server: int = 8) -> Counter[int]:
    """Fire the same create at every server at once; count the status codes."""
    barrier = threading.Barrier(len(urls) * per_server)
    results: list[int] = []
    lock = threading.Lock()

    def fire(url: str) -> None:
        with httpx.Client(headers=account.bearer, timeout=30) as c:
            barrier.wait(timeout=30)
            status = c.post(f"{url}/accounts/{account.id}/pcaps", json=body).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=fire, args=(u,)) for u in urls for _ in range(per_server)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return Counter(results)


def test_concurrent_full_creates_accept_exactly_one(twin):
    a, b = twin
    acct = a.account()
    conf = a.validated_bucket(acct)
    for _round in range(3):
        counts = race([a.api, b.api], acct, full(conf))
        assert counts == Counter({200: 1, 429: 15}), counts
        with a.client(acct) as c:
            active = [p for p in c.get("/pcaps").json()["result"] if p["status"] == "pending"]
            assert len(active) == 1
            assert c.put(f"/pcaps/{active[0]['id']}/stop").status_code == 200


def test_concurrent_sample_creates_accept_exactly_one(twin):
    a, b = twin
    acct = a.account()
    counts = race([a.api, b.api], acct, SIMPLE)
    assert counts == Counter({200: 1, 429: 15}), counts
    with b.client(acct) as c:
        assert len(c.get("/pcaps").json()["result"]) == 1


BOOT = "0" * 32
NAMES = ("ord01", "ord02")


def _running_capture(db) -> str:
    """A full capture running on two machines; returns its id."""
    with db.session() as s:
        acct, _creds = create_account(s, "skew", ["203.0.113.0/30"])
        live = [fleet.register(s, "ORD", m, BOOT) for m in NAMES]
        pcap = Pcap(
            id=new_id(),
            account_id=acct.id,
            type="full",
            system="magic-transit",
            status="pending",
            time_limit=60,
            colo_name="ORD",
            destination_conf="file:///nowhere",
            prefixes=["203.0.113.0/30"],
        )
        execution.assign(s, pcap, live)
        s.add(pcap)
        pcap_id = pcap.id
    for m in NAMES:
        with db.session() as s:
            execution.report(s, m, BOOT, pcap_id, protocol.Report(state="running"))
    return pcap_id


def _done(pcap_id: str, machine: str) -> protocol.Report:
    return protocol.Report(state="done", object_name=f"{machine}/pcap_{pcap_id}.pcap")


@pytest.fixture
def db(postgres, tmp_path):
    database = open_database(tmp_path, postgres.new_database())
    try:
        yield database
    finally:
        database.close()


def test_machines_ending_together_end_the_capture(db):
    """Two end reports in flight at once, on PostgreSQL: neither may miss the other's end
    (write skew), or the capture would stay `running` with every part finished. Each
    looks again once committed, as the agent API does (`completion.close_if_done`)."""
    pcap_id = _running_capture(db)
    first = db._sessions()
    execution.report(first, "ord01", BOOT, pcap_id, _done(pcap_id, "ord01"))
    first.flush()  # ord01's end is written but not committed yet

    def second() -> None:
        with db.session() as s:
            execution.report(s, "ord02", BOOT, pcap_id, _done(pcap_id, "ord02"))
        with db.session() as s:
            completion.close_if_done(s, pcap_id)

    other = threading.Thread(target=second)
    other.start()
    other.join(10)  # it does not wait for the first: it takes only its own part
    assert not other.is_alive()
    with db.session() as s:
        assert s.get(Pcap, pcap_id).status == "running"  # it saw ord01 still running
    first.commit()
    first.close()
    with db.session() as s:
        completion.close_if_done(s, pcap_id)
    with db.session() as s:
        ended = s.get(Pcap, pcap_id)
        assert ended is not None
        assert ended.status == "success", [(m.machine, m.state) for m in ended.machines]


def test_the_supervisor_closes_a_capture_whose_parts_all_ended(db):
    """The safety net: however the last end was missed, the next sweep closes it."""
    pcap_id = _running_capture(db)
    with db.session() as s:
        for part in s.get(Pcap, pcap_id).machines:
            part.state = "done"  # ended, as a raced end report would leave it
    with db.session() as s:
        execution.sweep(s)
    with db.session() as s:
        assert s.get(Pcap, pcap_id).status == "success"


def test_a_trigger_fires_once_across_api_processes(twin):
    first, second = twin
    account = first.account()
    conf = first.validated_bucket(account)
    with first.client(account) as c:
        r = c.post(
            "/pcaps/triggers",
            json={
                "filter_v1": {"protocol": 17},
                "threshold_pps": 1000,
                "capture": full(conf, time_limit=60),
            },
        )
        assert r.status_code == 200, r.text
        trigger = r.json()["result"]["id"]
    # Two machines, each shipping to its own API process, at once: both processes see the
    # estimate cross the threshold.
    machines = [register_machine(first.server, "ORD", "ord05")]
    machines.append(register_machine(second.server, "ORD", "ord06"))
    barrier = threading.Barrier(len(machines))
    host = account.host(1)

    def send(machine) -> None:
        barrier.wait(timeout=30)
        for _ in range(8):
            now = time.time_ns()
            snaps = [udp("198.51.100.7", host, 40000 + i, 53) for i in range(20)]
            ship(machine, owned_by(account.id, snaps, [now] * 20))

    threads = [threading.Thread(target=send, args=(m,)) for m in machines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for m in machines:
            m.stop()
    with second.client(account) as c:
        got = c.get(f"/pcaps/triggers/{trigger}").json()["result"]
        assert len(got["fired"]) == 1 and got["refused"] == [], got
        pcaps = c.get("/pcaps").json()["result"]
        assert [p["id"] for p in pcaps] == [got["fired"][0]["pcap_id"]]
        assert pcaps[0]["trigger_id"] == trigger
        c.put(f"/pcaps/{pcaps[0]['id']}/stop")


HUNDRED = [f"hun{i:03d}" for i in range(100)]


def test_a_hundred_machines_ending_together_close_the_capture_once(twin):
    """A colo of 100 machines sends its end reports at once, half to each API process:
    the capture ends `success` once (its `finished` written once), with every part's
    packets and bytes in its totals."""
    first, second = twin
    account = first.account()
    conf = first.validated_bucket(account)
    db = open_database(first.server.data_dir, first.server.database)
    try:
        with db.session() as s:
            s.execute(text("CREATE TABLE IF NOT EXISTS closes (pcap_id text)"))
            s.execute(
                text(
                    "CREATE OR REPLACE FUNCTION count_close() RETURNS trigger AS "
                    "$$ BEGIN INSERT INTO closes VALUES (NEW.id); RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            s.execute(text("DROP TRIGGER IF EXISTS counted ON pcaps"))
            s.execute(
                text(
                    "CREATE TRIGGER counted AFTER UPDATE ON pcaps FOR EACH ROW WHEN "
                    "(NEW.finished IS DISTINCT FROM OLD.finished) EXECUTE FUNCTION count_close()"
                )
            )
            keys = {m: fleet.create_agent_key(s, "HUN", m)[1] for m in HUNDRED}
            for m in HUNDRED:
                fleet.register(s, "HUN", m, BOOT)
        with first.client(account) as c:
            r = c.post("/pcaps", json=full(conf, colo_name="HUN", time_limit=60))
            assert r.status_code == 200, r.text
            pcap_id = r.json()["result"]["id"]
        clients = {
            m: httpx.Client(
                base_url=(first, second)[i % 2].server.url + "/agent/v1",
                headers={"Authorization": f"Bearer {keys[m]}"},
                timeout=30,
            )
            for i, m in enumerate(HUNDRED)
        }
        path = f"/captures/{pcap_id}/report"
        me = {m: {"machine": m, "boot_id": BOOT} for m in HUNDRED}
        with ThreadPoolExecutor(len(HUNDRED)) as pool:
            running = pool.map(
                lambda m: clients[m].post(path, json={**me[m], "state": "running"}), HUNDRED
            )
            assert [r.status_code for r in running] == [200] * 100
            barrier = threading.Barrier(len(HUNDRED))

            def end(i: int, m: str) -> httpx.Response:
                report = {
                    **me[m],
                    "state": "done",
                    "packets": i + 1,
                    "bytes": 100 * (i + 1),
                    "end_reason": "stop",
                    "object_name": protocol.object_name(m, pcap_id),
                }
                barrier.wait(30)
                return clients[m].post(path, json=report)

            ended = list(pool.map(end, range(100), HUNDRED))
        assert [r.status_code for r in ended] == [200] * 100
        assert all(r.json()["stop"] for r in ended)
        with db.session() as s:
            pcap = s.get(Pcap, pcap_id)
            assert pcap.status == "success", [(m.machine, m.state) for m in pcap.machines]
            assert {m.state for m in pcap.machines} == {"done"}
            assert (pcap.packets_captured, pcap.bytes_captured) == (5050, 505_000)
            closes = s.execute(
                text("SELECT count(*) FROM closes WHERE pcap_id = :p"), {"p": pcap_id}
            )
            assert closes.scalar() == 1
        for c in clients.values():
            c.close()
    finally:
        db.close()
