"""The request guard: refuses oversized, wrongly typed and ill-formed JSON bodies before
any route parses them (duplicate keys, deep nesting, NUL characters), and bounds agents'
binary sample batches and live copies while they stream in."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgepcap.api import errors
from edgepcap.formats import protocol

MAX_BODY = 64 * 1024
# JSON bodies up to this size are checked on the event loop (well under a millisecond);
# larger ones on a worker thread.
CHECK_ON_LOOP = 4 * 1024
MAX_SAMPLE_BATCH = 32 << 20
LIVE_PATH = re.compile(r"/agent/v1/captures/[^/]+/live")

MAX_DEPTH = 32


class _Refused(ValueError):
    def __init__(self, code: errors.Code, message: str) -> None:
        super().__init__(message)
        self.code = code


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list) and any(_has_nul(v) for v in value)


def check_json(body: bytes) -> tuple[errors.Code, str] | None:
    """Why a JSON body must be refused before parsing proper, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return errors.Code.INVALID_JSON, f"the request body is not UTF-8 (byte {exc.start})"
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:  # a cheap scan: nesting depth outside strings
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return (
                    errors.Code.INVALID_JSON,
                    f"the request body nests deeper than {MAX_DEPTH} levels",
                )
        elif ch in "]}":
            depth -= 1

    def checked(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # A set, not a count per key: this runs before authentication, so it must stay
        # linear in the body (a quadratic test lets one body of distinct keys hold the
        # process; tests/api/test_guard.py sends 300 000 keys).
        seen: set[str] = set()
        for k, v in pairs:
            if k in seen:
                raise _Refused(errors.Code.INVALID_JSON, f"duplicate key `{k}` in the request body")
            seen.add(k)
            # No field takes a NUL, and PostgreSQL cannot store or even compare one.
            where = "a field name" if _has_nul(k) else f"`{k}`" if _has_nul(v) else None
            if where:
                raise _Refused(errors.Code.INVALID_VALUE, f"{where} contains a NUL character")
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=checked)
    except _Refused as exc:
        return exc.code, str(exc)
    except ValueError:
        return None  # not JSON at all: the validation error says so
    return None


class RequestGuard:
    """Refuse oversized and non-JSON bodies before any parsing happens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # Sample batches and live copies from agents are binary and larger than any
        # customer request.
        path = scope["path"]
        binary_limit = (
            MAX_SAMPLE_BATCH
            if path == "/agent/v1/samples"
            else protocol.LIVE_MAX_BYTES
            if LIVE_PATH.fullmatch(path)
            else None
        )
        binary = binary_limit is not None
        limit = binary_limit or MAX_BODY
        wanted = b"application/octet-stream" if binary else b"application/json"
        too_large = f"request bodies are limited to {limit} bytes"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(send, 413, errors.Code.BODY_TOO_LARGE, too_large)
            return
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and ctype != wanted:
            await self._refuse(
                send,
                415,
                errors.Code.UNSUPPORTED_MEDIA_TYPE,
                f"send the body with `Content-Type: {wanted.decode()}`",
            )
            return
        if binary:
            seen = 0

            async def bounded_receive() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise errors.APIError(413, errors.Code.BODY_TOO_LARGE, too_large)
                return message

            await self.app(scope, bounded_receive, send)
            return
        # JSON bodies are small: read them whole, and refuse what json.loads would let
        # through quietly (duplicate keys: last one wins) or choke on (deep nesting).
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(send, 413, errors.Code.BODY_TOO_LARGE, too_large)
                return
            if not message.get("more_body"):
                break
        if body:
            # A large body is checked on a worker thread, so that the event loop goes on
            # answering others (agents' heartbeats, most of all) meanwhile.
            data = bytes(body)
            if len(data) > CHECK_ON_LOOP:
                problem = await run_in_threadpool(check_json, data)
            else:
                problem = check_json(data)
            if problem:
                await self._refuse(send, 400, *problem)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, code: errors.Code, message: str) -> None:
        response = errors.failure(status, [(code, message)])
        await response({"type": "http"}, _never_receive, send)  # type: ignore[arg-type]


async def _never_receive() -> Message:  # pragma: no cover - responses do not read
    return {"type": "http.disconnect"}
