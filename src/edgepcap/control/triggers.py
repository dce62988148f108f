"""Capture triggers: full captures that start themselves when sampled traffic spikes.

A trigger watches the account's samples matching its `filter_v1` as batches arrive
(`Triggers.observe`, called by ingest): matching samples are counted per second of their
timestamps in the database (`trigger_counts`), so that every API process's batches add up,
and the estimated rate over the last `window` seconds is the sum times the sample rate over
the window. At or over `threshold_pps`, a process claims the trigger with a compare-and-set
update of `quiet_until` (one process wins, once) and creates the full capture through
`captures.create`, under every rule a capture made by hand meets. A refusal (a full
capture already running, the bucket no longer validated, …) is recorded as an event and
the trigger tries again a window later.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from edgepcap.control import captures, execution
from edgepcap.control.credentials import new_id
from edgepcap.control.db import Database, upsert
from edgepcap.control.errors import InvalidRequest, NotFound, Refused
from edgepcap.control.models import Account, Trigger, TriggerCount, TriggerEvent, utcnow
from edgepcap.control.sample_captures import SAMPLE_RATE
from edgepcap.control.samples.store import SampleStore, filter_mask
from edgepcap.control.settings import Limits
from edgepcap.formats.filters import FilterV1

log = logging.getLogger("edgepcap.api")

# Triggers per account that have not expired.
MAX_TRIGGERS = 20
# Events kept per trigger (the newest), fires and refusals alike.
MAX_EVENTS = 50
# How long a process uses its list of triggers before reading it again: a new trigger
# counts from at most this long after it was made.
REFRESH_EVERY = 1.0
# Per-second counts older than the longest window by this much are deleted.
COUNT_KEEP = 60


@dataclass(frozen=True)
class FullCapture:
    """A trigger's capture, as `captures.create` reads a request (its `CaptureRequest`)."""

    colo_name: str | None
    destination_conf: str | None
    time_limit: int
    packet_limit: int | None
    byte_limit: int | None
    filter_v1: FilterV1 | None
    system: str = "magic-transit"
    type: str = "full"
    offset_time: dt.datetime | None = None

    @classmethod
    def of(cls, trigger: Trigger) -> FullCapture:
        body = trigger.capture
        flt = body.get("filter_v1")
        return cls(
            colo_name=body.get("colo_name"),  # type: ignore[arg-type]
            destination_conf=body.get("destination_conf"),  # type: ignore[arg-type]
            time_limit=int(body["time_limit"]),  # type: ignore[call-overload]
            packet_limit=body.get("packet_limit"),  # type: ignore[arg-type]
            byte_limit=body.get("byte_limit"),  # type: ignore[arg-type]
            filter_v1=FilterV1(**(flt if flt is not None else trigger.filter_v1)),  # type: ignore[arg-type]
            system=str(body.get("system", "magic-transit")),
        )


def status(trigger: Trigger, now: dt.datetime) -> str:
    if trigger.expires <= now:
        return "expired"
    if trigger.last_fired is not None and trigger.quiet_until and now < trigger.quiet_until:
        return "cooling_down"
    return "armed"


def create(
    session: Session,
    account: Account,
    filter_v1: FilterV1,
    threshold_pps: int,
    window: int,
    cooldown: int,
    expires: dt.datetime,
    capture: dict[str, Any],
) -> Trigger:
    """Add a trigger; `capture` is a full capture's validated request body. Its bucket must
    be one the account has proven now, as when the capture is made by hand."""
    now = utcnow()
    live = session.scalar(
        select(func.count())
        .select_from(Trigger)
        .where(Trigger.account_id == account.id, Trigger.expires > now)
    )
    if (live or 0) >= MAX_TRIGGERS:
        raise InvalidRequest(
            f"this account has {MAX_TRIGGERS} triggers that have not expired, the most it may "
            "have: delete one first"
        )
    trigger = Trigger(
        id=new_id(),
        account_id=account.id,
        filter_v1=filter_v1.as_dict(),
        threshold_pps=threshold_pps,
        window=window,
        cooldown=cooldown,
        expires=expires.astimezone(dt.UTC).replace(tzinfo=None),
        created=now,
        capture=capture,
    )
    request = FullCapture.of(trigger)
    captures.check_filter_reachable(account, request)
    captures.check_full_request(session, account, request)
    session.add(trigger)
    session.flush()
    return trigger


