"""Capture requests: admission under the rate limits, getting one, stopping and expiry.
The checked reads are in `reads`, answering sample captures in `sample_captures`; what a
refusal raises is in `errors`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from edgepcap import bucket_urls
from edgepcap.control import buckets, completion, execution, fleet, full_rate, sample_captures
from edgepcap.control.accounts import account_networks
from edgepcap.control.credentials import new_id
from edgepcap.control.errors import (
    BucketNotValidated,
    DestinationInvalid,
    FullCaptureBusy,
    InvalidRequest,
    NotFound,
    WrongState,
)
from edgepcap.control.models import (
    ACTIVE_STATUSES,
    MACHINE_ACTIVE,
    Account,
    Pcap,
    utcnow,
)
from edgepcap.control.samples.store import SampleStore
from edgepcap.control.settings import Limits
from edgepcap.formats.filters import FilterV1


class CaptureRequest(Protocol):
    """A capture asked for, as `create` reads it: the API's validated request body (plain
    values; this layer knows nothing of HTTP)."""

    type: str
    system: str
    time_limit: int
    packet_limit: int | None
    byte_limit: int | None
    colo_name: str | None
    destination_conf: str | None
    offset_time: dt.datetime | None
    filter_v1: FilterV1 | None


# A full capture that outlives its time limit by this much without a machine
# reporting its end is failed, so that it does not hold the account's single
# full-capture slot forever.
OVERDUE_GRACE = dt.timedelta(seconds=60)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def check_filter_reachable(account: Account, req: CaptureRequest) -> None:
    """Refuse a filter that can never match: both addresses outside the account's prefixes."""
    f = req.filter_v1
    if f is None or f.source is None or f.destination is None:
        return
    nets = account_networks(account)

    def owned(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr.version == n.version and addr in n for n in nets)

    if not owned(f.source) and not owned(f.destination):
        raise InvalidRequest(
            f"neither `filter_v1.source_address` ({f.source}) nor `filter_v1.destination_address` "
            f"({f.destination}) is in this account's prefixes "
            f"({', '.join(str(n) for n in nets)}): the capture could never match a packet",
        )


def create(
    session: Session,
    account: Account,
    req: CaptureRequest,
    limits: Limits,
    samples: SampleStore | None = None,
    since: dt.datetime | None = None,
) -> Pcap:
    """Admit one capture for `account` and add it to the session, or raise a `Refused`.

    Both kinds: the filter must be able to match the account's prefixes and the bucket
    URL must be one edgepcap may write (stored canonical). A sample capture (`simple`)
    takes the account's slot of `limits.sample_interval` and is answered at once from
    `samples`. A full capture needs a bucket the account has proven, a colo or machine
    with live machines, a place in `limits.full_capture_rate` and no other active full
    capture of the account (after expiring overdue ones; `since`: from when the supervisor
    could hear agents); it is assigned to the colo's machines with the account's prefixes
    as they are now.
    """
    check_filter_reachable(account, req)
    conf = _canonical(req.destination_conf)
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
        destination_conf=conf,
        offset_time=_naive_utc(req.offset_time) if req.offset_time else None,
        submitted=now,
        packets_captured=0,
        bytes_captured=0,
    )
    targets = []
    if req.type == "simple":
        sample_captures.take_slot(session, account, now, limits.sample_interval)
    else:
        _require_validated_bucket(session, account, conf or "")
        try:
            _name, targets = fleet.resolve(session, req.colo_name or "")
        except fleet.FleetError as exc:
            raise InvalidRequest(str(exc)) from None
        full_rate.take_slot(session, account.id, now, limits.full_capture_rate)
        expire_overdue(session, since or utcnow(), account.id)
        pcap.prefixes = [p.cidr for p in account.prefixes]
        execution.assign(session, pcap, targets)
    session.add(pcap)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise _full_capture_busy(session, account.id) from None
    if req.type == "simple" and samples is not None:
        sample_captures.answer_sample(
            session, pcap, samples, req.filter_v1 or FilterV1(), account_networks(account)
        )
    return pcap


def _canonical(conf: str | None) -> str | None:
    if conf is None:
        return None
    try:
        return bucket_urls.canonical(conf)
    except bucket_urls.DestinationError as exc:
        raise DestinationInvalid(f"`destination_conf`: {exc}") from None


def check_full_request(session: Session, account: Account, req: CaptureRequest) -> None:
    """Refuse a full capture that could not start now for what it names: its bucket not
    proven, its colo or machine unknown or without live machines. The rate limits and the
    active capture are checked when it is made."""
    _require_validated_bucket(session, account, _canonical(req.destination_conf) or "")
    try:
        fleet.resolve(session, req.colo_name or "")
    except fleet.FleetError as exc:
        raise InvalidRequest(str(exc)) from None


def _require_validated_bucket(session: Session, account: Account, conf: str) -> None:
    bucket = buckets.find_bucket(session, account.id, conf)
    if bucket is None:
        raise BucketNotValidated(
            f"`destination_conf` {conf!r} is not a bucket of this account: add it with "
            "POST /pcaps/ownership and validate it first",
        )
    if bucket.status != "success":
        raise BucketNotValidated(
            f"bucket {conf!r} is not validated yet: put the contents of {bucket.filename} "
            "into POST /pcaps/ownership/validate",
        )


def _full_capture_busy(session: Session, account_id: str) -> FullCaptureBusy:
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
    return FullCaptureBusy(
        f"this account already has a pending or running full capture{ident}: stop it with "
        f"PUT /pcaps/{{id}}/stop or retry in {seconds} s",
        seconds,
    )


def expire_overdue(session: Session, since: dt.datetime, account_id: str | None = None) -> None:
    """Fail full captures that no machine finished long after their time limit (of one
    account, or of all: the supervisor's sweep). `since`: from when agents could be heard
    (supervisor.Supervisor); a capture that ended during an outage gets its grace after it."""
    now = utcnow()
    query = select(Pcap).where(Pcap.type == "full", Pcap.status.in_(ACTIVE_STATUSES))
    if account_id is not None:
        query = query.where(Pcap.account_id == account_id)
    active = session.scalars(query)
    for pcap in active:
        ended = pcap.submitted + dt.timedelta(seconds=pcap.time_limit)
        if max(ended, since) + OVERDUE_GRACE < now:
            reason = (
                f"did not report the capture finished within {pcap.time_limit} s "
                f"(+{int(OVERDUE_GRACE.total_seconds())} s grace)"
            )
            for part in pcap.machines:
                if part.state in MACHINE_ACTIVE:
                    part.state, part.error, part.finished = "failed", reason, now
            if not completion.finish_if_done(session, pcap):
                pcap.status = "failed"
                pcap.finished = now
                pcap.error_message = f"no machine of {pcap.colo_name} {reason}"
    session.flush()


def get(session: Session, account_id: str, pcap_id: str) -> Pcap:
    pcap = session.get(Pcap, pcap_id, options=[selectinload(Pcap.machines)])
    if pcap is None or pcap.account_id != account_id:
        raise NotFound(f"no packet capture {pcap_id} in this account")
    return pcap


def stop(session: Session, account_id: str, pcap_id: str) -> Pcap:
    pcap = get(session, account_id, pcap_id)
    if pcap.type != "full":
        raise WrongState("only full captures can be stopped; sample captures end at once")
    if pcap.status not in ACTIVE_STATUSES:
        raise WrongState(f"capture {pcap.id} has already ended with status {pcap.status}")
    execution.stop(session, pcap)
    return pcap
