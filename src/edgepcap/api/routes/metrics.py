"""`/metrics`: machine liveness and sampler counters in Prometheus' text format.

They name every machine and colo and say which are down: operators' business, so they
are served only to whoever shows the operator token (`Authorization: Bearer TOKEN`, as
Prometheus sends it from `credentials_file`). Without a token configured there is no
`/metrics` at all. A token rather than a second listener: it works the same with
`--workers N` (one shared socket) and behind a reverse proxy, where every request looks
like it comes from loopback.
"""

from __future__ import annotations

import gc
import hmac

from fastapi import APIRouter, Header, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgepcap.api.errors import APIError, Code
from edgepcap.api.wakeup import Wakeup
from edgepcap.control.db import Database
from edgepcap.control.fleet import is_live
from edgepcap.control.models import Machine, RefusedSamples, utcnow
from edgepcap.control.samples.admission import REASONS

SAMPLER_COUNTERS = {
    "sampled": "samples the kernel delivered to the sampler",
    "attributed": "samples attributed to an account",
    "shipped": "samples delivered to the sample store",
    "kernel_dropped": "samples lost in the kernel (NFLOG sequence gaps)",
    "overruns": "NFLOG socket overruns (ENOBUFS)",
    "backlog_dropped": "samples given up because the store was unreachable too long",
    "backlog": "samples waiting to be shipped",
    "ship_errors": "failed attempts to ship a batch",
}


router = APIRouter(include_in_schema=False)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, authorization: str | None = Header(default=None)) -> str:
    """Per-machine liveness and sampler counters, in Prometheus' text format."""
    authorize(authorization, request.app.state.metrics_token)
    return render_metrics(request.app.state.db) + process_wakeup(request.app.state.wakeup)


def authorize(authorization: str | None, token: str | None) -> None:
    """Refuse a `/metrics` request without the operator token (none configured: 404, as
    for any path the server does not have)."""
    if token is None:
        raise StarletteHTTPException(404)
    given = (authorization or "").encode()
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise APIError(
            401,
            Code.AUTHENTICATION,
            "/metrics needs the operator token: `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


def render_metrics(db: Database) -> str:
    lines = [
        "# HELP edgepcap_machine_up 1 while the machine's heartbeats arrive",
        "# TYPE edgepcap_machine_up gauge",
    ]
    with db.session() as session:
        machines = list(session.scalars(select(Machine).order_by(Machine.name)))
        now = utcnow()
        for m in machines:
            lines.append(
                f'edgepcap_machine_up{{machine="{m.name}",colo="{m.colo}"}} {int(is_live(m, now))}'
            )
        for key, help_text in SAMPLER_COUNTERS.items():
            kind = "gauge" if key == "backlog" else "counter"
            name = f"edgepcap_sampler_{key}" + ("" if kind == "gauge" else "_total")
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for m in machines:
                lines.append(f'{name}{{machine="{m.name}"}} {int((m.stats or {}).get(key, 0))}')
        lines += refused_samples(session)
    return "\n".join(lines + process_gc()) + "\n"


def refused_samples(session: Session) -> list[str]:
    """Sample records the control plane refused, by the machine whose key sent them."""
    lines = [
        "# HELP edgepcap_samples_refused_total sample records the control plane refused, "
        f"by reason ({', '.join(REASONS)})",
        "# TYPE edgepcap_samples_refused_total counter",
    ]
    rows = session.scalars(
        select(RefusedSamples).order_by(RefusedSamples.machine, RefusedSamples.reason)
    )
    for r in rows:
        lines.append(
            f'edgepcap_samples_refused_total{{machine="{r.machine}",reason="{r.reason}"}} {r.count}'
        )
    return lines


def process_wakeup(wakeup: Wakeup) -> str:
    """Word of changes from the other API processes (PostgreSQL): whether this process
    hears it now, and how many messages woke its polls."""
    channel = wakeup.channel
    if channel is None:
        return ""
    return (
        "\n".join(
            [
                "# HELP edgepcap_wakeup_listening 1 while this process hears the others' changes",
                "# TYPE edgepcap_wakeup_listening gauge",
                f"edgepcap_wakeup_listening {int(channel.listening)}",
                "# HELP edgepcap_wakeup_messages_total changes other API processes announced",
                "# TYPE edgepcap_wakeup_messages_total counter",
                f"edgepcap_wakeup_messages_total {channel.received}",
            ]
        )
        + "\n"
    )


def process_gc() -> list[str]:
    """This API process's garbage collector, under prometheus_client's metric names: a
    full collection pauses every request this process serves."""
    lines = [
        "# HELP python_gc_collections_total Number of times this generation was collected",
        "# TYPE python_gc_collections_total counter",
    ]
    for generation, stats in enumerate(gc.get_stats()):
        lines.append(
            f'python_gc_collections_total{{generation="{generation}"}} {stats["collections"]}'
        )
    return [
        *lines,
        "# HELP python_gc_frozen_objects Objects frozen at startup, which collections skip",
        "# TYPE python_gc_frozen_objects gauge",
        f"python_gc_frozen_objects {gc.get_freeze_count()}",
    ]
