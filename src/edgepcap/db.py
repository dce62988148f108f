"""Database engine, sessions and schema migrations (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
log = logging.getLogger(__name__)


def database_url(data_dir: Path, url: str | None) -> str:
    """The SQLAlchemy URL for a `--database` value, SQLite in the data dir when none is given."""
    if not url:
        return f"sqlite:///{(data_dir / 'edgepcap.db').resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we ship; plain postgresql:// URLs mean it.
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the writer; foreign keys are off by
            # default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # Reads run on the event loop: a connection that died silently (failover, a dropped
    # NAT entry) must fail within seconds, not hang the process on TCP's retransmissions.
    alive = {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": 15_000,
    }
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=ping, connect_args=alive)


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    # Imported here: Alembic pulls in Mako and Pygments (~0.4 s here), and API workers,
    # which the parent migrated for, never need them.
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two API processes starting together must not both run migrations.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242420001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """An engine with its session factory, migrated on open (unless the opener knows that
    another process just did: API workers)."""

    def __init__(self, url: str, migrated: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url)
        if not migrated:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads on every request (auth, GETs) on PostgreSQL: no pre-ping and no transaction
        # (BEGIN, ROLLBACK), round trips that tripled their cost; `read` retries once on a
        # connection found dead instead.
        self._reads = (
            self.engine
            if self.engine.name == "sqlite"
            else make_engine(url, False).execution_options(isolation_level="AUTOCOMMIT")
        )
        # One connection kept checked out for those reads: they run on the event loop, one
        # at a time, and checking a connection out of the pool and back in (with its reset)
        # cost a sixth of a GET on PostgreSQL. Whoever finds it busy (a thread) uses the pool.
        self._held: Connection | None = None
        self._held_lock = threading.Lock()

    def read(self, query: Callable[[Connection], T]) -> T:
        """`query` on a connection of the reads; once more on a fresh one if the connection
        turned out dead (the database restarted): reads are safe to repeat."""
        if self._reads is not self.engine and self._held_lock.acquire(blocking=False):
            try:
                return self._read_held(query)
            finally:
                self._held_lock.release()
        try:
            with self._reads.connect() as conn:
                return query(conn)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self._reads.connect() as conn:
            return query(conn)

    def _read_held(self, query: Callable[[Connection], T]) -> T:
        for attempt in (1, 2):
            if self._held is None:
                self._held = self._reads.connect()
            try:
                return query(self._held)
            except BaseException as exc:
                # Whatever failed, the next read starts on a clean connection.
                self._release_held()
                invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if attempt == 2 or not invalidated:
                    raise
        raise AssertionError("unreachable")

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            # A connection the server already dropped can fail to close; that must not
            # hide the error that brought us here, nor stop the retry.
            try:
                held.close()
            except Exception as exc:
                log.debug("closing the kept read connection failed: %s", exc)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        with self._held_lock:
            self._release_held()
        self.engine.dispose()
        self._reads.dispose()


def open_database(data_dir: Path, url: str | None) -> Database:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Database(database_url(data_dir, url))
