"""Who watches which capture live, and where each API process is reached for it.

Live packets never touch the database: it only says which API processes have viewers of a
capture (`LiveWatch`, renewed while they watch) and where each process takes packets from
the others (`ApiProcess`). Machines learn from their report answers that a capture is
watched; the process their copies reach hands them to its own viewers and relays them to
the other watching processes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session

from edgepcap.control.db import upsert
from edgepcap.control.models import ACTIVE_STATUSES, ApiProcess, LiveWatch, Pcap

WATCH_FOR = dt.timedelta(seconds=5)  # a watch lapses this long after its last renewal
# A process not seen for this long (it renews while it has viewers) is forgotten when
# another starts: one that crashed leaves its row behind.
FORGET_AFTER = dt.timedelta(days=1)


@dataclass(frozen=True)
class Process:
    """An API process as the others reach it with relayed copies."""

    id: str
    address: str  # host:port
    token: str


def register_process(session: Session, process: Process, now: dt.datetime) -> None:
    """This API process takes relayed packets at its address with its token."""
    session.execute(delete(ApiProcess).where(ApiProcess.seen < now - FORGET_AFTER))
    upsert(session, ApiProcess, _row(process, now), ["id"], ["address", "token", "seen"])


def forget_process(session: Session, process_id: str) -> None:
    session.execute(delete(LiveWatch).where(LiveWatch.process_id == process_id))
    session.execute(delete(ApiProcess).where(ApiProcess.id == process_id))


def watch(session: Session, pcap_id: str, process: Process, now: dt.datetime) -> None:
    """`process` has viewers of `pcap_id` now (renewed while they watch). Its own row is
    written again too: one forgotten meanwhile (FORGET_AFTER) comes back."""
    upsert(session, ApiProcess, _row(process, now), ["id"], ["address", "token", "seen"])
    table = LiveWatch.__table__
    values = {
        "pcap_id": pcap_id,
        "process_id": process.id,
        "since": now,
        "expires": now + WATCH_FOR,
    }
    # A watch that lapsed starts again from now; a current one keeps its start.
    lapsed = table.c.expires <= now
    upsert(
        session,
        LiveWatch,
        values,
        ["pcap_id", "process_id"],
        ["expires"],
        {"since": lambda excluded: case((lapsed, excluded.since), else_=table.c.since)},
    )


def _row(process: Process, now: dt.datetime) -> dict[str, Any]:
    return {"id": process.id, "address": process.address, "token": process.token, "seen": now}


def unwatch(session: Session, pcap_id: str, process_id: str) -> None:
    session.execute(
        delete(LiveWatch).where(LiveWatch.pcap_id == pcap_id, LiveWatch.process_id == process_id)
    )


def watched(session: Session, pcap_id: str, now: dt.datetime) -> dt.datetime | None:
    """Since when some process has live viewers of the capture (None: nobody watches):
    what its machines are told, so that they send what they wrote since then too."""
    return session.scalar(
        select(func.min(LiveWatch.since)).where(
            LiveWatch.pcap_id == pcap_id, LiveWatch.expires > now
        )
    )


def watchers(session: Session, pcap_id: str, now: dt.datetime) -> list[tuple[str, str, str]]:
    """(process id, relay address, token) of every process with viewers of the capture."""
    rows = session.execute(
        select(ApiProcess.id, ApiProcess.address, ApiProcess.token)
        .join(LiveWatch, LiveWatch.process_id == ApiProcess.id)
        .where(LiveWatch.pcap_id == pcap_id, LiveWatch.expires > now)
    )
    return [(i, a, t) for i, a, t in rows]


def still_active(session: Session, pcap_id: str) -> tuple[bool, str]:
    """Whether the capture is pending or running, and its status."""
    status = session.scalar(select(Pcap.status).where(Pcap.id == pcap_id)) or "deleted"
    return status in ACTIVE_STATUSES, status
