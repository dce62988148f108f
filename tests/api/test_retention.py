"""Capture retention and the full-capture rate, against real API processes on SQLite and
PostgreSQL: nothing a tenant makes is kept forever, and no tenant can churn a colo."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from edgepcap.control.accounts import create_account, describe
from edgepcap.control.db import Database, open_database
from edgepcap.control.models import CaptureMachine, Pcap, PcapBlob, utcnow
from edgepcap.formats.pcapfile import LINKTYPE_RAW, global_header
from tests.support.api import SIMPLE, error_of, full
from tests.support.processes import EDGEPCAP, free_port, wait_for
from tests.support.servers import S3_ENV, Server, register_machine, start_server, stop_server
from tests.support.stack import Stack

BACKENDS = ["sqlite", "postgresql"]


def _database(backend: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres").new_database() if backend == "postgresql" else None


def _servers(tmp_path: Path, database: str | None, env: dict[str, str], n: int) -> list[Server]:
    servers: list[Server] = []
    try:
        for _ in range(n):
            servers.append(start_server(tmp_path, database, {**S3_ENV, **env}))
    except BaseException:
        for s in servers:
            stop_server(s)
        raise
    return servers


def _wait_dead(c: httpx.Client, colo: str) -> None:
    def dead() -> bool:
        colos = c.get("/pcaps/colos").json()["result"]
        return any(x["colo"] == colo and x["live"] == 0 for x in colos)

    wait_for(dead, 30, f"{colo} to have no live machine")


@pytest.fixture
def db_of(tmp_path: Path) -> Iterator[list[Database]]:
    """Direct handles on the servers' database, closed after the test."""
    opened: list[Database] = []
    yield opened
    for db in opened:
        db.close()


def _rows(db: Database, pcap_ids: list[str]) -> tuple[int, int, int]:
    """How many of these captures, their stored PCAPs and machine parts the database holds."""
    with db.session() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(table).where(column.in_(pcap_ids)))
            for table, column in (
                (Pcap, Pcap.id),
                (PcapBlob, PcapBlob.pcap_id),
                (CaptureMachine, CaptureMachine.pcap_id),
            )
        )


# --- the full-capture rate -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_eleventh_full_create_in_a_minute_is_429_across_two_api_processes(
    tmp_path, backend, request
):
    database = _database(backend, request)
    a, b = _servers(tmp_path, database, {}, 2)
    live = register_machine(a)
    dead = register_machine(a, "SJC", "sjc01")
    dead.stop()
    # Accounts are made through one of them (it numbers their prefixes).
    stack_a, stack_b = Stack(server=a), Stack(server=b)
    try:
        acct = stack_a.account()
        conf = stack_a.validated_bucket(acct)
        with stack_a.client(acct) as ca, stack_b.client(acct) as cb:
            _wait_dead(ca, "SJC")
            # A create→stop loop on a live colo and creates that fail at once on a dead
            # one, spread over both processes: each counts.
            for i in range(10):
                c = (ca, cb)[i % 2]
                if i % 2:
                    r = c.post("/pcaps", json=full(conf, colo_name="SJC"))
                    assert r.status_code == 200, r.text
                    assert r.json()["result"]["status"] == "failed"
                else:
                    r = c.post("/pcaps", json=full(conf))
                    assert r.status_code == 200, r.text
                    assert c.put(f"/pcaps/{r.json()['result']['id']}/stop").status_code == 200
            for c in (ca, cb):
                for body in (full(conf), full(conf, colo_name="SJC")):
                    r = c.post("/pcaps", json=body)
                    assert r.status_code == 429, r.text
                    code, message = error_of(r)
                    assert code == 1202, message
                    assert "at most 10 full captures per minute per account" in message
                    assert 1 <= int(r.headers["Retry-After"]) <= 60
            # Nothing refused was made, and sample captures are not held back.
            assert len(ca.get("/pcaps").json()["result"]) == 10
            assert ca.post("/pcaps", json=SIMPLE).status_code == 200
        # The rate is per account: another account is not held back.
        other = stack_a.account()
        with stack_b.client(other) as c:
            r = c.post("/pcaps", json=full(stack_a.validated_bucket(other)))
            assert r.status_code == 200, r.text
    finally:
        live.stop()
        for s in (a, b):
            stop_server(s)
        if stack_a._db is not None:
            stack_a._db.close()


def test_the_full_capture_rate_is_configurable_and_a_bad_value_stops_the_start(tmp_path):
    (server,) = _servers(tmp_path, None, {"EDGEPCAP_FULL_CAPTURE_RATE": "2"}, 1)
    live = register_machine(server)
    stack = Stack(server=server)
    try:
        acct = stack.account()
        conf = stack.validated_bucket(acct)
        with stack.client(acct) as c:
            for _ in range(2):
                r = c.post("/pcaps", json=full(conf))
                assert r.status_code == 200, r.text
                assert c.put(f"/pcaps/{r.json()['result']['id']}/stop").status_code == 200
            r = c.post("/pcaps", json=full(conf))
            assert r.status_code == 429 and "at most 2 full captures" in error_of(r)[1]
    finally:
        live.stop()
        stop_server(server)
        if stack._db is not None:
            stack._db.close()
    for name, value in (("EDGEPCAP_FULL_CAPTURE_RATE", "ten"), ("EDGEPCAP_CAPTURE_RETENTION", "0")):
        out = subprocess.run(
            [EDGEPCAP, "api", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)],
            env={**S3_ENV, "PATH": "/usr/bin:/bin", name: value},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stderr[-2000:]
        assert out.stderr.startswith(f"error: {name} must be"), out.stderr[-2000:]


