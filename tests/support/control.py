"""The control plane driven in process, on a real SQLite database: an account with a
proven `file://` bucket, live machines of a colo, a full capture assigned to them as
`captures.create` admits it, and the reports its machines send (no API server, no agent,
no kernel)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import selectinload

from edgepcap.control import buckets, captures, execution, fleet
from edgepcap.control.accounts import create_account
from edgepcap.control.db import Database
from edgepcap.control.models import Account, Pcap
from edgepcap.control.settings import Limits
from edgepcap.destinations import StoreSettings
from edgepcap.formats import protocol
from edgepcap.formats.filters import FilterV1
from edgepcap.formats.protocol import Answer, Report

BOOT = "a" * 32  # every machine's current run
OTHER_BOOT = "b" * 32  # a run that is not the one a part was started by
THREE = ("ord01", "ord02", "ord03")  # a colo's machines
TWO = ("ord01", "ord02")


@dataclass
class FullRequest:
    """A full capture as `captures.create` reads it (its `CaptureRequest`)."""

    colo_name: str
    destination_conf: str
    packet_limit: int | None = None
    byte_limit: int | None = None
    time_limit: int = 300
    type: str = "full"
    system: str = "magic-transit"
    offset_time: dt.datetime | None = None
    filter_v1: FilterV1 | None = None


def proven_bucket(db: Database, account_id: str, root: Path, name: str) -> str:
    """A `file://` bucket directory `name` below `root`, added and validated for the
    account the way a customer proves one (the challenge file read back); its conf."""
    (root / name).mkdir(parents=True)
    stores = StoreSettings(bucket_root=root)
    with db.session() as s:
        bucket = buckets.add(s, account_id, f"file://{root / name}", stores)
        conf, filename = bucket.destination_conf, bucket.filename
    token = (root / name / filename).read_text()
    with db.session() as s:
        assert buckets.validate(s, account_id, conf, token, stores).status == "success"
    return conf


def full_capture(
    db: Database,
    root: Path,
    machines: tuple[str, ...],
    packet_limit: int | None = None,
    byte_limit: int | None = None,
    colo: str = "ORD",
    time_limit: int = 300,
) -> str:
    """A pending full capture of a new account over `machines` (registered live in
    `colo` with run BOOT), limited as given; returns its id."""
    with db.session() as s:
        account, _creds = create_account(s, "lessee", ["203.0.113.0/24"])
        account_id = account.id
        for name in machines:
            fleet.register(s, colo, name, BOOT)
    conf = proven_bucket(db, account_id, root, "lessee")
    req = FullRequest(colo, conf, packet_limit, byte_limit, time_limit)
    with db.session() as s:
        account = s.get_one(Account, account_id)
        pcap = captures.create(s, account, req, Limits())
        assert pcap.status == "pending", pcap.error_message
        return pcap.id


def report(db: Database, machine: str, pcap_id: str, boot: str = BOOT, **fields) -> Answer:
    """One report of `machine`'s part, in its own transaction (as the API answers it)."""
    fields.setdefault("state", "running")
    with db.session() as s:
        return execution.report(s, machine, boot, pcap_id, Report(**fields))


def done(machine: str, pcap_id: str, **fields) -> dict:
    """The fields of `machine`'s end report: done, with the object it was told to write."""
    return {"state": "done", "object_name": protocol.object_name(machine, pcap_id), **fields}


def read(db: Database, pcap_id: str) -> Pcap:
    """The capture as committed, with its machines' parts."""
    with db.session() as s:
        return s.get_one(Pcap, pcap_id, options=[selectinload(Pcap.machines)])
