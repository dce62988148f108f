"""Capture requests: creation under the rate limits, listing, stopping and expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgepcap import execution
from edgepcap import machines as fleet
from edgepcap.accounts import account_networks
from edgepcap.api.schemas import CreatePcap
from edgepcap.credentials import new_id
from edgepcap.models import ACTIVE_STATUSES, MACHINE_ACTIVE, Account, Bucket, Pcap, utcnow

SAMPLE_INTERVAL = dt.timedelta(minutes=1)
# A full capture that outlives its time limit by this much without a machine
# reporting its end is failed, so that it does not hold the account's single
# full-capture slot forever.
OVERDUE_GRACE = dt.timedelta(seconds=60)
LIST_LIMIT = 50


class CaptureError(Exception):
    """A capture request refused; `kind` selects the HTTP answer."""

    def __init__(self, kind: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def check_filter_reachable(account: Account, req: CreatePcap) -> None:
    """Refuse a filter that can never match: both addresses outside the account's prefixes."""
    f = req.filter_v1
    if f is None or f.source is None or f.destination is None:
        return
    nets = account_networks(account)

    def owned(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr.version == n.version and addr in n for n in nets)

    if not owned(f.source) and not owned(f.destination):
        raise CaptureError(
            "invalid",
            f"neither `filter_v1.source_address` ({f.source}) nor `filter_v1.destination_address` "
            f"({f.destination}) is in this account's prefixes "
            f"({', '.join(str(n) for n in nets)}): the capture could never match a packet",
        )


def create(session: Session, account: Account, req: CreatePcap) -> Pcap:
    check_filter_reachable(account, req)
    now = utcnow()
    pcap = Pcap(
        id=new_id(),
        account_id=account.id,
        type=req.type,
        system=req.system,
        status="pending",
        filter_v1=req.filter_v1.as_dict() if req.filter_v1 else {},
        time_limit=req.time_limit,
        packet_limit=req.packet_limit,
        byte_limit=req.byte_limit,
        colo_name=req.colo_name,
        destination_conf=req.destination_conf,
        offset_time=_naive_utc(req.offset_time) if req.offset_time else None,
        submitted=now,
        packets_captured=0,
        bytes_captured=0,
    )
    targets = []
    if req.type == "simple":
        _take_sample_slot(session, account, now)
    else:
        _require_validated_bucket(session, account, req.destination_conf or "")
        try:
            _name, targets = fleet.resolve(session, req.colo_name or "")
        except fleet.FleetError as exc:
            raise CaptureError("invalid", str(exc)) from None
        expire_overdue(session, account.id)
        pcap.prefixes = [p.cidr for p in account.prefixes]
        execution.assign(session, pcap, targets)
    session.add(pcap)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise _full_capture_busy(session, account.id) from None
    return pcap


def _take_sample_slot(session: Session, account: Account, now: dt.datetime) -> None:
    # One conditional UPDATE decides the race: whichever process sets
    # last_sample_at first wins; the database serialises the rest.
    cutoff = now - SAMPLE_INTERVAL
    result = session.execute(
        update(Account)
        .where(Account.id == account.id)
        .where((Account.last_sample_at.is_(None)) | (Account.last_sample_at <= cutoff))
        .values(last_sample_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    last = session.scalar(select(Account.last_sample_at).where(Account.id == account.id))
    wait = SAMPLE_INTERVAL - (now - last) if last else SAMPLE_INTERVAL
    seconds = max(1, math.ceil(wait.total_seconds()))
    raise CaptureError(
        "rate_limited",
        f"one sample capture per minute per account: retry in {seconds} s",
        retry_after=seconds,
    )


def _require_validated_bucket(session: Session, account: Account, conf: str) -> None:
    bucket = session.scalar(
        select(Bucket).where(Bucket.account_id == account.id, Bucket.destination_conf == conf)
    )
    if bucket is None:
        raise CaptureError(
            "bucket",
            f"`destination_conf` {conf!r} is not a bucket of this account: add it with "
            "POST /pcaps/ownership and validate it first",
        )
    if bucket.status != "success":
        raise CaptureError(
            "bucket",
            f"bucket {conf!r} is not validated yet: put the contents of {bucket.filename} "
            "into POST /pcaps/ownership/validate",
        )


def _full_capture_busy(session: Session, account_id: str) -> CaptureError:
    active = session.scalar(
        select(Pcap).where(
            Pcap.account_id == account_id,
            Pcap.type == "full",
            Pcap.status.in_(ACTIVE_STATUSES),
        )
    )
    seconds = 60
    ident = ""
    if active is not None:
        ident = f" ({active.id}, {active.status})"
        ends = active.submitted + dt.timedelta(seconds=active.time_limit)
        seconds = max(1, math.ceil((ends - utcnow()).total_seconds()))
    return CaptureError(
        "busy",
        f"this account already has a pending or running full capture{ident}: stop it with "
        f"PUT /pcaps/{{id}}/stop or retry in {seconds} s",
        retry_after=seconds,
    )


def expire_overdue(session: Session, account_id: str) -> None:
    """Fail full captures that no machine finished long after their time limit."""
    now = utcnow()
    active = session.scalars(
        select(Pcap).where(
            Pcap.account_id == account_id,
            Pcap.type == "full",
            Pcap.status.in_(ACTIVE_STATUSES),
        )
    )
    for pcap in active:
        if pcap.submitted + dt.timedelta(seconds=pcap.time_limit) + OVERDUE_GRACE < now:
            reason = (
                f"did not report the capture finished within {pcap.time_limit} s "
                f"(+{int(OVERDUE_GRACE.total_seconds())} s grace)"
            )
            for part in pcap.machines:
                if part.state in MACHINE_ACTIVE:
                    part.state, part.error, part.finished = "failed", reason, now
            if not execution.finish_if_done(session, pcap):
                pcap.status = "failed"
                pcap.finished = now
                pcap.error_message = f"no machine of {pcap.colo_name} {reason}"
    session.flush()


def list_recent(session: Session, account_id: str) -> list[Pcap]:
    expire_overdue(session, account_id)
    return list(
        session.scalars(
            select(Pcap)
            .where(Pcap.account_id == account_id)
            .order_by(Pcap.submitted.desc(), Pcap.id.desc())
            .limit(LIST_LIMIT)
        )
    )


def get(session: Session, account_id: str, pcap_id: str) -> Pcap:
    pcap = session.get(Pcap, pcap_id)
    # Another account's capture looks exactly like a missing one.
    if pcap is None or pcap.account_id != account_id:
        raise CaptureError("not_found", f"no packet capture {pcap_id} in this account")
    if pcap.type == "full" and pcap.status in ACTIVE_STATUSES:
        expire_overdue(session, account_id)
    return pcap


def stop(session: Session, account_id: str, pcap_id: str) -> Pcap:
    pcap = get(session, account_id, pcap_id)
    if pcap.type != "full":
        raise CaptureError(
            "state", "only full captures can be stopped; sample captures end at once"
        )
    if pcap.status not in ACTIVE_STATUSES:
        raise CaptureError(
            "state", f"capture {pcap.id} has already ended with status {pcap.status}"
        )
    execution.stop(session, pcap)
    return pcap
