"""SQLAlchemy tables of the control plane: accounts, prefixes, captures, buckets."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Every timestamp in the database is naive UTC: SQLite keeps no zone, and one
# convention for both engines keeps comparisons in SQL correct.


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def unix_ns(t: dt.datetime) -> int:
    """A stored (naive UTC) time in nanoseconds since the epoch, to the microsecond."""
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1e6) * 1000


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    api_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # The per-account sample rate limit lives here so that one conditional
    # UPDATE decides it atomically, whichever API process asks.
    last_sample_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # The full-capture rate (full_rate.py), for the same reason: the current one-minute
    # window's start and how many full captures it has let through.
    full_window_start: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    full_window_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    prefixes: Mapped[list[Prefix]] = relationship(
        back_populates="account", cascade="all, delete-orphan", order_by="Prefix.id"
    )


class Prefix(Base):
    __tablename__ = "prefixes"
    # On PostgreSQL, migration 0006 adds the exclusion constraint `ex_prefixes_no_overlap`
    # (no two prefixes overlap); SQLite relies on accounts.py's check under its write lock.
    __table_args__ = (UniqueConstraint("cidr", name="uq_prefixes_cidr"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    cidr: Mapped[str] = mapped_column(String(43))

    account: Mapped[Account] = relationship(back_populates="prefixes")


ACTIVE_STATUSES = ("pending", "running")


class Pcap(Base):
    __tablename__ = "pcaps"
    __table_args__ = (
        Index("ix_pcaps_account_submitted", "account_id", "submitted"),
        # The retention sweep finds ended captures by when they ended.
        Index("ix_pcaps_finished", "finished"),
        # "At most one pending or running full capture per account", enforced
        # by the database so that racing API processes cannot both win.
        Index(
            "uq_pcaps_one_active_full",
            "account_id",
            unique=True,
            sqlite_where=text("type = 'full' AND status IN ('pending', 'running')"),
            postgresql_where=text("type = 'full' AND status IN ('pending', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    system: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    filter_v1: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    time_limit: Mapped[int] = mapped_column(Integer)
    packet_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    byte_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    colo_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    destination_conf: Mapped[str | None] = mapped_column(Text, nullable=True)
    offset_time: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    submitted: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    stop_requested: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    packets_captured: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_captured: Mapped[int] = mapped_column(BigInteger, default=0)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Budget not yet leased to any machine (None: no such limit). Leases are taken
    # with compare-and-set updates so that the total is never exceeded.
    packets_left: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_left: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # Set when the budget ran dry while machines still hold unused leases: they are
    # asked to hand them back so that a machine with traffic can use them.
    reclaim: Mapped[bool] = mapped_column(default=False)
    # Why the capture ended: stop, time_limit, packet_limit, byte_limit, error.
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prefixes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The trigger that started it (None: made by hand). No foreign key: deleting a
    # trigger leaves the captures it started.
    trigger_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    machines: Mapped[list[CaptureMachine]] = relationship(
        back_populates="pcap", cascade="all, delete-orphan", order_by="CaptureMachine.machine"
    )


class Bucket(Base):
    """A destination an account asked to use, and the state of its ownership proof."""

    __tablename__ = "buckets"
    __table_args__ = (
        UniqueConstraint("account_id", "destination_conf", name="uq_buckets_account_dest"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    destination_conf: Mapped[str] = mapped_column(Text)
    filename: Mapped[str] = mapped_column(String(128))
    challenge_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    submitted: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    validated: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AgentKey(Base):
    """A credential of one edge machine's agent on the internal agent API.

    A key speaks for exactly the machine it was minted for: a leaked key must not
    register as, take the jobs of, or report for any other machine. Keys from before
    binding have no colo/machine and are refused (mint bound ones and revoke these).
    """

    __tablename__ = "agent_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    colo: Mapped[str | None] = mapped_column(String(16), nullable=True)
    machine: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Kept, not deleted, so that `agents list` still shows which key was revoked when.
    revoked: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class RefusedSamples(Base):
    """Sample records the control plane refused, by the machine (its key) and reason."""

    __tablename__ = "refused_samples"

    machine: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class Machine(Base):
    """An edge machine; live while its agent's heartbeats arrive."""

    __tablename__ = "machines"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    colo: Mapped[str] = mapped_column(String(16), index=True)
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    registered: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Changes on every agent start, so that reports of a previous run are recognised.
    boot_id: Mapped[str] = mapped_column(String(32), default="")
    # The agent's sampler counters, as of its last heartbeat.
    stats: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class CaptureMachine(Base):
    """One machine's part of a full capture."""

    __tablename__ = "capture_machines"

    pcap_id: Mapped[str] = mapped_column(
        ForeignKey("pcaps.id", ondelete="CASCADE"), primary_key=True
    )
    machine: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="assigned")
    boot_id: Mapped[str] = mapped_column(String(32), default="")
    packets: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    kernel_matched: Mapped[int] = mapped_column(BigInteger, default=0)
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)
    overruns: Mapped[int] = mapped_column(BigInteger, default=0)
    granted_packets: Mapped[int] = mapped_column(BigInteger, default=0)
    granted_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    object_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Which packets of the object the machine sent itself (protocol.Outbound): runs of
    # ordinals, and how many leading packets they speak for (null: all).
    outbound: Mapped[list[list[int]] | None] = mapped_column(JSON, nullable=True)
    directions_known: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_report: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    pcap: Mapped[Pcap] = relationship(back_populates="machines")


