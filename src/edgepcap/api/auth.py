"""Customer authentication: API token (Bearer) or email + API key, bound to the path's account."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Path, Request
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from edgepcap.api.errors import APIError, Code
from edgepcap.credentials import hash_secret
from edgepcap.models import Account


@dataclass(frozen=True)
class Caller:
    account: Account


def _unauthorized(message: str) -> APIError:
    return APIError(401, Code.AUTHENTICATION, message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> Account:
    auth = request.headers.get("authorization")
    email = request.headers.get("x-auth-email")
    key = request.headers.get("x-auth-key")
    db = request.app.state.db
    with db.session() as session:
        query = select(Account).options(selectinload(Account.prefixes))
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized("Authorization must be `Bearer <api_token>`")
            account = session.scalar(
                query.where(Account.api_token_hash == hash_secret(token.strip()))
            )
            if account is None:
                raise _unauthorized("invalid API token")
            return account
        if email and key:
            account = session.scalar(query.where(Account.email == email.strip()))
            # Compare a hash even when the email is unknown, so timing tells nothing.
            stored = account.api_key_hash if account else "0" * 64
            if not hmac.compare_digest(hash_secret(key.strip()), stored) or account is None:
                raise _unauthorized("invalid X-Auth-Email / X-Auth-Key")
            return account
    raise _unauthorized(
        "missing credentials: send `Authorization: Bearer <api_token>` "
        "or `X-Auth-Email` and `X-Auth-Key`"
    )


def caller(request: Request, account_id: str = Path(max_length=64)) -> Caller:
    """The authenticated account, which must be the account named in the path."""
    account = authenticate(request)
    if account_id != account.id:
        # The same answer whether or not that account exists.
        raise APIError(403, Code.FORBIDDEN, "these credentials are not valid for this account")
    return Caller(account=account)
