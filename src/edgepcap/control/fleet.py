"""The fleet: agent keys, machine registration, liveness, and what a `colo_name` names."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update
from sqlalchemy.orm import Session

from edgepcap.control.changes import announce_keys_revoked
from edgepcap.control.credentials import hash_secret, new_id, new_secret
from edgepcap.control.models import AgentKey, Machine, Prefix, RefusedSamples, utcnow

# Seconds between an agent's heartbeats, handed to it when it registers; a machine is
# lost after LOST_AFTER intervals without one. The process's settings may change both
# (`set_heartbeat_interval`): a fleet of thousands beats less often (BENCHMARKS.md).
HEARTBEAT_INTERVAL = 1.0
LOST_AFTER = 5
HEARTBEAT_TIMEOUT = dt.timedelta(seconds=LOST_AFTER * HEARTBEAT_INTERVAL)
MACHINE_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
COLO_NAME = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")


def set_heartbeat_interval(seconds: float) -> None:
    """This process's heartbeat interval, and the liveness timeout scaled from it."""
    global HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT
    HEARTBEAT_INTERVAL = seconds
    HEARTBEAT_TIMEOUT = dt.timedelta(seconds=LOST_AFTER * seconds)


class FleetError(ValueError):
    pass


def create_agent_key(
    session: Session, colo: str, machine: str, label: str = ""
) -> tuple[AgentKey, str]:
    """A new key for `machine` of `colo` only; the secret is returned once, stored hashed.

    Machine names are unique across colos (a `colo_name` may name one machine), so a key
    for the same name in another colo is refused while a key binding it elsewhere lives.
    """
    colo, machine = check_names(colo, machine)
    elsewhere = session.scalar(
        select(AgentKey.colo).where(
            AgentKey.machine == machine, AgentKey.colo != colo, AgentKey.revoked.is_(None)
        )
    )
    if elsewhere is not None:
        raise FleetError(
            f"machine {machine!r} has a key in colo {elsewhere}: revoke it first "
            "(`edgepcap agents list`, `edgepcap agents revoke-key ID`)"
        )
    key = new_secret("epa")
    row = AgentKey(id=new_id(), key_hash=hash_secret(key), label=label, colo=colo, machine=machine)
    session.add(row)
    session.flush()
    return row, key


def find_agent_key(session: Session, key: str) -> AgentKey | None:
    return session.scalar(select(AgentKey).where(AgentKey.key_hash == hash_secret(key)))


_KEY_BINDING = select(AgentKey.id, AgentKey.revoked, AgentKey.colo, AgentKey.machine).where(
    AgentKey.key_hash == bindparam("key_hash")
)


def agent_key_binding(conn: Connection, key: str) -> Row[Any] | None:
    """The key's id, revocation and machine (one indexed read), or None: no such key."""
    return conn.execute(_KEY_BINDING, {"key_hash": hash_secret(key)}).first()


def revoke_agent_key(session: Session, key_id: str) -> AgentKey:
    row = session.get(AgentKey, key_id)
    if row is None:
        raise FleetError(f"no agent key {key_id!r} (`edgepcap agents list` shows them)")
    if row.revoked is None:
        row.revoked = utcnow()
        # API processes that keep verified keys in memory forget them when this commits.
        announce_keys_revoked(session)
    session.flush()
    return row


def describe_key(row: AgentKey) -> dict[str, Any]:
    """A key as `agents list` shows it (never the secret, which is not stored)."""
    return {
        "id": row.id,
        "colo": row.colo,
        "machine": row.machine,
        "label": row.label,
        "created": row.created.isoformat(),
        "revoked": row.revoked.isoformat() if row.revoked else None,
    }


