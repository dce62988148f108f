"""Routes of `/accounts/{account_id}/pcaps/ownership`: bucket challenges and their validation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from edgepcap.api.deps import Account, check_id
from edgepcap.api.errors import APIError, Code, envelope, refused
from edgepcap.api.schemas import (
    BucketId,
    DeletedOut,
    Envelope,
    OwnershipCreate,
    OwnershipOut,
    OwnershipValidate,
    error_responses,
)
from edgepcap.api.timefmt import rfc3339
from edgepcap.bucket_urls import DestinationError
from edgepcap.control import buckets
from edgepcap.control.errors import ChallengeMismatch, Refused
from edgepcap.control.models import Bucket

router = APIRouter(responses=error_responses(400, 401, 403, 503))


def render(bucket: Bucket) -> dict[str, Any]:
    return {
        "id": bucket.id,
        "destination_conf": bucket.destination_conf,
        "filename": bucket.filename,
        "status": bucket.status,
        "submitted": rfc3339(bucket.submitted),
        "validated": rfc3339(bucket.validated),
    }


@router.post(
    "/accounts/{account_id}/pcaps/ownership",
    response_model=Envelope[OwnershipOut],
    responses=error_responses(413, 415),
)
def add_bucket(request: Request, who: Account, body: OwnershipCreate) -> dict[str, Any]:
    """Write an ownership challenge file into the bucket; validate it next."""
    state = request.app.state
    with state.db.session() as session:
        try:
            bucket = buckets.add(session, who.account_id, body.destination_conf, state.stores)
        except DestinationError as exc:
            raise APIError(400, Code.DESTINATION_INVALID, str(exc)) from exc
        except Refused as exc:
            raise refused(exc) from exc
        return envelope(render(bucket))


@router.get("/accounts/{account_id}/pcaps/ownership", response_model=Envelope[list[OwnershipOut]])
def list_buckets(request: Request, who: Account) -> dict[str, Any]:
    with request.app.state.db.session() as session:
        return envelope([render(b) for b in buckets.list_buckets(session, who.account_id)])


@router.post(
    "/accounts/{account_id}/pcaps/ownership/validate",
    response_model=Envelope[OwnershipOut],
    responses=error_responses(404, 413, 415),
)
def validate_bucket(request: Request, who: Account, body: OwnershipValidate) -> dict[str, Any]:
    """Prove ownership: send back the contents of the challenge file."""
    state = request.app.state
    with state.db.session() as session:
        try:
            bucket = buckets.validate(
                session,
                who.account_id,
                body.destination_conf,
                body.ownership_challenge,
                state.stores,
            )
        except DestinationError as exc:
            raise APIError(400, Code.DESTINATION_INVALID, str(exc)) from exc
        except Refused as exc:
            if isinstance(exc, ChallengeMismatch):
                session.commit()  # keep the recorded `failed` status
            raise refused(exc) from exc
        return envelope(render(bucket))


@router.delete(
    "/accounts/{account_id}/pcaps/ownership/{ownership_id}",
    response_model=Envelope[DeletedOut],
    responses=error_responses(404),
)
def delete_bucket(request: Request, who: Account, ownership_id: BucketId) -> dict[str, Any]:
    check_id(ownership_id, "ownership_id")
    with request.app.state.db.session() as session:
        try:
            buckets.delete(session, who.account_id, ownership_id)
        except Refused as exc:
            raise refused(exc) from exc
        return envelope({"id": ownership_id})
