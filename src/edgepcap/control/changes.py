"""Word of changes between API processes on PostgreSQL: LISTEN/NOTIFY on one channel.

A process that changes what machines must do (a capture made, stopped, ended) tells the
others at once with `NOTIFY`, naming the machines concerned, so that an agent long-polling
another process hears of it without waiting for a periodic look at the database. SQLite
has no such thing: there each process's polls look every 0.1 s (`api.wakeup`).

The same channel carries word that agent keys were revoked (`announce_keys_revoked`, in
the revoking transaction, from whichever process revokes): API processes that keep
verified keys in memory forget them (`on_keys`).

Hand-written over psycopg because SQLAlchemy has no LISTEN: one connection of its own
listens (autocommit, `Connection.notifies`), another sends from a queue, so that `publish`
never blocks its caller on the database. When the listening connection is lost it is
opened again, and `on_message(None)` (everyone) and `on_keys()` are called: what was said
meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
from collections.abc import Callable, Iterable

import psycopg
from sqlalchemy import func, make_url, select
from sqlalchemy.orm import Session

from edgepcap.control.db import ALIVE

log = logging.getLogger("edgepcap.api")

CHANNEL = "edgepcap_wakeup"
EVERYONE = "*"
KEYS_REVOKED = "!keys"  # instead of machines: agent keys were revoked
# NOTIFY payloads are at most 8000 bytes: longer lists of machines become "everyone".
MAX_PAYLOAD = 7900
RETRY_EVERY = 1.0


def encode(origin: str, machines: Iterable[str] | None) -> str:
    """`origin|m1,m2` (or `origin|*`): who speaks, and of which machines."""
    names = EVERYONE if machines is None else ",".join(sorted(set(machines)))
    return f"{origin}|{names if len(names) <= MAX_PAYLOAD else EVERYONE}"


def decode(payload: str) -> tuple[str, list[str] | None]:
    origin, _, names = payload.partition("|")
    return origin, None if names == EVERYONE else [m for m in names.split(",") if m]


def announce_keys_revoked(session: Session) -> None:
    """Tell every API process, when `session` commits, that agent keys were revoked
    (PostgreSQL's NOTIFY is transactional: never before the revocation is visible)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, f"revoked|{KEYS_REVOKED}")))


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it (no `+psycopg` driver part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Channel:
    """This process's end of the channel: `publish` to the others, `on_message` from them
    (a list of machines, or None for everyone), `on_keys` when agent keys were revoked
    (or word may have been lost). `listening` says whether word from the others arrives
    now."""

    def __init__(
        self,
        url: str,
        on_message: Callable[[list[str] | None], None],
        on_keys: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = libpq_url(url)
        self.on_message = on_message
        self.on_keys = on_keys
        self.origin = secrets.token_hex(8)
        self.listening = False
        self.received = 0  # messages from other processes
        self._out: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="listen", daemon=True)
        self._sender = threading.Thread(target=self._send, name="notify", daemon=True)

    def start(self) -> None:
        self._listener.start()
        self._sender.start()

    def stop(self) -> None:
        self._stop.set()
        self._out.put(None)
        self._sender.join(5)
        self._listener.join(5)

    def publish(self, machines: Iterable[str] | None) -> None:
        """Tell the other processes (never blocks)."""
        self._out.put(encode(self.origin, machines))

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **ALIVE) as conn:  # type: ignore[arg-type]
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not self.listening:
                        self.on_keys()  # what was said while away is lost
                        self.listening = True
                        self.on_message(None)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.payload.endswith("|" + KEYS_REVOKED):
                                self.on_keys()
                                continue
                            origin, machines = decode(note.payload)
                            if origin != self.origin:  # this process woke its own already
                                self.received += 1
                                self.on_message(machines)
            except Exception as exc:
                if self.listening:
                    log.warning("LISTEN %s lost (%s); agents' polls look every 0.1 s", CHANNEL, exc)
                self.listening = False
                self.on_keys()
                self._stop.wait(RETRY_EVERY)
        self.listening = False

    def _send(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            payload = self._out.get()
            if payload is None:
                break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True)
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except Exception as exc:
                # The others find the change at their next look at the database (every
                # 0.1 s while their own listener is away, else at their agents' next polls).
                log.warning("NOTIFY %s failed (%s)", CHANNEL, exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
