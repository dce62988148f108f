"""Accounts' prefixes: one owner per address, even when two writers race."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from sqlalchemy import event

from edgepcap.accounts import AccountError, add_prefix, create_account
from edgepcap.db import Database, database_url
from edgepcap.models import Prefix


def _racing_writers(url: str, tmp_path) -> list[Any]:
    """Two processes' worth of engines adding overlapping prefixes to two accounts, each
    held after reading the prefixes until the other has read them too (or a moment has
    passed: a writer that serialises them never lets the second read first)."""
    setup = Database(url)
    with setup.session() as session:
        a, _ = create_account(session, "a", ["2001:db8:a::/48"])
        b, _ = create_account(session, "b", ["2001:db8:b::/48"])
        ids = {"a": a.id, "b": b.id}
    setup.close()
    both_read = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def writer(i: int, account: str, cidr: str) -> None:
        db = Database(url, migrated=True)

        @event.listens_for(db.engine, "after_cursor_execute")
        def _held(_conn, _cursor, statement, *_rest):  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("SELECT") and "FROM prefixes" in statement:
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_read.wait(timeout=2)

        try:
            with db.session() as session:
                add_prefix(session, ids[account], cidr)
            outcomes[i] = "added"
        except AccountError as exc:
            outcomes[i] = exc
        finally:
            db.close()

    threads = [
        threading.Thread(target=writer, args=(0, "a", "198.51.100.0/24")),
        threading.Thread(target=writer, args=(1, "b", "198.51.100.128/25")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_overlapping_prefixes_added_at_once_leave_one_owner(backend, tmp_path, request):
    url = (
        request.getfixturevalue("postgres").new_database()
        if backend == "postgresql"
        else database_url(tmp_path, None)
    )
    outcomes = _racing_writers(url, tmp_path)
    assert sorted(o == "added" for o in outcomes) == [False, True], outcomes
    refused = next(o for o in outcomes if o != "added")
    assert "overlaps" in str(refused)
    db = Database(url, migrated=True)
    try:
        with db.session() as session:
            held = sorted(p.cidr for p in session.query(Prefix))
        assert len([c for c in held if c.startswith("198.51.100.")]) == 1, held
    finally:
        db.close()
