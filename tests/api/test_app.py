"""The API process's own housekeeping, against a real server: SQLite's WAL checkpoints."""

from __future__ import annotations

import sqlite3

from tests.support.processes import wait_for
from tests.support.servers import start_server, stop_server
from tests.support.sqlite import wal_frames


def test_the_server_checkpoints_the_wal_that_commits_leave_behind(tmp_path):
    server = start_server(tmp_path, None)
    writer = sqlite3.connect(tmp_path / "edgepcap.db", isolation_level=None)
    try:
        # Writes whose own commits never checkpoint (as the server's do not): only the
        # server's supervisor can copy them back.
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE scratch (b BLOB)")
        for _ in range(6):
            writer.execute("INSERT INTO scratch VALUES (randomblob(1048576))")
        frames = wal_frames(tmp_path / "edgepcap.db")[0]
        assert frames > 1000
        wait_for(
            lambda: wal_frames(tmp_path / "edgepcap.db")[1] >= frames,
            10,
            "the server to checkpoint the WAL",
        )
    finally:
        writer.close()
        stop_server(server)
