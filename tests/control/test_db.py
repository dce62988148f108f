"""Reads on PostgreSQL's kept connection: they see every commit, from any thread, and a
connection the server dropped is replaced without the read failing; the polled reads,
run on the driver, return what SQLAlchemy returns. SQLite's WAL checkpoints, by commits or
by their owner."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    Numeric,
    Table,
    literal,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from edgepcap.control import reads
from edgepcap.control.accounts import create_account
from edgepcap.control.credentials import hash_secret
from edgepcap.control.db import Database, database_url, fetch_all
from edgepcap.control.models import CaptureMachine, Pcap, utcnow
from tests.support.sqlite import wal_frames


def accounts(conn: Connection) -> int:
    return conn.execute(text("SELECT count(*) FROM accounts")).scalar_one()


def test_reads_see_each_commit_and_run_from_several_threads_at_once(postgres, tmp_path):
    db = Database(database_url(tmp_path, postgres.new_database()))
    try:
        assert db.read(accounts) == 0
        for i in range(3):
            with db.session() as s:
                create_account(s, f"a{i}", [f"203.0.113.{16 * i}/28"])
            assert db.read(accounts) == i + 1  # no snapshot kept between reads

        # Threads that find the kept connection busy read on pooled ones.
        inside, release = threading.Event(), threading.Event()
        results: list[int] = []

        def slow(conn: Connection) -> int:
            inside.set()
            assert release.wait(10)
            return accounts(conn)

        holder = threading.Thread(target=lambda: results.append(db.read(slow)))
        holder.start()
        assert inside.wait(10)
        assert db.read(accounts) == 3  # while the kept connection is in use
        release.set()
        holder.join(10)
        assert results == [3]
    finally:
        db.close()


def test_a_read_survives_the_server_dropping_its_connection(postgres, tmp_path):
    db = Database(database_url(tmp_path, postgres.new_database()))
    try:
        pid = db.read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar_one())
        with db.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The kept connection is dead; the read retries on a new one.
        assert db.read(accounts) == 0
        assert db.read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar_one()) != pid
    finally:
        db.close()


def prepared(conn: Connection, table: str) -> int:
    """Statements prepared on this connection that read `table`."""
    return conn.execute(
        text("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE :t"),
        {"t": f"%FROM {table}%"},
    ).scalar_one()


def test_polled_reads_on_the_driver_return_what_sqlalchemy_returns(postgres, tmp_path):
    db = Database(database_url(tmp_path, postgres.new_database()))
    try:
        now = utcnow()
        with db.session() as s:
            account, creds = create_account(s, "fast", ["203.0.113.0/24"])
            for i, kind in enumerate(("simple", "full", "full")):
                pcap = Pcap(
                    id=f"{i:032x}",
                    account_id=account.id,
                    type=kind,
                    system="magic-transit",
                    status="running" if i == 1 else "success",  # one active full at most
                    time_limit=60,
                    colo_name="ORD" if kind == "full" else None,
                    filter_v1={"protocol": 17, "destination_port": 53},
                    submitted=now - dt.timedelta(seconds=i),
                )
                if kind == "full":
                    pcap.machines = [
                        CaptureMachine(machine=f"ord0{m}", state="running", packets=7 * m)
                        for m in (1, 2)
                    ]
                s.add(pcap)
            account_id, token_hash = account.id, hash_secret(creds.api_token)
        one = {"account_id": account_id, "token_hash": token_hash, "id": f"{1:032x}"}
        polled = [
            (reads._CHECKED[(True, False)], one),
            (reads._CHECKED[(True, True)], one),
            (reads._NEWEST, {"account_id": account_id}),
            (reads._ONE, {"account_id": account_id, "id": f"{2:032x}"}),
            (reads._PARTS, {"ids": [f"{1:032x}", f"{2:032x}"]}),
            (reads._PARTS, {"ids": [f"{2:032x}"]}),  # another length of the IN list
        ]
        for statement, params in polled:
            fast = db.read(lambda c, st=statement, p=params: fetch_all(c, st, p))
            with db.engine.connect() as conn:
                slow = [dict(r) for r in conn.execute(statement, params).mappings()]
            assert fast == slow and fast
        # They ran as the driver's prepared statements, on the kept connection.
        assert db.read(lambda c: prepared(c, "capture_machines")) >= 2
        newest = db.read(lambda c: reads.views(c, account_id))
        assert [p["id"] for p, _ in newest] == [f"{i:032x}" for i in range(3)]
        assert [[m["packets"] for m in parts] for _, parts in newest] == [[], [7, 14], [7, 14]]
        assert newest[1][0]["filter_v1"] == {"protocol": 17, "destination_port": 53}
        assert newest[0][0]["submitted"] == now
    finally:
        db.close()


def test_a_driver_read_fails_as_sqlalchemy_would_and_survives_a_dropped_connection(
    postgres, tmp_path
):
    db = Database(database_url(tmp_path, postgres.new_database()))
    try:
        missing = select(Table("no_such_table", MetaData(), Column("x", Integer)))
        with pytest.raises(DBAPIError, match="no_such_table") as failed:
            db.read(lambda c: fetch_all(c, missing, {}))
        assert not failed.value.connection_invalidated
        # A type whose values SQLAlchemy converts is left to SQLAlchemy, not broken.
        price = select(literal(1.5, Numeric(10, 2)).label("price"))
        assert db.read(lambda c: fetch_all(c, price, {})) == [{"price": Decimal("1.50")}]
        kept = db.read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar_one())
        # An idle connection in the reads' pool too (threads read there when the kept one
        # is busy), then the server drops every connection of this database: a restart.
        with db._reads.connect() as pooled:
            pooled.execute(text("SELECT 1"))
        with db.engine.connect() as admin:
            dropped = admin.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert dropped >= 2
        # The driver read finds the kept connection dead, and the retry must not be handed
        # the dead pooled one: it reads on a new connection.
        assert db.read(lambda c: reads.views(c, "0" * 32)) == []
        assert db.read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar_one()) != kept
    finally:
        db.close()


def write_megabytes(db: Database, n: int) -> None:
    with db.session() as s:
        s.execute(text("CREATE TABLE IF NOT EXISTS scratch (b BLOB)"))
    for _ in range(n):  # a commit each: each one may checkpoint
        with db.session() as s:
            s.execute(text("INSERT INTO scratch VALUES (randomblob(1048576))"))


@pytest.mark.parametrize("background", [False, True])
def test_sqlite_commits_checkpoint_only_without_a_background_checkpointer(tmp_path, background):
    db = Database(database_url(tmp_path, None), background_checkpoints=background)
    try:
        write_megabytes(db, 6)  # 1 536 pages of 4 KiB: past the automatic checkpoint's 1 000
        frames, copied = wal_frames(tmp_path / "edgepcap.db")
        if not background:
            # A commit copied the WAL back (waiting for the disk), and the WAL restarted.
            assert frames < 1536
            return
        assert frames >= 1536 and copied == 0  # no commit did
        db.checkpoint()
        assert wal_frames(tmp_path / "edgepcap.db") == (frames, frames)
    finally:
        db.close()
