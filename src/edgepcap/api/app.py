"""The FastAPI application factory: routers, error handlers, the request guard and the
supervisor thread wired in, the dashboard, docs and health mounts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgepcap.api import errors, openapi, web
from edgepcap.api.access_log import QuietAgents
from edgepcap.api.agent_keys import AgentKeys
from edgepcap.api.guard import RequestGuard
from edgepcap.api.live import Hub
from edgepcap.api.relay import Relay
from edgepcap.api.routes import agents, metrics, ownership, pcaps
from edgepcap.api.routes import live as live_routes
from edgepcap.api.routes import traffic as traffic_routes
from edgepcap.api.routes import triggers as trigger_routes
from edgepcap.api.wakeup import Wakeup, on_exit_signal
from edgepcap.control import fleet, live
from edgepcap.control.changes import Channel
from edgepcap.control.db import Database, database_url
from edgepcap.control.models import utcnow
from edgepcap.control.samples.store import SampleStore, open_sinks, open_store
from edgepcap.control.settings import Limits, Settings
from edgepcap.control.supervisor import Supervisor
from edgepcap.control.triggers import Triggers
from edgepcap.destinations import StoreSettings

PREFIX = "/client/v4"


def open_app(settings: Settings, migrated: bool = False) -> FastAPI:
    """The app on the settings' data dir, database and sample store."""
    data_dir = settings.data_dir
    fleet.set_heartbeat_interval(settings.heartbeat_interval.total_seconds())
    db = Database(
        database_url(data_dir, settings.database),
        migrated=migrated,
        background_checkpoints=True,
    )
    settings.stores.bucket_root.mkdir(parents=True, exist_ok=True)
    samples = open_store(
        settings.sample_store, data_dir, settings.sample_retention, settings.sample_partition
    )
    supervisor = Supervisor(db, samples, data_dir / "supervisor.lock", settings.capture_retention)
    app = create_app(
        db,
        settings.stores,
        samples,
        supervisor,
        settings.limits,
        settings.metrics_token,
        settings.relay_host,
    )
    app.state.sample_sinks = open_sinks(samples, settings.sample_ingest, settings.sample_ingest_key)
    return app


def from_environment() -> FastAPI:
    """The app of one `edgepcap api --workers N` worker: the parent passes its settings in
    the environment (uvicorn starts workers from an import string), has checked them and
    has migrated."""
    return open_app(Settings.from_environ(), migrated=True)


def create_app(
    db: Database,
    stores: StoreSettings,
    samples: SampleStore,
    supervisor: Supervisor,
    limits: Limits,
    metrics_token: str | None = None,
    relay_host: str = "127.0.0.1",
) -> FastAPI:
    relay = Relay(Hub(), relay_host)
    wakeup = Wakeup()
    agent_keys = AgentKeys(db)
    if db.engine.dialect.name == "postgresql":
        # Word of changes to the other API processes' polls, and from theirs to ours; and
        # of revoked agent keys, from whichever process revokes.
        wakeup.channel = Channel(db.url, wakeup.wake_here, agent_keys.forget)
        agent_keys.channel = wakeup.channel
    # The supervisor's sweeps end machines' parts: the capture's other machines hear it.
    supervisor.on_change = wakeup.notify

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if wakeup.channel is not None:
            wakeup.channel.start()
        supervisor.start()
        # What startup built (modules, the app, SQLAlchemy's and pydantic's tables) lives
        # as long as the process: out of the collector's reach, a full collection no
        # longer walks it and so no longer stops the event loop for every request in
        # flight (BENCHMARKS.md, "The garbage collector").
        gc.collect()  # garbage frozen now would never be freed
        gc.freeze()
        await relay.start()
        # In the background: a worker that starts while the database is away serves what
        # it can, and its viewers get relayed copies once the database is back.
        advertising = asyncio.create_task(_advertise(db, relay))
        undo = on_exit_signal(_app.state.wakeup)
        quiet = QuietAgents()
        logging.getLogger("uvicorn.access").addFilter(quiet)
        try:
            yield
        finally:
            logging.getLogger("uvicorn.access").removeFilter(quiet)
            undo()
            advertising.cancel()
            await relay.stop()
            with contextlib.suppress(Exception):
                await run_in_threadpool(_forget, db, relay)
            supervisor.stop()
            if wakeup.channel is not None:
                wakeup.channel.stop()

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
    app.state.sample_sinks = None  # samples.direct.DirectIngest: agents insert themselves
    app.state.triggers = Triggers(db, limits, samples)
    app.state.supervisor = supervisor
    app.state.limits = limits
    app.state.metrics_token = metrics_token
    app.state.wakeup = wakeup
    app.state.agent_keys = agent_keys
    app.state.relay = relay
    app.include_router(ownership.router, prefix=PREFIX, tags=["ownership"])
    # Before the PCAPs routes: `/pcaps/triggers` is not a capture id.
    app.include_router(trigger_routes.router, prefix=PREFIX)
    app.include_router(pcaps.router, prefix=PREFIX, tags=["pcaps"])
    app.include_router(live_routes.router, prefix=PREFIX, tags=["pcaps"])
    app.include_router(traffic_routes.router, prefix=PREFIX)
    app.include_router(agents.router)
    app.include_router(metrics.router)
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    app.add_exception_handler(errors.APIError, errors.api_error_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(DBAPIError, errors.database_error_handler)
    app.add_exception_handler(Exception, errors.internal_error_handler)
    app.add_middleware(RequestGuard)
    app.add_middleware(web.SecurityHeaders)  # outermost: the guard's refusals get them too
    web.mount_docs(app, PREFIX)

    dashboard = Path(__file__).resolve().parent.parent / "dashboard"
    app.mount("/static", StaticFiles(directory=dashboard), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(dashboard / "index.html")

    @app.get(f"{PREFIX}/health", include_in_schema=False)
    def health() -> dict[str, Any]:
        return errors.envelope({"status": "ok"})

    return app


async def _advertise(db: Database, relay: Relay) -> None:
    def once() -> None:
        with db.session() as session:
            live.register_process(session, relay.process(), utcnow())

    for attempt in itertools.count():
        try:
            await run_in_threadpool(once)
            return
        except Exception as exc:
            if attempt == 0:
                logging.getLogger("edgepcap.api").warning(
                    "cannot advertise this process's live relay yet (%s); retrying", exc
                )
            await asyncio.sleep(2)


def _forget(db: Database, relay: Relay) -> None:
    with db.session() as session:
        live.forget_process(session, relay.id)
