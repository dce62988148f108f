"""Retention of ended captures: after EDGEPCAP_CAPTURE_RETENTION they are deleted.

A capture is deleted with what the metadata database keeps of it: its row, its machines'
parts and, for a sample capture, its stored PCAP (up to ~1.8 MB). The files a full capture
wrote to the customer's bucket are the customer's and are never touched. A capture that
is still pending or running is never deleted, however old; the clock starts when it ends.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from edgepcap.control.db import Database
from edgepcap.control.models import ACTIVE_STATUSES, CaptureMachine, Pcap, PcapBlob, utcnow

# Captures deleted per transaction: short transactions, and at most this many blobs
# (~1.8 MB each) freed at once.
BATCH = 100
# A sweep every tenth of the retention (nothing outlives it by more than that), but at
# least once a minute (the default's pace) and at most twice a second.
LONGEST_PERIOD = 60.0
log = logging.getLogger("edgepcap.api")


def sweep_period(retention: dt.timedelta) -> float:
    """Seconds between retention sweeps."""
    return min(LONGEST_PERIOD, max(0.5, retention.total_seconds() / 10))


def delete_expired(session: Session, now: dt.datetime, retention: dt.timedelta) -> int:
    """Delete up to BATCH captures that ended before `now - retention`, oldest first, with
    their parts and stored PCAPs; returns how many (BATCH: there may be more)."""
    ended = Pcap.status.not_in(ACTIVE_STATUSES)
    ids = list(
        session.scalars(
            select(Pcap.id)
            .where(Pcap.finished < now - retention, ended)
            .order_by(Pcap.finished)
            .limit(BATCH)
        )
    )
    if not ids:
        return 0
    # Children first: the foreign keys cascade, but saying so does not depend on it.
    for statement in (
        delete(PcapBlob).where(PcapBlob.pcap_id.in_(ids)),
        delete(CaptureMachine).where(CaptureMachine.pcap_id.in_(ids)),
        delete(Pcap).where(Pcap.id.in_(ids), ended),
    ):
        session.execute(statement.execution_options(synchronize_session=False))
    return len(ids)


def sweep(db: Database, retention: dt.timedelta) -> bool:
    """One batch of the API supervisor's sweep; whether more may be waiting (a backlog
    goes one batch per supervisor loop, between its other sweeps, rather than in one
    long transaction)."""
    with db.session() as session:
        deleted = delete_expired(session, utcnow(), retention)
    if deleted:
        log.info("retention: deleted %d captures that ended over %s ago", deleted, retention)
    return deleted == BATCH
