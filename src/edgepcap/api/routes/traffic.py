"""Route of `/accounts/{account_id}/traffic`: the sampled-traffic view (an edgepcap extension)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from edgepcap.api.deps import Account
from edgepcap.api.errors import APIError, Code, envelope, refused
from edgepcap.api.schemas import Envelope, error_responses
from edgepcap.api.timefmt import rfc3339
from edgepcap.api.traffic_schemas import TrafficOut
from edgepcap.control import traffic_view
from edgepcap.control.errors import Refused
from edgepcap.control.models import Account as AccountRow
from edgepcap.control.samples.traffic import GROUPS
from edgepcap.formats.filters import FilterV1

router = APIRouter(responses=error_responses(400, 401, 403, 503))

_TIME = "RFC 3339 (`2026-12-06T14:00:00Z`) or Unix seconds"


def parse_time(name: str, value: str | None) -> dt.datetime | None:
    """An RFC 3339 time with an offset, or Unix seconds; a 400 naming `name` otherwise."""
    if value is None:
        return None
    try:
        if value.lstrip("-").replace(".", "", 1).isdigit():
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        parsed = dt.datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise APIError(400, Code.INVALID_VALUE, f"`{name}` must be {_TIME}, got {value!r}")
    return parsed


def parse_filter(fields: dict[str, Any]) -> FilterV1:
    """The `filter_v1` fields given as query parameters, validated as in a capture's body."""
    try:
        return FilterV1(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise APIError(400, Code.INVALID_VALUE, f"`{name}`: {first['msg']}") from None


@router.get(
    "/accounts/{account_id}/traffic",
    response_model=Envelope[TrafficOut],
    tags=["traffic"],
)
def get_traffic(
    request: Request,
    who: Account,
    since: Annotated[str | None, Query(description=f"Window start, {_TIME}")] = None,
    until: Annotated[str | None, Query(description=f"Window end, {_TIME}; default now")] = None,
    step: Annotated[int | None, Query(description="Seconds per point, a multiple of 10")] = None,
    group_by: Annotated[str, Query(description=" | ".join(GROUPS))] = "protocol",
    limit: Annotated[int, Query(description="Top groups shown; the rest is `other`")] = 10,
    source_address: str | None = None,
    destination_address: str | None = None,
    source_port: int | None = None,
    destination_port: int | None = None,
    protocol: int | None = None,
    address: Annotated[str | None, Query(description="Source or destination")] = None,
    port: Annotated[int | None, Query(description="Source or destination port")] = None,
) -> dict[str, Any]:
    """Estimated packets/s and bits/s of the account's sampled traffic over a window of
    the last 24 h, per step, for the top `limit` groups (an edgepcap extension)."""
    flt = parse_filter(
        {
            "source_address": source_address,
            "destination_address": destination_address,
            "source_port": source_port,
            "destination_port": destination_port,
            "protocol": protocol,
            "address": address,
            "port": port,
        }
    )
    ask = traffic_view.TrafficAsk(
        parse_time("since", since), parse_time("until", until), step, group_by, limit, flt
    )
    with request.app.state.db.session() as session:
        account = session.get(AccountRow, who.account_id)
        try:
            result = traffic_view.view(
                session, account, request.app.state.samples, ask, dt.datetime.now(dt.UTC)
            )
        except Refused as exc:
            raise refused(exc) from exc
    result["since"] = rfc3339(result["since"])
    result["until"] = rfc3339(result["until"])
    result["estimated"] = True
    return envelope(result)
