"""Reads on PostgreSQL's kept connection: they see every commit, from any thread, and a
connection the server dropped is replaced without the read failing."""

from __future__ import annotations

import threading

from sqlalchemy import Connection, text

from edgepcap.accounts import create_account
from edgepcap.db import Database, database_url


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