def get(session: Session, account_id: str, trigger_id: str) -> Trigger:
    trigger = session.get(Trigger, trigger_id)
    if trigger is None or trigger.account_id != account_id:
        raise NotFound(f"no trigger {trigger_id} in this account")
    return trigger


def listing(session: Session, account_id: str) -> list[Trigger]:
    return list(
        session.scalars(
            select(Trigger).where(Trigger.account_id == account_id).order_by(Trigger.created)
        )
    )


def remove(session: Session, account_id: str, trigger_id: str) -> None:
    trigger = get(session, account_id, trigger_id)
    for model in (TriggerCount, TriggerEvent):
        session.execute(delete(model).where(model.trigger_id == trigger.id))
    session.delete(trigger)


def events(session: Session, trigger_id: str) -> list[TriggerEvent]:
    """The trigger's newest events, oldest first."""
    rows = session.scalars(
        select(TriggerEvent)
        .where(TriggerEvent.trigger_id == trigger_id)
        .order_by(TriggerEvent.id.desc())
        .limit(MAX_EVENTS)
    )
    return list(reversed(list(rows)))


@dataclass(frozen=True)
class Watched:
    """What a process needs of an armed trigger to count a batch for it."""

    id: str
    account: bytes
    filter: FilterV1
    threshold_pps: int
    window: int
    quiet_until: dt.datetime | None


