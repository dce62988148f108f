"""What an agent's long poll finds: its machine's new jobs and which of the captures it
runs must stop, read as plain rows on a connection without transaction (`Database.read`):
every poll of a fleet looks once on arrival, thousands a minute (BENCHMARKS.md, fleet)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, select

from edgepcap.control.db import fetch_all
from edgepcap.control.models import (
    ACTIVE_STATUSES,
    MACHINE_ACTIVE,
    CaptureMachine,
    Machine,
    Pcap,
)
from edgepcap.formats import protocol

PCAPS = Pcap.__table__
PARTS = CaptureMachine.__table__
MACHINES = Machine.__table__

# The machine's current run, with the captures assigned to it and not yet started, oldest
# first (none: one row of NULLs; no machine: no row), in one statement.
_JOBS = (
    select(
        MACHINES.c.boot_id,
        PCAPS.c.id,
        PCAPS.c.account_id,
        PCAPS.c.prefixes,
        PCAPS.c.filter_v1,
        PCAPS.c.time_limit,
        PCAPS.c.packet_limit,
        PCAPS.c.byte_limit,
        PCAPS.c.destination_conf,
    )
    .select_from(
        MACHINES.outerjoin(
            PARTS.join(
                PCAPS,
                and_(PCAPS.c.id == PARTS.c.pcap_id, PCAPS.c.status.in_(ACTIVE_STATUSES)),
            ),
            and_(PARTS.c.machine == MACHINES.c.name, PARTS.c.state == "assigned"),
        )
    )
    .where(MACHINES.c.name == bindparam("machine"))
    .order_by(PCAPS.c.submitted)
)
_STOPS = (
    select(PCAPS.c.id, PCAPS.c.stop_requested, PCAPS.c.end_reason, PARTS.c.state, PARTS.c.error)
    .select_from(PARTS.join(PCAPS, PCAPS.c.id == PARTS.c.pcap_id))
    .where(
        PARTS.c.machine == bindparam("machine"),
        PARTS.c.pcap_id.in_(bindparam("ids", expanding=True)),
    )
)


def jobs(conn: Connection, machine: str, boot_id: str) -> list[dict[str, Any]] | None:
    """The captures assigned to `machine` that it has not started (rows of `pcaps`), or
    None: `boot_id` is not its current run (a previous run, or a copy of its key
    elsewhere, speaks for nobody)."""
    rows = fetch_all(conn, _JOBS, {"machine": machine})
    if not rows or rows[0]["boot_id"] != boot_id:
        return None
    return [row for row in rows if row["id"] is not None]


def stops(conn: Connection, machine: str, pcap_ids: list[str]) -> list[tuple[str, str]]:
    """Which of the captures `machine` is running it should stop now, and why."""
    if not pcap_ids:
        return []
    found: dict[str, str | None] = {}
    for row in fetch_all(conn, _STOPS, {"machine": machine, "ids": pcap_ids}):
        reason = None
        if row["state"] not in MACHINE_ACTIVE:
            reason = row["error"] or "this part of the capture has ended"
        elif row["stop_requested"] is not None:
            reason = protocol.STOP
        elif row["end_reason"] in protocol.LIMIT_REASONS:
            reason = row["end_reason"]
        found[row["id"]] = reason
    out = [(i, r) for i, r in found.items() if r]
    out += [(i, "unknown capture") for i in pcap_ids if i not in found]
    return out
