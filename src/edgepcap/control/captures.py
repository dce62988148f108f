"""Capture requests: creation under the rate limits, listing, stopping and expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, Select, and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from edgepcap import destinations
from edgepcap.control import execution, fleet, full_rate
from edgepcap.control.accounts import Network, account_networks
from edgepcap.control.credentials import new_id
from edgepcap.control.db import fetch_all
from edgepcap.control.models import (
    ACTIVE_STATUSES,
    MACHINE_ACTIVE,
    Account,
    Bucket,
    CaptureMachine,
    Pcap,
    PcapBlob,
    utcnow,
)
from edgepcap.control.samples.store import SampleQuery, SampleStore
from edgepcap.formats import pcapfile as pcap_format
from edgepcap.formats.filters import FilterV1
from edgepcap.formats.samples import SNAPLEN


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


class PresentedCredentials(Protocol):
    """What a request presented, as the checked reads need it (the API's `Presented`)."""

    token_hash: str | None
    email: str | None

    def key_matches(self, stored: str | None) -> bool: ...


SAMPLE_INTERVAL = dt.timedelta(minutes=1)
# A full capture that outlives its time limit by this much without a machine
# reporting its end is failed, so that it does not hold the account's single
# full-capture slot forever.
OVERDUE_GRACE = dt.timedelta(seconds=60)
LIST_LIMIT = 50
SAMPLE_RATE = 100


class CaptureError(Exception):
    """A capture request refused; `kind` selects the HTTP answer."""

    def __init__(self, kind: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


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
        raise CaptureError(
            "invalid",
            f"neither `filter_v1.source_address` ({f.source}) nor `filter_v1.destination_address` "
            f"({f.destination}) is in this account's prefixes "
            f"({', '.join(str(n) for n in nets)}): the capture could never match a packet",
        )


def create(
    session: Session,
    account: Account,
    req: CaptureRequest,
    samples: SampleStore | None = None,
    since: dt.datetime | None = None,
) -> Pcap:
    check_filter_reachable(account, req)
    conf = None
    if req.destination_conf is not None:
        try:
            conf = destinations.canonical(req.destination_conf)
        except destinations.DestinationError as exc:
            raise CaptureError("destination", f"`destination_conf`: {exc}") from None
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
        _take_sample_slot(session, account, now)
    else:
        _require_validated_bucket(session, account, conf or "")
        try:
            _name, targets = fleet.resolve(session, req.colo_name or "")
        except fleet.FleetError as exc:
            raise CaptureError("invalid", str(exc)) from None
        try:
            full_rate.take_slot(session, account.id, now)
        except full_rate.RateLimited as exc:
            raise CaptureError("full_rate_limited", str(exc), exc.retry_after) from None
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
        answer_sample(
            session, pcap, samples, req.filter_v1 or FilterV1(), account_networks(account)
        )
    return pcap


def _ns(naive_utc: dt.datetime) -> int:
    delta = naive_utc - dt.datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def sample_records(rows: np.ndarray) -> bytes:
    """PCAP records of stored samples, built with numpy: no per-packet Python work."""
    n = len(rows)
    header = np.zeros(n, dtype=[("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4")])
    header["sec"] = rows["ts"] // 1_000_000_000
    header["usec"] = (rows["ts"] % 1_000_000_000) // 1000
    header["incl"] = rows["cap_len"]
    header["orig"] = rows["orig_len"]
    full = np.concatenate([header.view(np.uint8).reshape(n, 16), rows["data"]], axis=1)
    keep = np.arange(16 + SNAPLEN)[None, :] < (16 + rows["cap_len"].astype(np.int64))[:, None]
    return full[keep].tobytes()


def answer_sample(
    session: Session,
    pcap: Pcap,
    samples: SampleStore,
    flt: FilterV1,
    prefixes: Sequence[Network],
) -> None:
    """Answer a sample capture from history at once: the newest matching samples of the
    account's `prefixes` (each matched within its own address family)."""
    end = pcap.offset_time or pcap.submitted
    start = end - dt.timedelta(seconds=pcap.time_limit)
    to_ns = lambda t: int(t.replace(tzinfo=dt.UTC).timestamp() * 1e6) * 1000  # noqa: E731
    rows = samples.query(
        SampleQuery(
            pcap.account_id,
            to_ns(start),
            to_ns(end),
            flt,
            pcap.packet_limit or 1,
            tuple(prefixes),
        )
    )
    body = pcap_format.global_header(pcap_format.LINKTYPE_RAW, SNAPLEN) + sample_records(rows)
    session.add(PcapBlob(pcap_id=pcap.id, data=body))
    pcap.status = "success"
    pcap.finished = utcnow()
    pcap.packets_captured = len(rows)
    pcap.bytes_captured = int(rows["cap_len"].sum()) if len(rows) else 0
    if not len(rows):
        pcap.error_message = (
            f"no sampled packets of this account matched the filter between "
            f"{start:%Y-%m-%dT%H:%M:%S}Z and {end:%Y-%m-%dT%H:%M:%S}Z "
            f"(1 in {SAMPLE_RATE} packets are sampled)"
        )
    session.flush()


def _take_sample_slot(session: Session, account: Account, now: dt.datetime) -> None:
    # One conditional UPDATE decides the race: whichever process sets
    # last_sample_at first wins; the database serialises the rest.
    interval = sample_interval()
    cutoff = now - interval
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
    wait = interval - (now - last) if last else interval
    seconds = max(1, math.ceil(wait.total_seconds()))
    raise CaptureError(
        "rate_limited",
        f"one sample capture per {_interval_words(interval)} per account: retry in {seconds} s",
        retry_after=seconds,
    )


def sample_interval() -> dt.timedelta:
    """One sample request per this interval per account (EDGEPCAP_SAMPLE_INTERVAL seconds)."""
    value = os.environ.get("EDGEPCAP_SAMPLE_INTERVAL")
    return dt.timedelta(seconds=float(value)) if value else SAMPLE_INTERVAL


def _interval_words(interval: dt.timedelta) -> str:
    seconds = interval.total_seconds()
    return "minute" if seconds == 60 else f"{seconds:g} s"


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
            if not execution.finish_if_done(session, pcap):
                pcap.status = "failed"
                pcap.finished = now
                pcap.error_message = f"no machine of {pcap.colo_name} {reason}"
    session.flush()


PCAPS = Pcap.__table__
PARTS = CaptureMachine.__table__
View = tuple[dict[str, Any], list[dict[str, Any]]]


def views(conn: Connection, account_id: str, pcap_id: str | None = None) -> list[View]:
    """One capture of an account (or its newest LIST_LIMIT) as plain rows, each with its
    machines' parts: the read path of every GET. Core rows, not ORM objects: they cost a
    fifth as much per request (two queries, no identity map, no lazy loads)."""
    if pcap_id is None:
        pcaps = fetch_all(conn, _NEWEST, {"account_id": account_id})
    else:
        pcaps = fetch_all(conn, _ONE, {"account_id": account_id, "id": pcap_id})
    return _with_parts(conn, pcaps)


def _with_parts(conn: Connection, pcaps: Sequence[dict[str, Any]]) -> list[View]:
    parts: dict[str, list[dict[str, Any]]] = {}
    full = [p["id"] for p in pcaps if p["type"] == "full"]
    if full:
        for part in fetch_all(conn, _PARTS, {"ids": full}):
            parts.setdefault(part["pcap_id"], []).append(part)
    return [(p, parts.get(p["id"], [])) for p in pcaps]


# Built once: statements reused as objects skip SQLAlchemy's per-call cache-key work.
_OWNED = select(PCAPS).where(PCAPS.c.account_id == bindparam("account_id"))
_ONE = _OWNED.where(PCAPS.c.id == bindparam("id"))
_NEWEST = _OWNED.order_by(PCAPS.c.submitted.desc(), PCAPS.c.id.desc()).limit(LIST_LIMIT)
_PARTS = (
    select(PARTS)
    .where(PARTS.c.pcap_id.in_(bindparam("ids", expanding=True)))
    .order_by(PARTS.c.pcap_id, PARTS.c.machine)
)
ACCOUNTS = Account.__table__


def _checked(by_token: bool, one: bool) -> Select[Any]:
    """The account's row (none if the credentials do not match) joined to its captures."""
    on = PCAPS.c.account_id == ACCOUNTS.c.id
    if one:
        on = and_(on, PCAPS.c.id == bindparam("id"))
    match = (
        ACCOUNTS.c.api_token_hash == bindparam("token_hash")
        if by_token
        else ACCOUNTS.c.email == bindparam("email")
    )
    query = (
        select(ACCOUNTS.c.api_key_hash, PCAPS)
        .select_from(ACCOUNTS.outerjoin(PCAPS, on))
        .where(ACCOUNTS.c.id == bindparam("account_id"), match)
    )
    if not one:
        query = query.order_by(PCAPS.c.submitted.desc(), PCAPS.c.id.desc()).limit(LIST_LIMIT)
    return query


_CHECKED = {(t, o): _checked(t, o) for t in (True, False) for o in (True, False)}


def views_checked(
    conn: Connection, account_id: str, creds: PresentedCredentials, pcap_id: str | None = None
) -> list[View] | None:
    """`views`, read together with the check that `creds` are `account_id`'s: one round
    trip instead of two for what is polled most (on PostgreSQL, a third more requests per
    second). None when they are not: the caller then works out which error to give."""
    by_token = creds.token_hash is not None
    statement = _CHECKED[(by_token, pcap_id is not None)]
    params = {"account_id": account_id, "id": pcap_id}
    params.update({"token_hash": creds.token_hash} if by_token else {"email": creds.email})
    rows = fetch_all(conn, statement, params)
    if not rows or not (by_token or creds.key_matches(rows[0]["api_key_hash"])):
        return None
    pcaps = [row for row in rows if row["id"] is not None]
    return _with_parts(conn, pcaps)


def view(conn: Connection, account_id: str, pcap_id: str) -> View:
    found = views(conn, account_id, pcap_id)
    # Another account's capture looks exactly like a missing one.
    if not found:
        raise CaptureError("not_found", f"no packet capture {pcap_id} in this account")
    return found[0]


def get(session: Session, account_id: str, pcap_id: str) -> Pcap:
    pcap = session.get(Pcap, pcap_id, options=[selectinload(Pcap.machines)])
    if pcap is None or pcap.account_id != account_id:
        raise CaptureError("not_found", f"no packet capture {pcap_id} in this account")
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
