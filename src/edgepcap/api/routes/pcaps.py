"""Routes of `/accounts/{account_id}/pcaps`: create, list, get, stop, download."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from edgepcap.api import downloads
from edgepcap.api.auth import Caller, caller, presented
from edgepcap.api.deps import Account, check_id
from edgepcap.api.errors import APIError, Code, envelope, refused
from edgepcap.api.schemas import (
    ID_PATTERN,
    AccountId,
    ColoOut,
    CreatePcap,
    Envelope,
    PcapId,
    PcapOut,
    PreviewOut,
    UncheckedPcapId,
    error_responses,
)
from edgepcap.api.timefmt import rfc3339
from edgepcap.bucket_urls import DestinationError
from edgepcap.control import captures, execution, fleet, reads
from edgepcap.control.errors import Refused
from edgepcap.control.models import ACTIVE_STATUSES as ACTIVE
from edgepcap.control.models import Account as AccountRow
from edgepcap.control.models import Pcap, PcapBlob
from edgepcap.formats import protocol
from edgepcap.formats.packets import preview
from edgepcap.formats.pcapfile import PcapError, Reader, global_header, merge

# Every customer route authenticates and validates its path: 400, 401 and 403 everywhere.
router = APIRouter(responses=error_responses(400, 401, 403, 503))


def render(view: reads.View) -> dict[str, Any]:
    pcap, machines = view
    return {
        "id": pcap["id"],
        "submitted": rfc3339(pcap["submitted"]),
        "filter_v1": pcap["filter_v1"] or {},
        "time_limit": pcap["time_limit"],
        "packet_limit": pcap["packet_limit"],
        "byte_limit": pcap["byte_limit"],
        "colo_name": pcap["colo_name"],
        "destination_conf": pcap["destination_conf"],
        "status": pcap["status"],
        "type": pcap["type"],
        "system": pcap["system"],
        "packets_captured": pcap["packets_captured"],
        "error_message": pcap["error_message"],
        "stop_requested": rfc3339(pcap["stop_requested"]),
        "offset_time": rfc3339(pcap["offset_time"]),
        "trigger_id": pcap["trigger_id"],
        "machines": [
            {
                "machine": m["machine"],
                "state": m["state"],
                "packets": m["packets"],
                "bytes": m["bytes"],
                "kernel_matched": m["kernel_matched"],
                "dropped": m["dropped"],
                "overruns": m["overruns"],
                "object": m["object_name"],
                "error": m["error"],
            }
            for m in machines
        ],
    }


def owned(session: Any, who: Caller, pcap_id: str) -> Pcap:
    """The caller's capture `pcap_id`; a bad id is a 400 and another account's is a 404."""
    check_id(pcap_id)
    try:
        return captures.get(session, who.account_id, pcap_id)
    except Refused as exc:
        raise refused(exc) from exc


@router.post(
    "/accounts/{account_id}/pcaps",
    response_model=Envelope[PcapOut],
    responses=error_responses(413, 415, 429),
)
def create_pcap(request: Request, who: Account, body: CreatePcap) -> dict[str, Any]:
    """Start a sample (`type: simple`) or full (`type: full`) packet capture."""
    with request.app.state.db.session() as session:
        try:
            account = session.get(AccountRow, who.account_id)
            pcap = captures.create(
                session,
                account,
                body,
                request.app.state.limits,
                request.app.state.samples,
                request.app.state.supervisor.listening_since(),
            )
        except Refused as exc:
            raise refused(exc) from exc
        session.flush()
        result = envelope(render(reads.view(session.connection(), who.account_id, pcap.id)))
    if assigned := [m["machine"] for m in result["result"]["machines"]]:
        request.app.state.wakeup.notify(assigned)  # its machines' long polls answer now
    return result


# The two GETs below run on the event loop, not in the thread pool: they are one or two
# indexed reads, cheaper than the hand-over to a thread, and they are what dashboards and
# scripts poll (BENCHMARKS.md, API figure). Everything slower stays a plain `def`. They
# check the credentials inside that read (`reads.views_checked`: one round trip, not
# two); when the check fails, `caller` gives the 401 or 403 every other endpoint gives.


@router.get("/accounts/{account_id}/pcaps", response_model=Envelope[list[PcapOut]])
async def list_pcaps(request: Request, account_id: AccountId) -> dict[str, Any]:
    """The 50 newest captures of the account, newest first."""
    creds = presented(request)
    if not ID_PATTERN.match(account_id):
        await caller(request, account_id)  # 401 or 403: no such id reaches the database
    db = request.app.state.db
    found = db.read(lambda c: reads.views_checked(c, account_id, creds))
    if found is None:
        who = await caller(request, account_id)
        found = db.read(lambda c: reads.views(c, who.account_id))
    return envelope([render(v) for v in found])


@router.get("/accounts/{account_id}/pcaps/colos", response_model=Envelope[list[ColoOut]])
def list_colos(request: Request, who: Account) -> dict[str, Any]:
    """Colos and their machines, with liveness: where a full capture can run (beyond Cloudflare)."""
    with request.app.state.db.session() as session:
        return envelope(fleet.colos(session))


@router.get(
    "/accounts/{account_id}/pcaps/{pcap_id}",
    response_model=Envelope[PcapOut],
    responses=error_responses(404),
)
async def get_pcap(
    request: Request, account_id: AccountId, pcap_id: UncheckedPcapId
) -> dict[str, Any]:
    creds = presented(request)
    if not (ID_PATTERN.match(account_id) and ID_PATTERN.match(pcap_id)):
        await caller(request, account_id)  # credentials are judged before anything else
        check_id(pcap_id)
    db = request.app.state.db
    found = db.read(lambda c: reads.views_checked(c, account_id, creds, pcap_id))
    if found is None:
        who = await caller(request, account_id)
        found = db.read(lambda c: reads.views(c, who.account_id, pcap_id))
    if not found:
        # Another account's capture looks exactly like a missing one.
        raise APIError(404, Code.NOT_FOUND, f"no packet capture {pcap_id} in this account")
    return envelope(render(found[0]))


@router.get(
    "/accounts/{account_id}/pcaps/{pcap_id}/preview",
    response_model=Envelope[PreviewOut],
    responses=error_responses(404, 409, 502),
)
def preview_pcap(
    request: Request,
    who: Account,
    pcap_id: PcapId,
    count: Annotated[int, Query(ge=1, le=100)] = 100,
) -> dict[str, Any]:
    """The first packets of a finished capture, decoded (time, addresses, protocol, ports,
    length, bytes in hex): a look without downloading (beyond Cloudflare)."""
    with request.app.state.db.session() as session:
        pcap = owned(session, who, pcap_id)
        if pcap.status != "success":
            raise APIError(
                409,
                Code.NOT_READY,
                f"capture {pcap.id} is {pcap.status}: a preview needs status success",
            )
        blob = session.get(PcapBlob, pcap.id) if pcap.type == "simple" else None
        data = blob.data if blob is not None else None
        names = execution.reported_objects(pcap)
    stores = request.app.state.stores
    try:
        if pcap.type == "simple":
            reader = Reader([data or global_header()], f"pcap_{pcap.id}.pcap")
            rows = preview(reader, count)
        else:
            with downloads.SLOTS.take(who.account_id, stores.reads_per_account):
                merged = downloads.Merged(pcap.destination_conf or "", names, stores, False)
                try:
                    reader = Reader(merged.body, f"pcap_{pcap.id}.pcap")
                    rows = preview(reader, count)
                finally:
                    merged.close()
    except (DestinationError, PcapError) as exc:
        raise APIError(
            502, Code.DESTINATION_UNREACHABLE, f"cannot read the capture: {exc}"
        ) from exc
    return envelope(
        {"linktype": reader.header.linktype, "snaplen": reader.header.snaplen, "packets": rows}
    )


@router.put(
    "/accounts/{account_id}/pcaps/{pcap_id}/stop",
    response_model=Envelope[PcapOut],
    responses=error_responses(404, 409, 413),
)
def stop_pcap(request: Request, who: Account, pcap_id: PcapId) -> dict[str, Any]:
    """Stop a running full capture; it ends as `success` with what was captured."""
    check_id(pcap_id)
    with request.app.state.db.session() as session:
        try:
            pcap = captures.stop(session, who.account_id, pcap_id)
            session.flush()
            result = envelope(render(reads.view(session.connection(), who.account_id, pcap.id)))
        except Refused as exc:
            raise refused(exc) from exc
    # The machines capturing it hear of the stop now.
    request.app.state.wakeup.notify(m["machine"] for m in result["result"]["machines"])
    return result


@router.get(
    "/accounts/{account_id}/pcaps/{pcap_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The capture file",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in downloads.FORMATS.values()
            },
        },
        **error_responses(404, 409, 502),
    },
)
def download_pcap(
    request: Request,
    who: Account,
    pcap_id: PcapId,
    format: Annotated[
        Literal["pcap", "pcapng"] | None,
        Query(
            description="`pcap` (the default) or `pcapng`: one interface per machine, named "
            "after it, and a comment naming the capture (an edgepcap extension). Without "
            "it, `Accept: application/x-pcapng` asks for pcapng."
        ),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """The capture as one file (full captures: all machines' files merged by time)."""
    kind = downloads.wanted_format(format, accept)
    with request.app.state.db.session() as session:
        pcap = owned(session, who, pcap_id)
        names = execution.reported_objects(pcap)
        colos = fleet.colos_of(session, [protocol.machine_of(n) for n in names])
        layout = downloads.machines_layout(pcap, colos) if kind == "pcapng" else merge
    if pcap.status != "success":
        detail = f" ({pcap.error_message})" if pcap.error_message else ""
        raise APIError(
            409,
            Code.NOT_READY,
            f"capture {pcap.id} is {pcap.status}{detail}: a download is available once "
            "its status is success"
            + ("; meanwhile it streams live (…/stream)" if pcap.status in ACTIVE else ""),
        )
    if pcap.type == "simple":
        with request.app.state.db.session() as session:
            blob = session.get(PcapBlob, pcap.id)
            if blob is None:
                raise APIError(409, Code.NOT_READY, f"capture {pcap.id} has no packet data")
            data = blob.data
        return Response(
            downloads.sample_pcapng(pcap, data) if kind == "pcapng" else data,
            media_type=downloads.FORMATS[kind],
            headers=_attachment(pcap, kind),
        )
    return _merged_download(request, who, pcap, names, kind, layout)


def _attachment(pcap: Pcap, kind: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="pcap_{pcap.id}.{kind}"'}


def _merged_download(
    request: Request,
    who: Caller,
    pcap: Pcap,
    names: list[str],
    kind: str,
    layout: downloads.Layout,
) -> Response:
    """The machines' reported objects, merged by time while streaming."""
    stores = request.app.state.stores
    slot = downloads.SLOTS.take(who.account_id, stores.reads_per_account)
    try:
        merged = downloads.Merged(pcap.destination_conf or "", names, stores, True, layout)
    except (DestinationError, PcapError) as exc:
        slot.release()
        raise APIError(
            502,
            Code.DESTINATION_UNREACHABLE,
            f"cannot read capture {pcap.id} from its bucket: {exc}",
        ) from exc
    except BaseException:
        slot.release()
        raise
    return StreamingResponse(
        downloads.stream(merged, slot),
        media_type=downloads.FORMATS[kind],
        headers=_attachment(pcap, kind),
        # Also when the client went away before the end (the body is then never finished).
        background=BackgroundTask(slot.release),
    )
