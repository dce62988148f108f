"""Accounts' prefixes: one owner per address, even when two writers race."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text

from edgepcap.control.accounts import AccountError, add_prefix, create_account
from edgepcap.control.db import MIGRATIONS, Database, database_url, migrate
from edgepcap.control.models import Prefix


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
        except Exception as exc:  # an AccountError is the expected refusal; others are shown
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
    assert isinstance(refused, AccountError) and "overlaps" in str(refused), repr(refused)
    db = Database(url, migrated=True)
    try:
        with db.session() as session:
            held = sorted(p.cidr for p in session.query(Prefix))
        assert len([c for c in held if c.startswith("198.51.100.")]) == 1, held
    finally:
        db.close()


def test_overlaps_left_by_racing_writers_are_named_when_the_rule_is_added(postgres):
    # A database that older versions' racing writers left with overlapping prefixes: the
    # migration that adds PostgreSQL's rule says which ones, instead of its bare error.
    url = postgres.new_database()
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0005")
            for account, cidr in (("a1", "10.0.0.0/24"), ("a2", "10.0.0.0/25")):
                conn.execute(
                    text(
                        "INSERT INTO accounts (id, name, email, api_token_hash, api_key_hash,"
                        " created) VALUES (:id, :id, :id, :id, :id, now())"
                    ),
                    {"id": account},
                )
                conn.execute(
                    text("INSERT INTO prefixes (account_id, cidr) VALUES (:a, :c)"),
                    {"a": account, "c": cidr},
                )
        with pytest.raises(RuntimeError) as refused:
            migrate(engine)
        assert "10.0.0.0/24 (account a1) and 10.0.0.0/25 (account a2)" in str(refused.value)
    finally:
        engine.dispose()
