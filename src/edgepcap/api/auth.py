"""Customer authentication: API token (Bearer) or email + API key, bound to the path's account."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import bindparam, select

from edgepcap.api.errors import APIError, Code
from edgepcap.api.schemas import hex_id
from edgepcap.control.credentials import hash_secret
from edgepcap.control.models import Account


@dataclass(frozen=True)
class Caller:
    account_id: str


def _unauthorized(message: str) -> APIError:
    return APIError(401, Code.AUTHENTICATION, message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Presented:
    """The credentials a request presents, its secret hashed: not yet checked."""

    token_hash: str | None = None
    email: str | None = None
    key_hash: str | None = None

    def key_matches(self, stored: str | None) -> bool:
        # Compare a hash even when the email is unknown, so timing tells nothing.
        return hmac.compare_digest(self.key_hash or "", stored or "0" * 64) and stored is not None


def presented(request: Request) -> Presented:
    """The request's credentials: a Bearer token, or an email and an API key (401 if none)."""
    auth = request.headers.get("authorization")
    email = request.headers.get("x-auth-email")
    key = request.headers.get("x-auth-key")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization must be `Bearer <api_token>`")
        return Presented(token_hash=hash_secret(token.strip()))
    if email and key:
        return Presented(email=email.strip(), key_hash=hash_secret(key.strip()))
    raise _unauthorized(
        "missing credentials: send `Authorization: Bearer <api_token>` "
        "or `X-Auth-Email` and `X-Auth-Key`"
    )


# Built once: statements reused as objects skip SQLAlchemy's per-call cache-key work.
BY_TOKEN = select(Account.id).where(Account.api_token_hash == bindparam("token_hash"))
BY_EMAIL = select(Account.id, Account.api_key_hash).where(Account.email == bindparam("email"))


def authenticate(request: Request) -> str:
    """The id of the account the request's credentials belong to (one indexed lookup)."""
    creds = presented(request)
    if creds.token_hash is not None:
        account_id = request.app.state.db.read(
            lambda conn: conn.execute(BY_TOKEN, {"token_hash": creds.token_hash}).scalar()
        )
        if account_id is None:
            raise _unauthorized("invalid API token")
        return account_id
    row = request.app.state.db.read(
        lambda conn: conn.execute(BY_EMAIL, {"email": creds.email}).first()
    )
    if not creds.key_matches(row.api_key_hash if row else None):
        raise _unauthorized("invalid X-Auth-Email / X-Auth-Key")
    return row.id


async def caller(request: Request, account_id: str = hex_id("account id")) -> Caller:
    """The authenticated account, which must be the account named in the path.

    Runs on the event loop, not in the thread pool: one indexed lookup is cheaper than the
    hand-over to a thread, and every request pays it (see BENCHMARKS.md, API figure)."""
    authenticated = authenticate(request)
    if account_id != authenticated:
        # The same answer whether or not that account exists.
        raise APIError(403, Code.FORBIDDEN, "these credentials are not valid for this account")
    return Caller(account_id=authenticated)
