"""The FastAPI application: routers, envelope error handling and request guards."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import gc
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgepcap.api import agents, errors, openapi, ownership, pcaps, web
from edgepcap.api.metrics import authorize, operator_token, render_metrics
from edgepcap.api.wakeup import Wakeup, on_exit_signal
from edgepcap.control import captures, execution, full_rate, retention
from edgepcap.control.db import Database, database_url
from edgepcap.control.models import utcnow
from edgepcap.control.samples.store import SampleStore, open_store
from edgepcap.destinations import StoreSettings

PREFIX = "/client/v4"
MAX_BODY = 64 * 1024
# JSON bodies up to this size are checked on the event loop (well under a millisecond);
# larger ones on a worker thread.
CHECK_ON_LOOP = 4 * 1024
MAX_SAMPLE_BATCH = 32 << 20
EXPIRE_EVERY = 10.0
log = logging.getLogger("edgepcap.api")


class QuietAgents(logging.Filter):
    """Keeps agents' routine requests out of the access log: each agent polls, beats,
    reports progress and sends samples several times a second, which buried everything
    else. Their failures (status 400 and up) and registrations are still logged."""

    ROUTINE = re.compile(
        re.escape(agents.PREFIX) + r"/(jobs|heartbeat|prefixes|samples|captures/[^/?]+/report)"
        r"(\?|$)"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access records: (client, method, path and query, http version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[4], int):
            return not (args[4] < 400 and self.ROUTINE.match(str(args[2])))
        return True


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
        # A set, not a count per key: this runs before authentication, and a quadratic
        # test let one 64 KiB body of distinct keys hold a process for half a second.
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
        # Sample batches from agents are binary and larger than any customer request.
        binary = scope["path"] == "/agent/v1/samples"
        limit = MAX_SAMPLE_BATCH if binary else MAX_BODY
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


class Supervisor:
    """Fails the parts of silent machines and closes captures, twice a second; deletes
    captures past their retention (retention.py) at a slower pace.

    It judges silence only over time in which it could hear the agents: from its own start,
    and again from the end of any database outage it saw (heartbeats cannot be recorded
    while the database is down, so machines would all look silent).
    """

    def __init__(
        self, db: Database, samples: SampleStore, lock: Path | None, every: float = 0.5
    ) -> None:
        self.db = db
        self.samples = samples
        self.lock = lock
        self._lock_fd: int | None = None
        self._next_expiry = 0.0
        self._next_retention = 0.0
        self.keep = retention.capture_retention()
        self.every = every
        self.hearing_since: dt.datetime | None = utcnow()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _leads(self) -> bool:
        """Whether this process sweeps: one worker per data dir does (a lock file, so that
        another takes over when it dies); sweeps are safe to repeat, but not free."""
        if self.lock is None or self._lock_fd is not None:
            return True
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def listening_since(self) -> dt.datetime:
        """Since when agents could be heard (now, while the database is unreachable)."""
        return self.hearing_since or utcnow()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                # Every worker, not only the one that sweeps: any one's checkpoint serves
                # all, and the WAL's bound must not hang on which of them leads.
                self.db.checkpoint()
            except Exception as exc:
                log.warning("SQLite checkpoint failed (%s); retrying", exc)
            since = self.listening_since()
            try:
                with self.db.session() as session:
                    if self._leads():
                        execution.sweep(session, since)
                        captures.expire_overdue(session, since)
                    else:
                        # Not sweeping, but this worker answers agents' registrations too:
                        # it must know when the database was unreachable.
                        session.execute(text("SELECT 1"))
                if self.hearing_since is None:
                    log.warning("database reachable again; machines get a fresh heartbeat window")
                self.hearing_since = since
            except OperationalError as exc:
                if self.hearing_since is not None:
                    first = str(exc.orig or exc).strip().splitlines()[0][:300]
                    log.warning("supervisor: the database is unreachable (%s); retrying", first)
                self.hearing_since = None
                continue
            except Exception:
                log.exception("supervisor sweep failed; retrying")
                self.hearing_since = None
                continue
            try:
                if time.monotonic() >= self._next_expiry:
                    self.samples.expire(time.time_ns())
                    self._next_expiry = time.monotonic() + EXPIRE_EVERY
            except Exception:
                log.exception("sample expiry failed; retrying")
            try:
                if time.monotonic() >= self._next_retention and self._leads():
                    self._next_retention = time.monotonic() + retention.sweep_period(self.keep)
                    if retention.sweep(self.db, self.keep):
                        self._next_retention = 0.0  # a backlog: one batch per loop
            except OperationalError:
                pass  # an outage: the sweep above reports it
            except Exception:
                log.exception("capture retention sweep failed; retrying")


def open_app(
    data_dir: Path, database: str | None, sample_store: str | None, migrated: bool = False
) -> FastAPI:
    """The app on a data dir, its database and sample store."""
    db = Database(database_url(data_dir, database), migrated=migrated, background_checkpoints=True)
    stores = StoreSettings.from_env(data_dir)
    stores.bucket_root.mkdir(parents=True, exist_ok=True)
    samples = open_store(sample_store, data_dir)
    return create_app(
        db, stores, samples, data_dir / "supervisor.lock", metrics_token=operator_token()
    )


def from_environment() -> FastAPI:
    """The app of one `edgepcap api --workers N` worker: the parent passes its settings in
    the environment (uvicorn starts workers from an import string) and has migrated."""
    return open_app(
        Path(os.environ["EDGEPCAP_DATA_DIR"]),
        os.environ.get("EDGEPCAP_DATABASE") or None,
        os.environ.get("EDGEPCAP_SAMPLE_STORE") or None,
        migrated=True,
    )


def create_app(
    db: Database,
    stores: StoreSettings,
    samples: SampleStore,
    supervisor_lock: Path | None = None,
    metrics_token: str | None = None,
) -> FastAPI:
    full_rate.full_capture_rate()  # a bad setting stops the start, not every full create
    supervisor = Supervisor(db, samples, supervisor_lock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        supervisor.start()
        # What startup built (modules, the app, SQLAlchemy's and pydantic's tables) lives
        # as long as the process: out of the collector's reach, a full collection no
        # longer walks it. Measured under the API figure's load: each full collection
        # stopped the event loop for ~97 ms and set the p99 (BENCHMARKS.md, API).
        gc.collect()  # garbage frozen now would never be freed
        gc.freeze()
        undo = on_exit_signal(_app.state.wakeup)
        quiet = QuietAgents()
        logging.getLogger("uvicorn.access").addFilter(quiet)
        try:
            yield
        finally:
            logging.getLogger("uvicorn.access").removeFilter(quiet)
            undo()
            supervisor.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="edgepcap",
        version="0.1.0",
        description="Cloudflare-compatible packet-capture API (Magic Transit PCAPs).",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,  # web.mount_docs: its assets from this server, not a CDN
        redoc_url=None,
    )
    app.state.db = db
    app.state.stores = stores
    app.state.samples = samples
    app.state.supervisor = supervisor
    app.state.wakeup = Wakeup()
    app.include_router(ownership.router, prefix=PREFIX, tags=["ownership"])
    app.include_router(pcaps.router, prefix=PREFIX, tags=["pcaps"])
    app.include_router(agents.router)
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    app.add_exception_handler(errors.APIError, errors.api_error_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(DBAPIError, errors.database_error_handler)
    app.add_exception_handler(Exception, errors.internal_error_handler)
    app.add_middleware(RequestGuard)
    app.add_middleware(web.SecurityHeaders)  # outermost: the guard's refusals get them too
    web.mount_docs(app, PREFIX)

    @app.get("/metrics", include_in_schema=False, response_class=PlainTextResponse)
    def metrics(authorization: str | None = Header(default=None)) -> str:
        """Per-machine liveness and sampler counters, in Prometheus' text format."""
        authorize(authorization, metrics_token)
        return render_metrics(db)

    dashboard = Path(__file__).resolve().parent.parent / "dashboard"
    app.mount("/static", StaticFiles(directory=dashboard), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(dashboard / "index.html")

    @app.get(f"{PREFIX}/health", include_in_schema=False)
    def health() -> dict[str, Any]:
        return errors.envelope({"status": "ok"})

    return app
