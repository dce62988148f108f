"""Routes of `/accounts/{account_id}/pcaps/triggers`: captures that start themselves (an
edgepcap extension). Registered before the PCAPs routes, whose `/pcaps/{pcap_id}` would
otherwise take `triggers` for an id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

from edgepcap.api.deps import Account, check_id
from edgepcap.api.errors import envelope, refused
from edgepcap.api.schemas import DeletedOut, Envelope, error_responses, hex_id
from edgepcap.api.timefmt import rfc3339
from edgepcap.api.traffic_schemas import CreateTrigger, TriggerOut
from edgepcap.control import triggers
from edgepcap.control.errors import Refused
from edgepcap.control.models import Account as AccountRow
from edgepcap.control.models import Trigger, utcnow

router = APIRouter(responses=error_responses(400, 401, 403, 503), tags=["triggers"])
TriggerId = Annotated[str, hex_id("trigger id")]
PATH = "/accounts/{account_id}/pcaps/triggers"


def render(session: Any, trigger: Trigger) -> dict[str, Any]:
    events = triggers.events(session, trigger.id)
    return {
        "id": trigger.id,
        "filter_v1": trigger.filter_v1,
        "threshold_pps": trigger.threshold_pps,
        "window": trigger.window,
        "cooldown": trigger.cooldown,
        "expires": rfc3339(trigger.expires),
        "created": rfc3339(trigger.created),
        "status": triggers.status(trigger, utcnow()),
        "capture": trigger.capture,
        "fired": [
            {"at": rfc3339(e.at), "pcap_id": e.pcap_id, "estimated_pps": e.estimated_pps}
            for e in events
            if e.pcap_id is not None
        ],
        "refused": [
            {"at": rfc3339(e.at), "estimated_pps": e.estimated_pps, "message": e.message}
            for e in events
            if e.pcap_id is None
        ],
    }


@router.post(PATH, response_model=Envelope[TriggerOut], responses=error_responses(413, 415))
def create_trigger(request: Request, who: Account, body: CreateTrigger) -> dict[str, Any]:
    """Arm a full capture that starts itself when the account's sampled traffic matching
    `filter_v1` reaches `threshold_pps` over `window` seconds."""
    capture = body.capture.model_dump(mode="json", exclude_none=True, exclude={"colo"})
    capture.setdefault("filter_v1", None)
    if body.capture.filter_v1 is None:
        capture["filter_v1"] = None  # the trigger's, when it fires
    with request.app.state.db.session() as session:
        try:
            trigger = triggers.create(
                session,
                session.get(AccountRow, who.account_id),
                body.filter_v1,
                body.threshold_pps,
                body.window,
                body.cooldown,
                body.expires,
                capture,
            )
        except Refused as exc:
            raise refused(exc) from exc
        result = envelope(render(session, trigger))
    request.app.state.triggers.changed()
    return result


@router.get(PATH, response_model=Envelope[list[TriggerOut]])
def list_triggers(request: Request, who: Account) -> dict[str, Any]:
    with request.app.state.db.session() as session:
        return envelope([render(session, t) for t in triggers.listing(session, who.account_id)])


@router.get(
    PATH + "/{trigger_id}", response_model=Envelope[TriggerOut], responses=error_responses(404)
)
def get_trigger(request: Request, who: Account, trigger_id: TriggerId) -> dict[str, Any]:
    check_id(trigger_id, "trigger_id")
    with request.app.state.db.session() as session:
        try:
            return envelope(render(session, triggers.get(session, who.account_id, trigger_id)))
        except Refused as exc:
            raise refused(exc) from exc


@router.delete(
    PATH + "/{trigger_id}", response_model=Envelope[DeletedOut], responses=error_responses(404)
)
def delete_trigger(request: Request, who: Account, trigger_id: TriggerId) -> dict[str, Any]:
    check_id(trigger_id, "trigger_id")
    with request.app.state.db.session() as session:
        try:
            triggers.remove(session, who.account_id, trigger_id)
        except Refused as exc:
            raise refused(exc) from exc
    request.app.state.triggers.changed()
    return envelope({"id": trigger_id})
