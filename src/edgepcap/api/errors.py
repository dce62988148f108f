"""Cloudflare's response envelope, the error codes edgepcap answers with, and the HTTP
answer to each refusal of the control plane (`control.errors`)."""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgepcap.control import errors as refusals

log = logging.getLogger("edgepcap.api")


class Code(IntEnum):
    """Error codes (documented in docs/api.md); all ≥ 1000 like Cloudflare's."""

    INVALID_JSON = 1000
    UNKNOWN_FIELD = 1001
    MISSING_FIELD = 1002
    INVALID_VALUE = 1003
    UNSUPPORTED_MEDIA_TYPE = 1004
    BODY_TOO_LARGE = 1005
    INVALID_IDENTIFIER = 1006
    NOT_FOUND = 1100
    NOT_READY = 1101
    WRONG_STATE = 1102
    METHOD_NOT_ALLOWED = 1103
    SAMPLE_RATE_LIMITED = 1200
    FULL_CAPTURE_ACTIVE = 1201
    FULL_CAPTURE_RATE_LIMITED = 1202
    READS_BUSY = 1203  # too many downloads and previews of one account at once
    DESTINATION_INVALID = 1300
    DESTINATION_NOT_VALIDATED = 1301
    DESTINATION_UNREACHABLE = 1302
    CHALLENGE_MISMATCH = 1303
    INTERNAL = 1500
    UNAVAILABLE = 1501
    FORBIDDEN = 9109
    AUTHENTICATION = 10000


class APIError(Exception):
    def __init__(
        self,
        status: int,
        code: Code,
        message: str,
        headers: dict[str, str] | None = None,
        extra: list[tuple[Code, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = [(code, message), *(extra or [])]
        self.headers = headers


# Each refusal's status and code, by its class (its own or its nearest listed base).
REFUSALS: dict[type[refusals.Refused], tuple[int, Code]] = {
    refusals.NotFound: (404, Code.NOT_FOUND),
    refusals.InvalidRequest: (400, Code.INVALID_VALUE),
    refusals.DestinationInvalid: (400, Code.DESTINATION_INVALID),
    refusals.BucketNotValidated: (400, Code.DESTINATION_NOT_VALIDATED),
    refusals.WrongState: (409, Code.WRONG_STATE),
    refusals.SampleRateLimited: (429, Code.SAMPLE_RATE_LIMITED),
    refusals.FullRateLimited: (429, Code.FULL_CAPTURE_RATE_LIMITED),
    refusals.FullCaptureBusy: (429, Code.FULL_CAPTURE_ACTIVE),
    refusals.SamplesUnavailable: (503, Code.UNAVAILABLE),
    refusals.ChallengeMismatch: (400, Code.CHALLENGE_MISMATCH),
    refusals.ChallengeUnreachable: (400, Code.DESTINATION_UNREACHABLE),
}


def refused(exc: refusals.Refused) -> APIError:
    """The HTTP answer to a refusal: its status and code, its message, and Retry-After
    when it says how long to wait."""
    status, code = next(REFUSALS[c] for c in type(exc).__mro__ if c in REFUSALS)
    headers = None
    if isinstance(exc, refusals.RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return APIError(status, code, str(exc), headers=headers)


def envelope(result: Any) -> dict[str, Any]:
    return {"result": result, "success": True, "errors": [], "messages": []}


def failure(status: int, errors: list[tuple[Code, str]], headers: dict[str, str] | None = None):
    body = {
        "result": None,
        "success": False,
        "errors": [{"code": int(code), "message": msg} for code, msg in errors],
        "messages": [],
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    # pydantic puts the failing validator's name into the location of
    # Annotated types ("function-before[...]"); people want the field name.
    parts = [p for p in parts if "[" not in p]
    return ".".join(parts) or "body"


def describe_validation(errors: list[dict[str, Any]]) -> list[tuple[Code, str]]:
    out: list[tuple[Code, str]] = []
    for err in errors:
        kind = err.get("type", "")
        where = _where(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        if kind == "json_invalid":
            out.append((Code.INVALID_JSON, "the request body is not valid JSON: " + msg))
        elif kind == "extra_forbidden":
            out.append((Code.UNKNOWN_FIELD, f"unknown field `{where}`: remove it"))
        elif kind == "missing":
            if where == "body":
                out.append((Code.INVALID_JSON, "a JSON object body is required"))
            else:
                out.append((Code.MISSING_FIELD, f"`{where}` is required"))
        elif kind in ("model_attributes_type", "dict_type", "model_type") and where == "body":
            out.append((Code.INVALID_JSON, "the request body must be a JSON object"))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            out.append((Code.INVALID_VALUE, f"`{where}` must be {expected}"))
        elif where == "body":
            out.append((Code.INVALID_VALUE, msg))
        else:
            out.append((Code.INVALID_VALUE, f"`{where}`: {msg}"))
    return out or [(Code.INVALID_VALUE, "invalid request")]


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return failure(exc.status, exc.errors, exc.headers)


async def validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return failure(400, describe_validation(list(exc.errors())))


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return failure(404, [(Code.NOT_FOUND, "no such endpoint: see /client/v4/openapi.json")])
    if exc.status_code == 405:
        return failure(405, [(Code.METHOD_NOT_ALLOWED, "method not allowed on this endpoint")])
    return failure(exc.status_code, [(Code.INVALID_VALUE, str(exc.detail))])


DATABASE_RETRY_AFTER = 2


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The metadata database is unreachable (down, restarting): 503, retry shortly."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if not isinstance(exc, OperationalError) and not (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        log.exception("internal error", exc_info=exc)
        return await internal_error_handler(request, exc)
    log.warning(
        "%s %s: the database is unreachable: %s",
        request.method,
        request.url.path,
        str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300],
    )
    return failure(
        503,
        [
            (
                Code.UNAVAILABLE,
                "the metadata database is unreachable right now; retry in a few seconds",
            )
        ],
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )


async def internal_error_handler(_request: Request, _exc: Exception) -> JSONResponse:
    return failure(500, [(Code.INTERNAL, "internal error; the server log has the details")])
