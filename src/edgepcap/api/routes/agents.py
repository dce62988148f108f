"""The internal agent protocol (`/agent/v1`): registration, heartbeats, jobs and progress."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from edgepcap.api.errors import APIError, Code
from edgepcap.api.live import Piece
from edgepcap.control import completion, execution, fleet, live, polls
from edgepcap.control.db import Database
from edgepcap.control.models import MACHINE_ACTIVE, CaptureMachine, utcnow
from edgepcap.control.samples import admission
from edgepcap.formats import protocol
from edgepcap.formats import samples as records
from edgepcap.formats.pcapfile import walk_records

PREFIX = "/agent/v1"
router = APIRouter(prefix=PREFIX, tags=["agents"], include_in_schema=False)
# Query parameters of every call an agent makes about itself.
MachineName = Annotated[str, Query(max_length=64)]
BootId = Annotated[str, Query(pattern=protocol.BOOT_ID)]
MAX_WAIT = 30.0


@dataclass(frozen=True)
class Caller:
    """The machine an agent key speaks for: every call is about this machine only."""

    key_id: str
    colo: str
    machine: str

    def check(self, machine: str, colo: str | None = None) -> None:
        if machine != self.machine or (colo is not None and colo != self.colo):
            claimed = repr(machine) + (f" of {colo}" if colo is not None else "")
            raise APIError(
                403,
                Code.FORBIDDEN,
                f"agent key {self.key_id} is for machine {self.machine!r} of {self.colo} "
                f"only, not {claimed}",
            )


async def agent(request: Request) -> Caller:
    """The machine the request's agent key speaks for: kept in memory once verified while
    revocations reach this process (`api.agent_keys`), else one indexed read without a
    transaction on the event loop, as customers' keys are."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise APIError(401, Code.AUTHENTICATION, "agents authenticate with `Bearer <agent key>`")
    row = request.app.state.agent_keys.binding(key.strip())
    if row is None:
        raise APIError(401, Code.AUTHENTICATION, "invalid agent key")
    if row.revoked is not None:
        raise APIError(401, Code.AUTHENTICATION, f"agent key {row.id} has been revoked")
    if row.colo is None or row.machine is None:
        raise APIError(
            403,
            Code.FORBIDDEN,
            f"agent key {row.id} is bound to no machine (minted before keys were bound): "
            "mint one per machine with `edgepcap agents create-key --colo COLO "
            f"--machine NAME`, then `edgepcap agents revoke-key {row.id}`",
        )
    return Caller(row.id, row.colo, row.machine)


Agent = Annotated[Caller, Depends(agent)]


def _register_again() -> APIError:
    """The answer to a machine that is unknown or not in its current run."""
    return APIError(409, Code.WRONG_STATE, "unknown machine or boot: register again")


# A report, with the machine and boot it comes from (Beat's fields first, as agents send them).
class ReportIn(protocol.Report, protocol.Beat):
    pass


def job(pcap: Mapping[str, Any], machine: str) -> protocol.JobWire:
    """A capture (a row of `pcaps`) as the job `machine` is given."""
    return {
        "id": pcap["id"],
        "account_id": pcap["account_id"],
        "prefixes": pcap["prefixes"],
        "filter_v1": pcap["filter_v1"] or {},
        "time_limit": pcap["time_limit"],
        "packet_limit": pcap["packet_limit"],
        "byte_limit": pcap["byte_limit"],
        "destination_conf": pcap["destination_conf"],
        "object_name": protocol.object_name(machine, pcap["id"]),
    }


@router.post("/register", response_model=None)  # the protocol's shape; nothing to check
def register(request: Request, caller: Agent, body: protocol.Hello) -> protocol.Welcome:
    try:
        colo, name = fleet.check_names(body.colo, body.machine)
    except fleet.FleetError as exc:
        raise APIError(400, Code.INVALID_VALUE, str(exc)) from exc
    caller.check(name, colo)
    with request.app.state.db.session() as session:
        machine = fleet.register(session, colo, name, body.boot_id)
        execution.sweep(session, request.app.state.supervisor.listening_since())
        welcome: protocol.Welcome = {
            "machine": machine.name,
            "colo": machine.colo,
            "heartbeat_interval": fleet.HEARTBEAT_INTERVAL,
        }
    if request.app.state.sample_sinks is not None:
        welcome["samples_to"] = request.app.state.sample_sinks.sink(name)
    return welcome


