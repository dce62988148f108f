"""Database engine, sessions and schema migrations (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Select, create_engine, event, make_url
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

MIGRATIONS = Path(__file__).parent / "migrations"
# Pages the WAL may reach before a commit checkpoints it anyway (64 MiB at 4 KiB), when
# the API's supervisor checkpoints it: only if that loop stalls does a request pay.
BACKSTOP_CHECKPOINT_PAGES = 16384
T = TypeVar("T")
# libpq's settings for every PostgreSQL connection: reads run on the event loop, and a
# connection that died silently (failover, a dropped NAT entry) must fail within seconds,
# not hang the process on TCP's retransmissions (nor leave a listener deaf, unaware).
ALIVE = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
log = logging.getLogger(__name__)


def database_url(data_dir: Path, url: str | None) -> str:
    """The SQLAlchemy URL for a `--database` value, SQLite in the data dir when none is given."""
    if not url:
        return f"sqlite:///{(data_dir / 'edgepcap.db').resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we ship; plain postgresql:// URLs mean it.
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, ping: bool = True, checkpoints: bool = True) -> Engine:
    """An engine on `url`. On SQLite, `checkpoints=False` leaves copying the WAL back into
    the database to whoever calls `Database.checkpoint` (the API's supervisor), with
    commits doing it only past BACKSTOP_CHECKPOINT_PAGES."""
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the writer; foreign keys are off by
            # default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            if not checkpoints:
                # Otherwise the commit that takes the WAL past 1000 pages copies it back
                # and waits for the disk (fdatasync) inside a request; the supervisor
                # checkpoints instead (BENCHMARKS.md, "Sample captures and SQLite's WAL").
                cur.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            cur.close()

        return engine
    return create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=ping, connect_args=dict(ALIVE)
    )


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

    def __init__(
        self, url: str, migrated: bool = False, background_checkpoints: bool = False
    ) -> None:
        self.url = url
        self.engine = make_engine(url, checkpoints=not background_checkpoints)
        if not migrated:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads on every request (auth, GETs) on PostgreSQL: no pre-ping and no transaction
        # (BEGIN, ROLLBACK), round trips that tripled their cost; `read` retries once on a
        # connection found dead instead.
        self._reads = (
            self.engine
            if self.engine.name == "sqlite"
            else make_engine(url, ping=False).execution_options(isolation_level="AUTOCOMMIT")
        )
        # One connection kept checked out for those reads: they run on the event loop, one
        # at a time, and a pool checkout and check-in (with its reset) per GET is a cost
        # the reads do not need (BENCHMARKS.md, "PostgreSQL, one worker"). Whoever finds
        # it busy (a thread) uses the pool.
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

    def checkpoint(self) -> None:
        """Copy SQLite's WAL back into the database without waiting for anyone (PASSIVE):
        for openers with `background_checkpoints`, from a thread no request waits on. Any
        process's checkpoint serves all of them. Nothing to do on PostgreSQL."""
        if self.engine.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

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


@dataclass(frozen=True)
class _Plan:
    compiled: SQLCompiler
    sql: str
    keys: tuple[str, ...]
    expands: bool  # has `IN` lists, whose binds depend on each call's lengths


# Keyed by the statement itself, not its id(): a statement collected and another given its
# id must not find its plan. Meant for module-level statements: a few entries.
_plans: dict[Select[Any], _Plan | None] = {}


def _plan(statement: Select[Any], dialect: Dialect) -> _Plan | None:
    """`statement` compiled for psycopg, or None when SQLAlchemy must run it: a column or
    parameter whose values SQLAlchemy converts (psycopg converts all of ours itself), or
    two columns of one name (SQLAlchemy refuses those; a dict would merge them)."""
    if statement in _plans:
        return _plans[statement]
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    keys = tuple(statement.selected_columns.keys())
    try:
        converted = any(
            c.type.dialect_impl(dialect).result_processor(dialect, None) is not None
            for c in statement.selected_columns
        ) or any(
            b.type.dialect_impl(dialect).bind_processor(dialect) is not None
            for b in compiled.binds.values()
        )
    except Exception:  # a type that needs the result's column type to decide (Numeric)
        converted = True
    plan = None
    if not converted and len(set(keys)) == len(keys):
        plan = _Plan(
            compiled,
            compiled.string,
            keys,
            any(b.expanding for b in compiled.binds.values()),
        )
    _plans[statement] = plan
    return plan


def fetch_all(
    conn: Connection, statement: Select[Any], params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The rows of a read as dicts. On PostgreSQL the statement, compiled once, runs on the
    driver's connection as a prepared statement.

    Hand-written because SQLAlchemy's execution and result layers cost as much as the
    round trip on these reads, which every poll makes, most of it building psycopg's
    column descriptions for the result's metadata on every execution (BENCHMARKS.md,
    "PostgreSQL, one worker"). Only where SQLAlchemy would not convert a value (the
    plan checks), so the rows are the same either way; elsewhere (SQLite) it runs them.
    """
    dialect = conn.dialect
    psycopg = dialect.name == "postgresql" and dialect.driver == "psycopg"
    plan = _plan(statement, dialect) if psycopg else None
    raw = conn.connection.driver_connection if plan is not None else None
    # A read outside autocommit would leave a transaction open that nobody ends.
    if plan is None or raw is None or not raw.autocommit:
        return [dict(row) for row in conn.execute(statement, params).mappings()]
    if plan.expands:
        state = plan.compiled.construct_expanded_state(params)
        sql, values = state.statement, state.parameters
    else:
        sql, values = plan.sql, plan.compiled.construct_params(params)
    try:
        with raw.cursor() as cursor:
            cursor.execute(sql, values, prepare=True)
            rows = cursor.fetchall()
    except dialect.loaded_dbapi.Error:
        # Once more through SQLAlchemy (a read in autocommit: safe to repeat), which fails
        # the same way and then does what a driver error needs: a dead connection
        # invalidates itself and every older one in the pool, so that the caller's retry
        # is not handed another (a restart), and the error is its DBAPIError.
        return [dict(row) for row in conn.execute(statement, params).mappings()]
    return [dict(zip(plan.keys, row, strict=True)) for row in rows]


def make_data_dir(data_dir: Path) -> None:
    """Create the data dir when missing, for its owner only: it holds the database, keys
    and customers' sampled packets."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    loose = data_dir.stat().st_mode & 0o077
    if loose:  # made by hand or by an older version: the operator's to tighten, not ours
        log.warning(
            "the data dir %s is open to other users (mode %o): chmod 700 it",
            data_dir,
            data_dir.stat().st_mode & 0o777,
        )


def _create_private(path: str | None) -> None:
    """Create an SQLite database file readable by its owner only, before SQLite does (with
    the umask's mode): SQLite gives its -wal and -shm files the database file's mode."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with suppress(FileExistsError, FileNotFoundError):  # no directory: SQLite's error says so
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_database(data_dir: Path, url: str | None) -> Database:
    make_data_dir(data_dir)
    return Database(database_url(data_dir, url))


def upsert(
    session: Session,
    model: Any,
    values: dict[str, Any],
    keys: list[str],
    updates: list[str],
    computed: dict[str, Callable[[Any], Any]] | None = None,
) -> None:
    """INSERT … ON CONFLICT DO UPDATE, so that two requests at once do not collide
    (SQLite and PostgreSQL spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(**values)
    changes: dict[str, Any] = {name: stmt.excluded[name] for name in updates}
    for name, make in (computed or {}).items():
        changes[name] = make(stmt.excluded)
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))
