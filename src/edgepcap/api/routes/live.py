"""`GET /accounts/{account_id}/pcaps/{pcap_id}/stream`: a running full capture, live, as
pcapng (an edgepcap extension): `curl -sN … | wireshark -k -i -`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from edgepcap.api import downloads
from edgepcap.api.deps import Account, check_id
from edgepcap.api.errors import APIError, Code
from edgepcap.api.live import CHECK_EVERY, Stream, Viewer, follow
from edgepcap.api.routes.pcaps import owned
from edgepcap.api.schemas import PcapId, error_responses
from edgepcap.control import live
from edgepcap.control.models import ACTIVE_STATUSES, utcnow

router = APIRouter(responses=error_responses(400, 401, 403, 503))
# Live streams of one account at once, per API process: each costs a queue of up to 16 MiB.
STREAMS = downloads.ReadSlots("live streams")
STREAMS_PER_ACCOUNT = 4


@router.get(
    "/accounts/{account_id}/pcaps/{pcap_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The capture's packets from now until it ends, as pcapng",
            "content": {downloads.PCAPNG_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(404, 409, 429),
    },
)
async def stream_pcap(request: Request, who: Account, pcap_id: PcapId) -> StreamingResponse:
    """Every packet of a pending or running full capture from now on, from all its
    machines, as one pcapng stream (one interface per machine, added as it starts
    sending); it ends when the capture ends. What a slow reader misses is counted in
    interface statistics (`isb_ifdrop`); the files in the bucket are never affected."""
    check_id(pcap_id)
    db = request.app.state.db
    relay = request.app.state.relay

    def begin() -> Any:
        with db.session() as session:
            pcap = owned(session, who, pcap_id)
            if pcap.type != "full" or pcap.status not in ACTIVE_STATUSES:
                what = "a sample capture" if pcap.type != "full" else f"has ended ({pcap.status})"
                raise APIError(
                    409,
                    Code.NOT_READY,
                    f"capture {pcap.id} {'is ' if pcap.type != 'full' else ''}{what}: only a "
                    "pending or running full capture "
                    "streams; download it instead",
                )
            live.watch(session, pcap.id, relay.process(), utcnow())
            return downloads.comment(pcap)

    slot = STREAMS.take(who.account_id, STREAMS_PER_ACCOUNT)
    viewer = relay.hub.add(pcap_id)
    try:
        comment = await run_in_threadpool(begin)
    except BaseException:
        relay.hub.remove(viewer)
        slot.release()
        raise
    channel = viewer.channel

    def renew() -> tuple[bool, str]:
        with db.session() as session:
            active, status = live.still_active(session, pcap_id)
            if active:
                live.watch(session, pcap_id, relay.process(), utcnow())
            return active, status

    async def running() -> tuple[bool, str]:
        # One renewal per capture and process, whatever the number of its viewers here.
        if time.monotonic() - channel.renewed < CHECK_EVERY / 2:
            return True, "running"
        channel.renewed = time.monotonic()
        return await run_in_threadpool(renew)

    finished = False

    async def done() -> None:
        # Once, whichever comes first: the body's end (also when the viewer was cut off)
        # or the response's background task, which runs even when the client went away
        # mid-stream and the body's generator is never closed.
        nonlocal finished
        if finished:
            return
        finished = True
        slot.release()
        if relay.hub.remove(viewer):
            await run_in_threadpool(_unwatch, request, pcap_id, relay.id)

    return StreamingResponse(
        _body(viewer, Stream(comment, channel), running, done),
        media_type=downloads.PCAPNG_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(done),
    )


async def _body(viewer: Viewer, stream: Stream, running: Any, done: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in follow(viewer, stream, running):
            yield chunk
    finally:
        await done()


def _unwatch(request: Request, pcap_id: str, process_id: str) -> None:
    with request.app.state.db.session() as session:
        live.unwatch(session, pcap_id, process_id)
