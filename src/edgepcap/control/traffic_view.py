"""An account's sampled-traffic view: the window and step it may ask for, and its answer.

The counting is the sample store's (`samples.traffic`); this module checks what is asked
(the window within the sample history, the step a multiple of `STEP_QUANTUM`, the group),
restricts it to the account's prefixes as they are now, sums machines by colo when asked,
and turns counts into estimated rates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgepcap.control.accounts import account_networks
from edgepcap.control.errors import InvalidRequest
from edgepcap.control.models import Account, Machine
from edgepcap.control.sample_captures import SAMPLE_RATE
from edgepcap.control.samples import traffic
from edgepcap.control.samples.store import SampleStore
from edgepcap.formats.filters import FilterV1

NS = 1_000_000_000
HISTORY = dt.timedelta(hours=24)
# A window may start this much before the history's edge: "the last 24 h", asked a moment
# ago, is still the last 24 h.
EDGE_SLACK = dt.timedelta(minutes=5)
DEFAULT_WINDOW = dt.timedelta(hours=1)
# The default step gives about this many points over the window.
DEFAULT_POINTS = 360
MAX_LIMIT = 50


@dataclass(frozen=True)
class TrafficAsk:
    """What a caller asks for; None: the default."""

    since: dt.datetime | None
    until: dt.datetime | None
    step: int | None
    group_by: str
    limit: int
    filter: FilterV1


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def plan(ask: TrafficAsk, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, int]:
    """The window [since, until) and step in seconds, checked; since rounded down to a
    multiple of the step, so that refreshes fall on the same buckets."""
    until = _utc(ask.until) if ask.until else now
    since = _utc(ask.since) if ask.since else until - DEFAULT_WINDOW
    if ask.group_by not in traffic.GROUPS:
        raise InvalidRequest(f"`group_by` must be one of {', '.join(traffic.GROUPS)}")
    if not 1 <= ask.limit <= MAX_LIMIT:
        raise InvalidRequest(f"`limit` must be between 1 and {MAX_LIMIT} (got {ask.limit})")
    if until > now + dt.timedelta(minutes=1):
        raise InvalidRequest("`until` is in the future")
    if since >= until:
        raise InvalidRequest("`since` must be before `until`")
    if since < now - HISTORY - EDGE_SLACK:
        raise InvalidRequest(
            "`since` is more than 24 h ago: the sample history keeps the last 24 hours"
        )
    quantum = traffic.STEP_QUANTUM
    if ask.step is None:
        span = (until - since).total_seconds()
        step = max(quantum, -(-int(span / DEFAULT_POINTS) // quantum) * quantum)
    else:
        step = ask.step
        if step < quantum or step % quantum:
            raise InvalidRequest(f"`step` must be a multiple of {quantum} seconds (got {step})")
        if step > HISTORY.total_seconds():
            raise InvalidRequest(f"`step` must be at most {int(HISTORY.total_seconds())} seconds")
    start = int(since.timestamp()) // step * step
    return dt.datetime.fromtimestamp(start, dt.UTC), until, step


def view(
    session: Session, account: Account, store: SampleStore, ask: TrafficAsk, now: dt.datetime
) -> dict[str, Any]:
    """The account's traffic as the API answers it (the envelope's `result`)."""
    since, until, step = plan(ask, now)
    q = traffic.TrafficQuery(
        account.id,
        int(since.timestamp()) * NS,
        int(until.timestamp() * NS),
        step * NS,
        ask.group_by,
        ask.filter,
        tuple(account_networks(account)),
    )
    groups = store.traffic(q) if q.prefixes else {}
    if ask.group_by == "colo":
        colos = dict(session.execute(select(Machine.name, Machine.colo)).tuples().all())
        groups = traffic.by_colo(groups, lambda machine: colos.get(machine, ""))
    series = traffic.estimate(groups, q, ask.limit, SAMPLE_RATE)
    return {
        "since": since,
        "until": until,
        "step": step,
        "sample_rate": SAMPLE_RATE,
        "group_by": ask.group_by,
        "filter_v1": ask.filter.as_dict(),
        "samples": sum(s.samples for s in series),
        "series": [
            {
                "key": s.key,
                "samples": s.samples,
                "packets": s.packets,
                "bits": s.bits,
                "packets_error_95": s.packets_error,
                "points": s.points,
            }
            for s in series
        ],
    }
