"""Customer authentication: API token (Bearer) or email + API key, bound to the path's account."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import select

from edgepcap.api.errors import APIError, Code
from edgepcap.api.schemas import hex_id
from edgepcap.credentials import hash_secret
from edgepcap.models import Account


@dataclass(frozen=True)
class Caller:
    account_id: str


def _unauthorized(message: str) -> APIError:
    return APIError(401, Code.AUTHENTICATION, message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> str:
    """The id of the account the request's credentials belong to (one indexed lookup)."""
    auth = request.headers.get("authorization")
    email = request.headers.get("x-auth-email")
    key = request.headers.get("x-auth-key")
    db = request.app.state.db
    with db.session() as session:
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized("Authorization must be `Bearer <api_token>`")
            account_id = session.scalar(
                select(Account.id).where(Account.api_token_hash == hash_secret(token.strip()))
            )
            if account_id is None:
                raise _unauthorized("invalid API token")
            return account_id
        if email and key:
            row = session.execute(
                select(Account.id, Account.api_key_hash).where(Account.email == email.strip())
            ).first()
            # Compare a hash even when the email is unknown, so timing tells nothing.
            stored = row.api_key_hash if row else "0" * 64
            if not hmac.compare_digest(hash_secret(key.strip()), stored) or row is None:
                raise _unauthorized("invalid X-Auth-Email / X-Auth-Key")
            return row.id
    raise _unauthorized(
        "missing credentials: send `Authorization: Bearer <api_token>` "
        "or `X-Auth-Email` and `X-Auth-Key`"
    )


def caller(request: Request, account_id: str = hex_id("account id")) -> Caller:
    """The authenticated account, which must be the account named in the path."""
    authenticated = authenticate(request)
    if account_id != authenticated:
        # The same answer whether or not that account exists.
        raise APIError(403, Code.FORBIDDEN, "these credentials are not valid for this account")
    return Caller(account_id=authenticated)