@router.post("/heartbeat")
async def heartbeat(request: Request, caller: Agent, body: protocol.Heartbeat) -> dict[str, Any]:
    """One UPDATE, without the session's pre-ping and transaction on PostgreSQL
    (`Database.read`'s connection; the UPDATE is safe to repeat): a fleet sends thousands
    of these a minute. On PostgreSQL on the event loop, as the agent key's read is (a
    thread's hand-over cost as much as the UPDATE); on SQLite in a thread, where a write
    may wait for the database's lock."""
    caller.check(body.machine)
    db: Database = request.app.state.db

    def beat(conn: Connection) -> bool:
        alive = fleet.heartbeat(conn, body.machine, body.boot_id, body.stats)
        conn.commit()  # SQLite's connection is in a transaction; PostgreSQL's autocommits
        return alive

    if db.engine.name == "postgresql":
        alive = db.read(beat)
    else:
        alive = await run_in_threadpool(db.read, beat)
    if not alive:
        raise _register_again()
    return {"ok": True}


def _look(
    db: Database, machine: str, boot_id: str, running: list[str]
) -> protocol.JobsAnswer | None:
    """What the machine's current run must do now, or None (register again): plain reads
    without transaction (`control.polls`), on the event loop as the agent key's is."""

    def look(conn: Connection) -> protocol.JobsAnswer | None:
        assigned = polls.jobs(conn, machine, boot_id)
        if assigned is None:
            return None
        # A job the agent says it runs is its already, though its first report (which
        # makes the part running) may not be in yet: answering it again would only make
        # the agent poll again at once, a hundred machines of a colo together.
        found = [job(p, machine) for p in assigned if p["id"] not in running]
        stops: list[protocol.StopWire] = [
            {"id": pcap_id, "reason": reason}
            for pcap_id, reason in polls.stops(conn, machine, running)
        ]
        return {"jobs": found, "stop": stops}

    return db.read(look)


def _ids(value: str) -> list[str]:
    ids = [i for i in value.split(",") if i]
    if len(ids) > 1000 or any(len(i) != 32 or i.strip("0123456789abcdef") for i in ids):
        raise APIError(400, Code.INVALID_VALUE, "`running` is a comma-separated list of pcap ids")
    return ids


@router.get("/jobs", response_model=None)
async def jobs(
    request: Request,
    response: Response,
    caller: Agent,
    machine: MachineName,
    boot_id: BootId,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 20.0,
    running: Annotated[str, Query(max_length=33_000)] = "",
) -> protocol.JobsAnswer:
    """Long poll: answers as soon as the machine has assigned jobs, or one of the captures
    it is `running` should stop (stop requested, limit reached, part ended), or after `wait` s.
    """
    # Only heartbeats keep a machine live: a poll held open for an agent that has
    # died must not.
    caller.check(machine)
    capturing = _ids(running)
    deadline = time.monotonic() + wait
    wakeup = request.app.state.wakeup
    waiter = wakeup.waiter(machine)
    try:
        while True:
            found = _look(request.app.state.db, machine, boot_id, capturing)
            if found is None:
                raise _register_again()
            if found["jobs"] or found["stop"] or time.monotonic() >= deadline:
                return found
            if wakeup.closing:
                # The process is stopping: this connection ends with the answer, so the
                # agent's next poll goes to a listener that is still open (or is refused).
                response.headers["Connection"] = "close"
                return {"jobs": [], "stop": []}
            if await request.is_disconnected():
                return {"jobs": [], "stop": []}
            woken = await waiter.wait(min(wakeup.look_every, max(0.0, deadline - time.monotonic())))
            if not woken and time.monotonic() >= deadline:
                # Nothing announced since the last look: the next poll looks on arrival.
                return {"jobs": [], "stop": []}
    finally:
        waiter.close()


@router.post("/captures/{pcap_id}/report")
def report(request: Request, caller: Agent, pcap_id: str, body: ReportIn) -> dict[str, Any]:
    caller.check(body.machine)
    rep = protocol.Report.model_construct(**body.model_dump(exclude={"machine", "boot_id"}))
    ending = rep.state in protocol.ENDED_STATES
    # What the capture's other machines must hear of at once: give back their leases, or
    # stop, the capture's limit reached. Not a stop request's end, which they heard of
    # (a colo's hundred end reports would each wake its hundred polls).
    limit = rep.end_reason if ending else None
    machines: list[str] = []
    db = request.app.state.db
    with db.session() as session:
        # Only the machine's current run reports: a previous run (or a copy of its key
        # elsewhere) must not take over a part that no current worker is capturing.
        if fleet.current_run(session, body.machine, body.boot_id) is None:
            raise _register_again()
        answer = execution.report(session, body.machine, body.boot_id, pcap_id, rep)
        tell = answer.release or (answer.reason or limit) in protocol.LIMIT_REASONS
        if tell:
            machines = execution.machines_of(session, pcap_id)
    if ending:
        # Now that this part's end is committed (`execution.report`).
        with db.session() as session:
            completion.close_if_done(session, pcap_id)
    if tell:
        request.app.state.wakeup.notify(machines)
    return asdict(answer)


@router.get("/prefixes")
def prefixes(request: Request, _: Agent) -> dict[str, Any]:
    """What the samplers sample: every account's prefixes, versioned."""
    with request.app.state.db.session() as session:
        return fleet.prefix_map(session)


