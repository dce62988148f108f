"""How a full capture ends: once no machine works on it any more, it is closed exactly
once, with its totals, its status and what its parts' failures and kernel drops say.

Called by the end of a part (`execution.report`, then `close_if_done` once the report is
committed: the agent API), by a stop, by the sweep of lost machines (`execution`) and by
the expiry of overdue captures (`captures`).
"""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from edgepcap.control.models import ACTIVE_STATUSES, MACHINE_ACTIVE, CaptureMachine, Pcap, utcnow
from edgepcap.formats import protocol


def refresh_totals(session: Session, pcap: Pcap) -> None:
    """The capture's totals over its parts, summed by the database: every progress
    report of every machine comes here, and loading a 100-machine colo's parts each time
    was most of a report's cost (BENCHMARKS.md, fleet)."""
    packets, size = session.execute(
        select(
            func.coalesce(func.sum(CaptureMachine.packets), 0),
            func.coalesce(func.sum(CaptureMachine.bytes), 0),
        ).where(CaptureMachine.pcap_id == pcap.id)
    ).one()
    pcap.packets_captured, pcap.bytes_captured = int(packets), int(size)


def _any_active(session: Session, pcap: Pcap) -> bool:
    """Whether a part of the capture is still assigned or running (one indexed query, not
    the parts loaded: each of a colo's end reports asks)."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    CaptureMachine.pcap_id == pcap.id, CaptureMachine.state.in_(MACHINE_ACTIVE)
                )
            )
        )
    )


def finish_if_done(session: Session, pcap: Pcap) -> bool:
    """Close the capture once no machine is still working on it, exactly once: whoever
    finds no part active takes the capture's row and looks again, so that of two finding
    it at once, the second sees it closed."""
    if pcap.status not in ACTIVE_STATUSES or _any_active(session, pcap):
        return False
    session.refresh(pcap, with_for_update=True)
    # The parts as committed now, not as this session may have read them before.
    parts = list(
        session.scalars(
            select(CaptureMachine)
            .where(CaptureMachine.pcap_id == pcap.id)
            .execution_options(populate_existing=True)
        )
    )
    if pcap.status not in ACTIVE_STATUSES or not parts:
        return False
    if any(m.state in MACHINE_ACTIVE for m in parts):
        return False
    refresh_totals(session, pcap)
    now = utcnow()
    done = [m for m in parts if m.state == "done"]
    failed = [m for m in parts if m.state == "failed"]
    notes = [f"{m.machine}: {m.error}" for m in failed]
    drops = [m for m in parts if m.dropped or m.overruns]
    if drops:
        notes.append(
            "kernel drops: "
            + ", ".join(
                f"{m.machine} lost {m.dropped} packets ({m.overruns} overruns)" for m in drops
            )
        )
    pcap.finished = now
    pcap.reclaim = False
    if done:
        pcap.status = "success"
        if pcap.packets_captured == 0:
            where = ", ".join(m.machine for m in done)
            notes.insert(0, f"no packets matched the filter on {where} during the capture")
    else:
        pcap.status = "failed"
        pcap.end_reason = protocol.ERROR
    pcap.error_message = "; ".join(notes) or None
    session.flush()
    return True


def close_if_done(session: Session, pcap_id: str) -> bool:
    """After a transaction that ended parts of the capture has committed: close it if no
    part is active now (`report`: the last of machines ending together closes it)."""
    pcap = session.get(Pcap, pcap_id)
    return pcap is not None and finish_if_done(session, pcap)