MACHINE_ACTIVE = ("assigned", "running")


class PcapBlob(Base):
    """The finished PCAP of a sample capture, served by the download endpoint."""

    __tablename__ = "pcap_blobs"

    pcap_id: Mapped[str] = mapped_column(
        ForeignKey("pcaps.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ApiProcess(Base):
    """A running API process and the relay address other API processes reach it at with
    live packets (never stored: they pass from process to process)."""

    __tablename__ = "api_processes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    address: Mapped[str] = mapped_column(String(300))
    # Shown to it by the others: a per-run secret that any process sharing the database
    # may read, as it reads everything else it needs; it keeps others off the relay port.
    token: Mapped[str] = mapped_column(String(64))
    seen: Mapped[dt.datetime] = mapped_column(DateTime)


class LiveWatch(Base):
    """An API process has live viewers of a capture, until `expires` (it renews while
    they watch): machines send it copies of the capture's packets meanwhile."""

    __tablename__ = "live_watches"

    pcap_id: Mapped[str] = mapped_column(
        ForeignKey("pcaps.id", ondelete="CASCADE"), primary_key=True
    )
    process_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    since: Mapped[dt.datetime] = mapped_column(DateTime)  # when its first viewer came
    expires: Mapped[dt.datetime] = mapped_column(DateTime)


class Trigger(Base):
    """A full capture that starts itself when the account's sampled traffic matching
    `filter_v1` reaches `threshold_pps` over `window` seconds, at most once per `cooldown`,
    until `expires`."""

    __tablename__ = "triggers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    filter_v1: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    threshold_pps: Mapped[int] = mapped_column(BigInteger)
    window: Mapped[int] = mapped_column(Integer)
    cooldown: Mapped[int] = mapped_column(Integer)
    expires: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime)
    # The full capture to create: its request body, as validated when the trigger was made.
    capture: Mapped[dict[str, object]] = mapped_column(JSON)
    # No attempt before this: the cooldown after a fire, a window after a refusal. Claimed
    # by a compare-and-set update, so that one API process fires it once.
    quiet_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_fired: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class TriggerEvent(Base):
    """A trigger's fire (`pcap_id` set) or a refused attempt (`message` set)."""

    __tablename__ = "trigger_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger_id: Mapped[str] = mapped_column(
        ForeignKey("triggers.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime)
    estimated_pps: Mapped[int] = mapped_column(BigInteger)
    pcap_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class TriggerCount(Base):
    """Samples matching a trigger, per second of their timestamps (the last few minutes)."""

    __tablename__ = "trigger_counts"

    trigger_id: Mapped[str] = mapped_column(
        ForeignKey("triggers.id", ondelete="CASCADE"), primary_key=True
    )
    second: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    samples: Mapped[int] = mapped_column(BigInteger)