@router.post("/samples")
async def samples(
    request: Request,
    caller: Agent,
    machine: MachineName,
    boot_id: BootId,
) -> dict[str, Any]:
    """A batch of sample records from the current run of the key's machine; each is kept
    only if it passes admission (timestamp, lengths) and its account owns its source or
    destination (the agent attributes, the control plane checks)."""
    body = await request.body()
    size = records.WIRE.itemsize
    if len(body) % size:
        raise APIError(400, Code.INVALID_VALUE, f"sample batches are whole {size}-byte records")
    wire = np.frombuffer(body, dtype=records.WIRE)
    ok = await run_in_threadpool(_admit_samples, request, caller, machine, boot_id, wire)
    kept, rejected = await run_in_threadpool(_keep_samples, request, caller.machine, wire[ok])
    return {"kept": kept, "rejected": rejected + int(len(wire) - ok.sum())}


def _admit_samples(
    request: Request, caller: Caller, machine: str, boot_id: str, wire: np.ndarray
) -> np.ndarray:
    """The records that may go on to the tenancy check; the others are counted in /metrics
    under the key's machine, and a batch not from its current boot is refused whole."""
    mine = machine == caller.machine
    with request.app.state.db.session() as session:
        current = mine and fleet.current_run(session, caller.machine, boot_id) is not None
        if current:
            ok, counts = admission.refusals(wire, time.time_ns())
        else:
            ok, counts = np.zeros(len(wire), dtype=bool), {"boot" if mine else "machine": len(wire)}
        fleet.count_refused(session, caller.machine, counts)
    caller.check(machine)
    if not current:
        raise _register_again()
    return ok


def _keep_samples(request: Request, machine: str, wire: np.ndarray) -> tuple[int, int]:
    with request.app.state.db.session() as session:
        owned = fleet.prefix_map(session)["accounts"]
    ok = np.zeros(len(wire), dtype=bool)
    for account in np.unique(wire["account"]):
        mine = wire["account"] == account
        # Family by family: an IPv6 sample to ::ffff:<an account's IPv4> is not that account's.
        nets = [ipaddress.ip_network(c) for c in owned.get(bytes(account).hex(), [])]
        ok |= mine & records.owned(wire, nets)
    kept = request.app.state.samples.append(wire[ok], machine) if ok.any() else 0
    if kept and (machines := request.app.state.triggers.observe(wire[ok])):
        request.app.state.wakeup.notify(machines)  # a trigger's capture: they start now
    return kept, int(len(wire) - ok.sum())


@router.post("/captures/{pcap_id}/live")
async def live_copies(
    request: Request,
    caller: Agent,
    pcap_id: str,
    machine: MachineName,
    boot_id: BootId,
    first: Annotated[int, Query(ge=0, le=protocol.MAX_ORDINAL)],
    known: Annotated[int | None, Query(ge=0, le=protocol.MAX_ORDINAL)] = None,
) -> dict[str, Any]:
    """Copies of packets `first`… of the machine's object of a capture
    (`protocol.live_body`), for its live viewers (on this process or relayed to others);
    never stored."""
    caller.check(machine)
    body = await request.body()
    try:
        text, records = protocol.split_live_body(body)
        count = await run_in_threadpool(_records, records)
        runs = protocol.parse_runs(text, first, count)
    except ValueError as exc:
        raise APIError(400, Code.INVALID_VALUE, str(exc)) from exc
    relay = request.app.state.relay
    # Checked and looked up at most every WATCHERS_FOR per machine run and capture.
    key = (pcap_id, machine, boot_id)
    watchers = relay.cached_watchers(key)
    if watchers is None:
        found = await run_in_threadpool(_live_target, request, pcap_id, machine, boot_id)
        if found is None:
            raise _register_again()
        watchers = found
        relay.remember_watchers(key, watchers)
    piece = Piece(machine, caller.colo, first, count, records, runs, known)
    await relay.publish(pcap_id, piece, watchers)
    return {"viewers": len(watchers)}


def _records(body: bytes) -> int:
    """How many whole PCAP records `body` holds; ValueError if it is not just records."""
    ends = [end for _start, end, _ts, _orig in walk_records(body)]
    if (ends[-1] if ends else 0) != len(body):
        raise ValueError("a live batch is whole PCAP records")
    return len(ends)


def _live_target(
    request: Request, pcap_id: str, machine: str, boot_id: str
) -> list[tuple[str, str, str]] | None:
    """The processes watching the capture, if the machine's current run captures for it
    (another machine's key, or an earlier run, may not feed its viewers); None: register
    again."""
    with request.app.state.db.session() as session:
        if fleet.current_run(session, machine, boot_id) is None:
            return None
        part = session.get(CaptureMachine, (pcap_id, machine))
        if part is None or part.state not in MACHINE_ACTIVE or part.boot_id != boot_id:
            return []
        return live.watchers(session, pcap_id, utcnow())
