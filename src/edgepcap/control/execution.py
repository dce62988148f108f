"""How a full capture runs across machines: assignment, progress, budget leases, the end of
each part, a stop, lost machines; closing the capture once every part has ended is
`completion`'s.

Limits are totals over all machines. The unleased remainder lives in the capture's row;
a machine asks for a lease when it has packets to write, and leases are taken with
compare-and-set updates, so the sum of what machines write never exceeds the limit,
whichever API process answers.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

from edgepcap.control import completion, fleet, live
from edgepcap.control.models import (
    ACTIVE_STATUSES,
    MACHINE_ACTIVE,
    CaptureMachine,
    Machine,
    Pcap,
    unix_ns,
    utcnow,
)
from edgepcap.formats import protocol
from edgepcap.formats.protocol import Answer, Report, object_name

# A machine that stops reporting progress for this long while running is lost.
REPORT_TIMEOUT = dt.timedelta(seconds=10)


def reported_objects(pcap: Pcap) -> list[str]:
    """The objects of a capture: those its machines reported complete, by the names they
    were given. Nothing else in the bucket belongs to the capture, whatever its name."""
    return [
        m.object_name
        for m in pcap.machines
        if m.state == "done" and m.object_name == object_name(m.machine, pcap.id)
    ]


def assign(session: Session, pcap: Pcap, targets: list[Machine]) -> None:
    """Give the capture to the live machines among `targets`; fail it when none is live."""
    now = utcnow()
    live = [m for m in targets if fleet.is_live(m, now)]
    if not live:
        names = ", ".join(m.name for m in targets)
        pcap.status = "failed"
        pcap.finished = now
        pcap.end_reason = protocol.ERROR
        pcap.error_message = (
            f"no live machine in {pcap.colo_name}: {names} sent no heartbeat in the last "
            f"{int(fleet.HEARTBEAT_TIMEOUT.total_seconds())} s"
        )
        return
    pcap.packets_left = pcap.packet_limit
    pcap.bytes_left = pcap.byte_limit
    for m in live:
        pcap.machines.append(CaptureMachine(machine=m.name, state="assigned"))


def _cas_take(session: Session, pcap_id: str, column: str, amount: int) -> int:
    """Take up to `amount` from the capture's unleased budget; returns what was taken."""
    col = getattr(Pcap, column)
    for _ in range(20):
        left = session.scalar(select(col).where(Pcap.id == pcap_id))
        if left is None:
            return amount  # no such limit
        take = min(left, amount)
        if take <= 0:
            return 0
        done = session.execute(
            update(Pcap)
            .where(Pcap.id == pcap_id, col == left)
            .values({column: left - take})
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            return take
    return 0


def _give_back(session: Session, pcap_id: str, column: str, amount: int) -> None:
    if amount > 0:
        col = getattr(Pcap, column)
        session.execute(
            update(Pcap)
            .where(Pcap.id == pcap_id, col.is_not(None))
            .values({column: col + amount})
            .execution_options(synchronize_session=False)
        )


def _outstanding(rows: list[CaptureMachine], but: str) -> tuple[int, int]:
    """Leases other running machines hold and have not used (as far as they reported)."""
    p = b = 0
    for r in rows:
        if r.machine != but and r.state in MACHINE_ACTIVE:
            p += max(0, r.granted_packets - r.packets)
            b += max(0, r.granted_bytes - r.bytes)
    return p, b


def report(session: Session, machine: str, boot_id: str, pcap_id: str, rep: Report) -> Answer:
    """Record one machine's progress or end report on its part of a capture and answer it.

    A first report marks the part (and a pending capture) running. An end report records
    the part's outcome and object, gives back what it was granted and did not use, and may
    end the capture (`completion.finish_if_done`). A progress report may give budget back
    or ask for more: packets and bytes are taken from the capture's shared budget by
    compare-and-swap (`_cas_take`), so machines on several API processes never overdraw
    it; when a machine holds a packet it cannot write and nothing is left anywhere, the
    capture ends by its limit, else the others are asked to release what they hold. The
    answer tells the machine to stop (a stop, the time limit, a limit reached), what it
    was granted, and whether to release unused budget.
    """
    now = utcnow()
    # A part's end may end the capture. A colo's machines end together: their end reports
    # take only their own parts' rows, not the capture's in turn. Two of them may each
    # see the other still active (write skew) and leave the capture open: so whoever
    # ends a part looks again after its commit (`completion.close_if_done`), when the last
    # one to commit sees every part ended; the capture's row is taken only to close it, once.
    # Lock order: part, then capture, as progress reports' budget updates.
    ending = rep.state in protocol.ENDED_STATES
    part = session.get(CaptureMachine, (pcap_id, machine), with_for_update=ending)
    pcap = session.get(Pcap, pcap_id)
    if part is None or pcap is None:
        return Answer(stop=True, reason="unknown capture")
    if part.state not in MACHINE_ACTIVE or (part.boot_id and part.boot_id != boot_id):
        return Answer(stop=True, reason=part.error or "this part of the capture has ended")

    part.packets, part.bytes = rep.packets, rep.bytes
    part.kernel_matched, part.dropped, part.overruns = rep.kernel_matched, rep.dropped, rep.overruns
    part.last_report = now
    if part.state == "assigned":
        part.state = "running"
        part.boot_id = boot_id
        part.started = now
        if pcap.status == "pending":
            _mark_running(session, pcap, now)

    if rep.release_packets or rep.release_bytes:
        # Only what is granted and not yet written can go back: never a packet twice.
        rel_p = min(rep.release_packets, max(0, part.granted_packets - rep.packets))
        rel_b = min(rep.release_bytes, max(0, part.granted_bytes - rep.bytes))
        _give_back(session, pcap.id, "packets_left", rel_p)
        _give_back(session, pcap.id, "bytes_left", rel_b)
        part.granted_packets -= rel_p
        part.granted_bytes -= rel_b

    answer = Answer()
    if rep.state in protocol.ENDED_STATES:
        part.state = rep.state
        part.finished = now
        part.error = rep.error
        part.object_name = rep.object_name
        part.outbound = [list(run) for run in rep.outbound]
        part.directions_known = rep.directions_known
        if rep.end_reason and not pcap.end_reason:
            _first(session, pcap.id, end_reason=rep.end_reason)
        # Whatever it did not use goes back for the others.
        _give_back(session, pcap.id, "packets_left", max(0, part.granted_packets - rep.packets))
        _give_back(session, pcap.id, "bytes_left", max(0, part.granted_bytes - rep.bytes))
        part.granted_packets, part.granted_bytes = rep.packets, rep.bytes
        session.flush()
        completion.refresh_totals(session, pcap)  # writes the capture's row only if they changed
        completion.finish_if_done(session, pcap)
        answer.stop = True
        return answer

    deadline = pcap.started + dt.timedelta(seconds=pcap.time_limit) if pcap.started else None
    if pcap.stop_requested is not None:
        answer.stop, answer.reason = True, protocol.STOP
    elif deadline is not None and now >= deadline:
        answer.stop, answer.reason = True, protocol.TIME_LIMIT
    elif rep.need_packets or rep.need_bytes or rep.want_packets or rep.want_bytes:
        session.flush()
        want_p = max(rep.want_packets, rep.need_packets)
        want_b = max(rep.want_bytes, rep.need_bytes)
        limited_p = pcap.packet_limit is not None
        limited_b = pcap.byte_limit is not None
        got_p = _cas_take(session, pcap.id, "packets_left", want_p) if limited_p and want_p else 0
        got_b = _cas_take(session, pcap.id, "bytes_left", want_b) if limited_b and want_b else 0
        part.granted_packets += got_p
        part.granted_bytes += got_b
        answer.grant_packets, answer.grant_bytes = got_p, got_b
        session.refresh(pcap)
        have_p = part.granted_packets - rep.packets
        have_b = part.granted_bytes - rep.bytes
        short_p = limited_p and have_p < rep.need_packets
        short_b = limited_b and have_b < rep.need_bytes
        if short_p or short_b:
            others_p, others_b = _outstanding(list(pcap.machines), machine)
            # The waiting packet can never be written: nothing left anywhere.
            if short_p and have_p + others_p + (pcap.packets_left or 0) < rep.need_packets:
                _end_by_limit(pcap, protocol.PACKET_LIMIT)
            elif short_b and have_b + others_b + (pcap.bytes_left or 0) < rep.need_bytes:
                _end_by_limit(pcap, protocol.BYTE_LIMIT)
            else:
                pcap.reclaim = True
        elif pcap.reclaim:
            pcap.reclaim = False
    if pcap.end_reason in protocol.LIMIT_REASONS:
        answer.stop, answer.reason = True, pcap.end_reason
    answer.release = bool(pcap.reclaim) and not answer.stop
    since = None if answer.stop else live.watched(session, pcap.id, now)
    answer.live_since = None if since is None else unix_ns(since)
    completion.refresh_totals(session, pcap)
    session.flush()
    return answer


def _first(session: Session, pcap_id: str, **values: str) -> bool:
    """Set the capture's `values` where they are still unset, without loading it (one
    UPDATE, nothing written when another report was first); returns whether this did."""
    unset = [getattr(Pcap, name).is_(None) for name in values]
    done = session.execute(
        update(Pcap)
        .where(Pcap.id == pcap_id, *unset)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1  # type: ignore[attr-defined]


def _mark_running(session: Session, pcap: Pcap, now: dt.datetime) -> None:
    """The capture's first running part makes it running: a hundred first reports at once
    race for it, and only the first writes (the others' UPDATE matches nothing), instead
    of each writing the capture's row in turn."""
    done = session.execute(
        update(Pcap)
        .where(Pcap.id == pcap.id, Pcap.status == "pending")
        .values(status="running", started=now)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount == 1:  # type: ignore[attr-defined]
        set_committed_value(pcap, "status", "running")
        set_committed_value(pcap, "started", now)


def _end_by_limit(pcap: Pcap, reason: str) -> None:
    pcap.end_reason = pcap.end_reason or reason
    pcap.reclaim = False


def stop(session: Session, pcap: Pcap) -> None:
    """Record a stop: machines that never started are done at once, the rest stop on report."""
    now = utcnow()
    pcap.stop_requested = pcap.stop_requested or now
    pcap.end_reason = pcap.end_reason or protocol.STOP
    for m in pcap.machines:
        if m.state == "assigned":
            m.state = "done"
            m.finished = now
    if pcap.machines:
        completion.finish_if_done(session, pcap)
    elif pcap.status == "pending":
        pcap.status = "success"
        pcap.finished = now
        pcap.error_message = "stopped before any machine started capturing: no packets captured"
    session.flush()


def machines_of(session: Session, pcap_id: str) -> list[str]:
    """The machines a capture was assigned to."""
    return list(
        session.scalars(select(CaptureMachine.machine).where(CaptureMachine.pcap_id == pcap_id))
    )


def sweep(session: Session, hearing_since: dt.datetime | None = None) -> int:
    """Fail the parts of machines that went silent; returns how many parts were failed.

    `hearing_since` is when this control plane became able to hear agents (its start, or
    the end of its database outage): silence before then is the control plane's own
    blindness, not the machine's, so it is not held against the machine.
    """
    now = utcnow()
    since = hearing_since or dt.datetime.min
    failed = 0
    rows = session.execute(
        select(CaptureMachine, Machine)
        .join(Machine, Machine.name == CaptureMachine.machine)
        .where(CaptureMachine.state.in_(MACHINE_ACTIVE))
    ).all()
    touched: dict[str, Pcap] = {}
    # Captures whose parts have all ended but that are still open (an end decided
    # elsewhere that raced with another): close them now.
    others = aliased(CaptureMachine)
    for pcap in session.scalars(
        select(Pcap)
        .where(Pcap.status.in_(ACTIVE_STATUSES))
        .where(exists().where(CaptureMachine.pcap_id == Pcap.id))
        .where(~exists().where(others.pcap_id == Pcap.id, others.state.in_(MACHINE_ACTIVE)))
    ):
        touched[pcap.id] = pcap
    for part, machine in rows:
        reason = None
        if not fleet.is_live(machine, now) and now - since > fleet.HEARTBEAT_TIMEOUT:
            reason = (
                f"agent stopped sending heartbeats at {machine.last_seen:%H:%M:%S} UTC; "
                "its part of the capture is lost"
            )
        elif part.state == "running" and part.boot_id and part.boot_id != machine.boot_id:
            reason = "agent restarted during the capture; its part of the capture is lost"
        elif (
            part.state == "running"
            and part.last_report
            and now - max(part.last_report, since) > REPORT_TIMEOUT
        ):
            reason = "agent stopped reporting progress; its part of the capture is lost"
        if reason:
            part.state = "failed"
            part.error = reason
            part.finished = now
            touched[part.pcap_id] = part.pcap
            failed += 1
    session.flush()
    for pcap in touched.values():
        completion.finish_if_done(session, pcap)
    return failed
