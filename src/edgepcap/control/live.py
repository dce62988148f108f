"""Who watches which capture live, and where each API process is reached for it.

Live packets never touch the database: it only says which API processes have viewers of a
capture (`LiveWatch`, renewed while they watch) and where each process takes packets from
the others (`ApiProcess`). Machines learn from their report answers that a capture is
watched; the process their copies reach hands them to its own viewers and relays them to
the other watching processes.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from edgepcap.control.models import ACTIVE_STATUSES, ApiProcess, LiveWatch, Pcap

WATCH_FOR = dt.timedelta(seconds=5)  # a watch lapses this long after its last renewal
# A process not seen for this long (it renews while it has viewers) is forgotten when
# another starts: one that crashed leaves its row behind.
FORGET_AFTER = dt.timedelta(days=1)


def register_process(
    session: Session, process_id: str, address: str, token: str, now: dt.datetime
) -> None:
    """This API process takes relayed packets at `address` (host:port) with `token`."""
    session.execute(delete(ApiProcess).where(ApiProcess.seen < now - FORGET_AFTER))
    session.merge(ApiProcess(id=process_id, address=address, token=token, seen=now))


def forget_process(session: Session, process_id: str) -> None:
    session.execute(delete(LiveWatch).where(LiveWatch.process_id == process_id))
    session.execute(delete(ApiProcess).where(ApiProcess.id == process_id))


def watch(session: Session, pcap_id: str, process_id: str, now: dt.datetime) -> None:
    """This process has viewers of `pcap_id` now (renewed while they watch)."""
    session.execute(update(ApiProcess).where(ApiProcess.id == process_id).values(seen=now))
    row = session.get(LiveWatch, (pcap_id, process_id))
    if row is None or row.expires <= now:
        session.merge(
            LiveWatch(pcap_id=pcap_id, process_id=process_id, since=now, expires=now + WATCH_FOR)
        )
    else:
        row.expires = now + WATCH_FOR


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
