"""The supervisor of an API process: a thread that fails the parts of silent machines,
closes and expires captures, expires samples and deletes captures past their retention;
and, where it leads, a thread that seals sample partitions for the traffic view."""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from edgepcap.control import captures, execution, fleet, retention
from edgepcap.control.db import Database
from edgepcap.control.models import utcnow
from edgepcap.control.samples.store import SampleStore

EXPIRE_EVERY = 10.0
# The API process's logger: the supervisor runs in it, and its warnings were always there.
log = logging.getLogger("edgepcap.api")


class Supervisor:
    """Fails the parts of silent machines and closes captures, twice a second; deletes
    captures past their retention (retention.py) at a slower pace.

    It judges silence only over time in which it could hear the agents: from its own start,
    and again from the end of any database outage it saw (heartbeats cannot be recorded
    while the database is down, so machines would all look silent).
    """

    def __init__(
        self,
        db: Database,
        samples: SampleStore,
        lock: Path | None,
        keep: dt.timedelta,
        every: float = 0.5,
    ) -> None:
        self.db = db
        self.samples = samples
        self.lock = lock
        self._lock_fd: int | None = None
        self._next_expiry = 0.0
        self._next_retention = 0.0
        self.keep = keep  # ended captures, then deleted
        self.every = every
        self.hearing_since: dt.datetime | None = utcnow()
        # Called (with None: every machine) when a sweep ended machines' parts, so that
        # agents waiting on any API process hear of it (api.wakeup).
        self.on_change: Callable[[None], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._sealer = threading.Thread(target=self._seal_loop, name="sealer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._sealer.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _leads(self) -> bool:
        """Whether this process sweeps: one worker per data dir does (a lock file, so that
        another takes over when it dies); sweeps are safe to repeat, but not free."""
        if self.lock is None or self._lock_fd is not None:
            return True
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def listening_since(self) -> dt.datetime:
        """Since when agents could be heard (now, while the database is unreachable)."""
        return self.hearing_since or utcnow()

    def _seal(self) -> None:
        """Compacts the sample partitions no sample can reach any more (the traffic view
        reads them, and whole hours of them, fast), with the accounts' prefixes now."""
        with self.db.session() as session:
            accounts = fleet.prefix_map(session)["accounts"]
        nets = {a: [ipaddress.ip_network(c) for c in cidrs] for a, cidrs in accounts.items()}
        self.samples.seal(time.time_ns(), nets.get)

    def _seal_loop(self) -> None:
        """Sealing on a thread of its own: a backlog of partitions (after an upgrade, or a
        long stop) takes minutes, during which the sweeps must go on. Sealing is safe to
        cut at any point (everything is published by rename), so a stopping process does
        not wait for it."""
        while not self._stop.wait(EXPIRE_EVERY):
            # Only where the main loop has taken the lead (its lock), never racing it for it.
            if self.lock is not None and self._lock_fd is None:
                continue
            try:
                self._seal()
            except Exception:
                log.exception("sealing sample partitions failed; retrying")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                # Every worker, not only the one that sweeps: any one's checkpoint serves
                # all, and the WAL's bound must not hang on which of them leads.
                self.db.checkpoint()
            except Exception as exc:
                log.warning("SQLite checkpoint failed (%s); retrying", exc)
            since = self.listening_since()
            ended = 0
            try:
                with self.db.session() as session:
                    if self._leads():
                        ended = execution.sweep(session, since)
                        captures.expire_overdue(session, since)
                    else:
                        # Not sweeping, but this worker answers agents' registrations too:
                        # it must know when the database was unreachable.
                        session.execute(text("SELECT 1"))
                if ended and self.on_change is not None:
                    self.on_change(None)
                if self.hearing_since is None:
                    log.warning("database reachable again; machines get a fresh heartbeat window")
                self.hearing_since = since
            except OperationalError as exc:
                if self.hearing_since is not None:
                    first = str(exc.orig or exc).strip().splitlines()[0][:300]
                    log.warning("supervisor: the database is unreachable (%s); retrying", first)
                self.hearing_since = None
                continue
            except Exception:
                log.exception("supervisor sweep failed; retrying")
                self.hearing_since = None
                continue
            try:
                if time.monotonic() >= self._next_expiry:
                    self.samples.expire(time.time_ns())
                    self._next_expiry = time.monotonic() + EXPIRE_EVERY
            except Exception:
                log.exception("sample expiry failed; retrying")
            try:
                if time.monotonic() >= self._next_retention and self._leads():
                    self._next_retention = time.monotonic() + retention.sweep_period(self.keep)
                    if retention.sweep(self.db, self.keep):
                        self._next_retention = 0.0  # a backlog: one batch per loop
            except OperationalError:
                pass  # an outage: the sweep above reports it
            except Exception:
                log.exception("capture retention sweep failed; retrying")
