"""The fleet: agent keys, machine registration, liveness, and what a `colo_name` names."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgepcap.credentials import hash_secret, new_id, new_secret
from edgepcap.models import AgentKey, Machine, Prefix, utcnow

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = dt.timedelta(seconds=5)
MACHINE_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
COLO_NAME = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")


class FleetError(ValueError):
    pass


def create_agent_key(session: Session, label: str = "") -> tuple[AgentKey, str]:
    key = new_secret("epa")
    row = AgentKey(id=new_id(), key_hash=hash_secret(key), label=label)
    session.add(row)
    session.flush()
    return row, key


def agent_key_valid(session: Session, key: str) -> bool:
    return (
        session.scalar(select(AgentKey.id).where(AgentKey.key_hash == hash_secret(key))) is not None
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


def heartbeat(
    session: Session, machine: str, boot_id: str, stats: dict[str, int] | None = None
) -> Machine | None:
    row = session.get(Machine, machine)
    if row is None or row.boot_id != boot_id:
        return None
    row.last_seen = utcnow()
    if stats is not None:
        row.stats = stats
    session.flush()
    return row


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