# --- retention ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_ended_captures_past_retention_are_deleted_running_ones_kept(
    tmp_path, backend, request, db_of
):
    database = _database(backend, request)
    (server,) = _servers(tmp_path, database, {"EDGEPCAP_CAPTURE_RETENTION": "2"}, 1)
    live = register_machine(server)
    dead = register_machine(server, "SJC", "sjc01")
    dead.stop()
    db_of.append(open_database(tmp_path, database))
    db = db_of[0]
    stack = Stack(server=server)
    try:
        runner, ender = stack.account(), stack.account()
        with stack.client(runner) as c:
            # Made first, so older than every capture below, and still running at the end.
            r = c.post("/pcaps", json=full(stack.validated_bucket(runner)))
            assert r.status_code == 200, r.text
            running = r.json()["result"]["id"]
            _wait_dead(c, "SJC")
        conf = stack.validated_bucket(ender)
        with stack.client(ender) as c:
            # One of each kind of ended capture: a sample (with its stored PCAP), a stopped
            # full capture (with its machine's part), one that failed at once.
            sample = c.post("/pcaps", json=SIMPLE).json()["result"]
            assert sample["status"] == "success"
            stopped = c.post("/pcaps", json=full(conf)).json()["result"]
            assert [m["machine"] for m in stopped["machines"]] == ["ord01"]
            assert c.put(f"/pcaps/{stopped['id']}/stop").json()["result"]["status"] == "success"
            failed = c.post("/pcaps", json=full(conf, colo_name="SJC")).json()["result"]
            assert failed["status"] == "failed"
            ended = [sample["id"], stopped["id"], failed["id"]]
            wait_for(
                lambda: all(c.get(f"/pcaps/{i}").status_code == 404 for i in ended),
                30,
                "the ended captures to pass their retention",
            )
            r = c.get(f"/pcaps/{sample['id']}/download")
            assert r.status_code == 404 and error_of(r)[0] == 1100
            assert c.get("/pcaps").json()["result"] == []
        # Gone from the database with their stored PCAP and machine parts.
        assert _rows(db, ended) == (0, 0, 0)
        # The running capture is older than all of them and stays, with its part.
        with stack.client(runner) as c:
            r = c.get(f"/pcaps/{running}")
            assert r.status_code == 200 and r.json()["result"]["status"] == "pending"
        assert _rows(db, [running]) == (1, 0, 1)
    finally:
        live.stop()
        stop_server(server)
        if stack._db is not None:
            stack._db.close()


def _stored(db: Database, account_id: str, ended_ago: dt.timedelta, **fields: object) -> str:
    """A capture as the API would have stored it, that ended `ended_ago`."""
    now = utcnow()
    fields.setdefault("status", "success")
    with db.session() as s:
        pcap = Pcap(
            account_id=account_id,
            system="magic-transit",
            time_limit=60,
            submitted=now - ended_ago - dt.timedelta(seconds=60),
            finished=now - ended_ago,
            **fields,
        )
        if pcap.type == "full":
            pcap.colo_name, pcap.destination_conf = "ORD", "file:///nowhere"
            pcap.machines.append(CaptureMachine(machine="ord01", state="done"))
        s.add(pcap)
        s.flush()
        if pcap.type == "simple":
            s.add(PcapBlob(pcap_id=pcap.id, data=global_header(LINKTYPE_RAW, 65535)))
        return pcap.id


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_retention_is_30_days_newer_stay_and_a_backlog_clears(
    tmp_path, backend, request, db_of
):
    database = _database(backend, request)
    db_of.append(open_database(tmp_path, database))
    db = db_of[0]
    with db.session() as s:
        account, creds = create_account(s, "old", ["203.0.113.0/30"])
        info = describe(account, creds)
    day = dt.timedelta(days=1)
    ids = iter(f"{n:032x}" for n in range(1, 1000))
    # More than one sweep's batch, of both kinds, ended 31 days ago.
    old = [
        _stored(db, info["id"], 31 * day, id=next(ids), type=("simple", "full")[n % 2])
        for n in range(150)
    ]
    kept = [
        _stored(db, info["id"], 29 * day, id=next(ids), type="simple"),
        _stored(db, info["id"], 29 * day, id=next(ids), type="full", status="failed"),
    ]
    # Submitted 40 days ago and never ended: a running capture is never deleted.
    running = next(ids)
    with db.session() as s:
        s.add(
            Pcap(
                id=running,
                account_id=info["id"],
                type="full",
                system="magic-transit",
                status="running",
                time_limit=60,
                submitted=utcnow() - 40 * day,
                colo_name="ORD",
                destination_conf="file:///nowhere",
            )
        )
    assert _rows(db, old) == (150, 75, 75)

    (server,) = _servers(tmp_path, database, {}, 1)
    try:
        wait_for(lambda: _rows(db, old) == (0, 0, 0), 30, "the 31-day-old captures to go")
        assert _rows(db, kept) == (2, 1, 1)
        headers = {"Authorization": f"Bearer {info['api_token']}"}
        base = f"{server.api}/accounts/{info['id']}/pcaps"
        for pcap_id in (*kept, running):
            assert httpx.get(f"{base}/{pcap_id}", headers=headers).status_code == 200
        assert httpx.get(f"{base}/{kept[0]}/download", headers=headers).status_code == 200
        assert httpx.get(f"{base}/{old[0]}", headers=headers).status_code == 404
    finally:
        stop_server(server)