class Triggers:
    """One API process's side of triggers: counts its batches, fires what reaches its
    threshold. Thread-safe (ingest runs in the thread pool)."""

    def __init__(self, db: Database, limits: Limits, samples: SampleStore) -> None:
        self.db = db
        self.limits = limits
        self.samples = samples
        self._lock = threading.Lock()
        self._watched: list[Watched] = []
        self._read_at = -REFRESH_EVERY
        self._swept_at = 0.0

    def changed(self) -> None:
        """A trigger was made or deleted here: read them again before the next batch."""
        with self._lock:
            self._read_at = -REFRESH_EVERY

    def _armed(self) -> list[Watched]:
        with self._lock:
            if time.monotonic() - self._read_at < REFRESH_EVERY:
                return self._watched
        with self.db.session() as session:
            rows = session.scalars(select(Trigger).where(Trigger.expires > utcnow()))
            watched = [
                Watched(
                    t.id,
                    bytes.fromhex(t.account_id),
                    FilterV1(**t.filter_v1),
                    t.threshold_pps,
                    t.window,
                    t.quiet_until,
                )
                for t in rows
            ]
        with self._lock:
            self._watched, self._read_at = watched, time.monotonic()
        return watched

    def observe(self, wire: np.ndarray) -> list[str]:
        """Count a batch of kept wire records for the triggers of their accounts; fire the
        ones at their threshold. Returns the machines of the captures it created."""
        armed = self._armed()
        if not armed or not len(wire):
            return []
        accounts = {bytes(a) for a in np.unique(wire["account"])}
        mine = [t for t in armed if t.account in accounts]
        if not mine:
            return []
        now_s = int(time.time())
        due: list[tuple[Watched, int]] = []
        with self.db.session() as session:
            for t in mine:
                rows = wire[wire["account"] == np.frombuffer(t.account, dtype="V16")[0]]
                hit = rows[filter_mask(rows, t.filter)]
                if not len(hit):
                    continue
                seconds, counts = np.unique(hit["ts"] // 1_000_000_000, return_counts=True)
                for second, n in zip(seconds.tolist(), counts.tolist(), strict=True):
                    upsert(
                        session,
                        TriggerCount,
                        {"trigger_id": t.id, "second": second, "samples": n},
                        ["trigger_id", "second"],
                        [],
                        {"samples": lambda new: TriggerCount.samples + new.samples},
                    )
                total = session.scalar(
                    select(func.coalesce(func.sum(TriggerCount.samples), 0)).where(
                        TriggerCount.trigger_id == t.id,
                        TriggerCount.second > now_s - t.window,
                        TriggerCount.second <= now_s,
                    )
                )
                pps = int(total) * SAMPLE_RATE // t.window
                # Quiet as last read (cooling down, or refused a moment ago): no claim to
                # try. A fire elsewhere since then is caught by the claim itself.
                quiet = t.quiet_until is not None and t.quiet_until > utcnow()
                if pps >= t.threshold_pps and not quiet:
                    due.append((t, pps))
            if time.monotonic() - self._swept_at > COUNT_KEEP:
                self._swept_at = time.monotonic()
                session.execute(
                    delete(TriggerCount).where(TriggerCount.second < now_s - 300 - COUNT_KEEP)
                )
        return [machine for t, pps in due for machine in self.fire(t.id, pps)]

    def fire(self, trigger_id: str, pps: int) -> list[str]:
        """Claim the trigger and create its capture; a refusal is recorded instead. The
        capture's machines; none when another process had it, it is quiet, or the capture
        was refused."""
        now = utcnow()
        with self.db.session() as session:
            trigger = session.get(Trigger, trigger_id)
            if trigger is None or not _claim(session, trigger, now, trigger.cooldown):
                return []
            account = session.get(Account, trigger.account_id)
            try:
                pcap = captures.create(
                    session, account, FullCapture.of(trigger), self.limits, self.samples
                )
            except Refused as exc:
                session.rollback()  # the claim too: the refusal claims its own below
                refusal = str(exc)
            else:
                pcap.trigger_id = trigger.id
                trigger.last_fired = now
                _record(
                    session,
                    TriggerEvent(trigger_id=trigger.id, at=now, estimated_pps=pps, pcap_id=pcap.id),
                )
                log.info("trigger %s fired at %d pps: capture %s", trigger.id, pps, pcap.id)
                session.flush()
                return execution.machines_of(session, pcap.id)
        # The refused create may have rolled the claim back: claim again for the refusal,
        # so that it is recorded once a window, whichever process sees it.
        with self.db.session() as session:
            trigger = session.get(Trigger, trigger_id)
            if trigger is not None and _claim(session, trigger, now, trigger.window):
                _record(
                    session,
                    TriggerEvent(trigger_id=trigger.id, at=now, estimated_pps=pps, message=refusal),
                )
        return []


def _record(session: Session, event: TriggerEvent) -> None:
    """Add an event and forget the trigger's events older than its newest MAX_EVENTS."""
    session.add(event)
    session.flush()
    oldest_kept = session.scalar(
        select(TriggerEvent.id)
        .where(TriggerEvent.trigger_id == event.trigger_id)
        .order_by(TriggerEvent.id.desc())
        .offset(MAX_EVENTS - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(
            delete(TriggerEvent).where(
                TriggerEvent.trigger_id == event.trigger_id, TriggerEvent.id < oldest_kept
            )
        )


def _claim(session: Session, trigger: Trigger, now: dt.datetime, quiet: int) -> bool:
    """Compare-and-set: quiet the trigger for `quiet` seconds if it may fire now."""
    claimed = session.execute(
        update(Trigger)
        .where(
            Trigger.id == trigger.id,
            Trigger.expires > now,
            (Trigger.quiet_until.is_(None)) | (Trigger.quiet_until <= now),
        )
        .values(quiet_until=now + dt.timedelta(seconds=quiet))
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return False
    session.refresh(trigger)
    return True