def count_refused(session: Session, machine: str, counts: dict[str, int]) -> None:
    """Add refused sample records to the machine's counters (one atomic upsert each,
    so that API processes refusing at once do not lose counts)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    for reason, n in counts.items():
        if n <= 0:
            continue
        stmt = insert(RefusedSamples).values(machine=machine, reason=reason, count=n)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["machine", "reason"],
                set_={"count": RefusedSamples.count + stmt.excluded.count},
            )
        )


def check_names(colo: str, machine: str) -> tuple[str, str]:
    colo, machine = colo.upper(), machine.lower()
    if not COLO_NAME.match(colo):
        raise FleetError(f"colo {colo!r} must be letters and digits, e.g. ORD")
    if not MACHINE_NAME.match(machine):
        raise FleetError(f"machine {machine!r} must be lowercase letters, digits and '-'")
    return colo, machine


def register(session: Session, colo: str, machine: str, boot_id: str) -> Machine:
    colo, machine = check_names(colo, machine)
    row = session.get(Machine, machine)
    now = utcnow()
    if row is None:
        row = Machine(name=machine, colo=colo, registered=now)
        session.add(row)
    row.colo = colo
    row.last_seen = now
    row.boot_id = boot_id
    session.flush()
    return row


def current_run(session: Session, machine: str, boot_id: str) -> Machine | None:
    """The machine, if `boot_id` is its current run (what it registered last); else None:
    a previous run, or a copy of its key elsewhere, speaks for nobody."""
    row = session.get(Machine, machine)
    return row if row is not None and row.boot_id == boot_id else None


# Built once, as module-level statements: building one per heartbeat was a tenth of its
# cost (py-spy), and a fleet sends thousands a minute.
_BEAT_WHERE = (Machine.name == bindparam("m_name"), Machine.boot_id == bindparam("m_boot"))
_BEAT = update(Machine).where(*_BEAT_WHERE).values(last_seen=bindparam("m_now"))
_BEAT_STATS = _BEAT.values(stats=bindparam("m_stats"))


def heartbeat(
    conn: Connection | Session, machine: str, boot_id: str, stats: dict[str, int] | None = None
) -> bool:
    """Record that `machine`'s current run (`boot_id`) is alive: one UPDATE, no read
    (thousands of agents send one every interval); False if that run is not current."""
    params: dict[str, Any] = {"m_name": machine, "m_boot": boot_id, "m_now": utcnow()}
    if stats is not None:
        params["m_stats"] = stats
    done = conn.execute(
        _BEAT if stats is None else _BEAT_STATS,
        params,
        execution_options={"synchronize_session": False},
    )
    return done.rowcount == 1  # type: ignore[attr-defined]


def is_live(machine: Machine, now: dt.datetime | None = None) -> bool:
    return machine.last_seen >= (now or utcnow()) - HEARTBEAT_TIMEOUT


def resolve(session: Session, colo_name: str) -> tuple[str, list[Machine]]:
    """The machines a `colo_name` names: one machine (`ord02`) or a whole colo (`ORD`)."""
    machine = session.get(Machine, colo_name.lower())
    if machine is not None:
        return machine.name, [machine]
    colo = colo_name.upper()
    members = list(
        session.scalars(select(Machine).where(Machine.colo == colo).order_by(Machine.name))
    )
    if members:
        return colo, members
    known = sorted({m.colo for m in session.scalars(select(Machine))})
    hint = f"known colos: {', '.join(known)}" if known else "no machine has registered yet"
    raise FleetError(f"`colo_name` {colo_name!r} is neither a colo nor a machine ({hint})")


def prefix_map(session: Session) -> dict[str, Any]:
    """Every account's prefixes, with a version that changes whenever any of them does."""
    accounts: dict[str, list[str]] = {}
    for account_id, cidr in session.execute(
        select(Prefix.account_id, Prefix.cidr).order_by(Prefix.account_id, Prefix.cidr)
    ):
        accounts.setdefault(account_id, []).append(cidr)
    version = hashlib.sha256(json.dumps(accounts, sort_keys=True).encode()).hexdigest()[:16]
    return {"version": version, "accounts": accounts}


def colos(session: Session) -> list[dict[str, Any]]:
    """Every colo with its machines and whether each is live now."""
    now = utcnow()
    out: dict[str, list[dict[str, Any]]] = {}
    for m in session.scalars(select(Machine).order_by(Machine.colo, Machine.name)):
        out.setdefault(m.colo, []).append({"name": m.name, "live": is_live(m, now)})
    return [
        {"colo": c, "machines": ms, "live": sum(m["live"] for m in ms)} for c, ms in out.items()
    ]


def colos_of(session: Session, machines: list[str]) -> dict[str, str]:
    """The colo of each of `machines` that is known (a machine never moves colo)."""
    if not machines:
        return {}
    rows = session.execute(select(Machine.name, Machine.colo).where(Machine.name.in_(machines)))
    return {name: colo for name, colo in rows}
