"""The agent protocol (`/agent/v1`), as both sides speak it: registration and heartbeats,
the long poll's answer (jobs and stops), the job an agent receives, the report it sends
about its part of a full capture, the answer to that report, the reasons a capture ends,
and where a machine writes its part.

The field names and their meanings are the wire: old and new agents and control planes
talk to each other, so a field may be added (with a default) but never renamed or dropped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from edgepcap.formats.filters import FilterV1
from edgepcap.formats.pcapfile import Packet
from edgepcap.formats.pcapng import INBOUND, OUTBOUND

# Why a capture (or one machine's part of it) ended: the `end_reason` of a report and of
# a capture, and the `reason` of an answer that says stop.
TIME_LIMIT = "time_limit"
PACKET_LIMIT = "packet_limit"
BYTE_LIMIT = "byte_limit"
STOP = "stop"
ERROR = "error"
LIMIT_REASONS = (PACKET_LIMIT, BYTE_LIMIT)

# The states of a machine's part, as its reports give them.
RUNNING, DONE, FAILED = "running", "done", "failed"
ENDED_STATES = (DONE, FAILED)


def object_name(machine: str, pcap_id: str) -> str:
    """Where a machine writes its part of a full capture, in the capture's bucket."""
    return f"{machine}/pcap_{pcap_id}.pcap"


def machine_of(name: str) -> str:
    """The machine whose part of a capture `object_name` named `name`."""
    return name.split("/", 1)[0]


BOOT_ID = r"^[0-9a-f]{32}$"  # one run of an agent: a new one at every start
# Seconds an agent keeps an idle connection to the API for its next request (the API keeps
# one longer, so that it never closes one an agent is reusing): with heartbeats every 10 s
# or more, a shorter one meant a new TCP connection for nearly every heartbeat.
KEEP_ALIVE = 60.0


class Beat(BaseModel):
    """Who a call is from: the machine and its agent's current run (every body and the
    query of `GET /jobs` and `POST /samples` carry these)."""

    model_config = ConfigDict(extra="forbid")
    machine: str = Field(max_length=64)
    boot_id: str = Field(pattern=BOOT_ID)


class Hello(Beat):
    """`POST /register`: a machine of a colo starts a run."""

    colo: str = Field(max_length=16)


class Heartbeat(Beat):
    """`POST /heartbeat`: the run is alive; the sampler's counters ride along."""

    stats: dict[str, int] = Field(default_factory=dict, max_length=32)


class SampleSink(TypedDict):
    """Where a machine inserts its sample batches itself, instead of `POST /samples`:
    ClickHouse's HTTP interface at `url`, as `user` (this machine's, INSERT into `table`
    only), the batch's WIRE bytes as the body of `INSERT INTO table FORMAT RowBinary`."""

    url: str
    user: str
    password: str
    table: str


class Welcome(TypedDict):
    """The answer to `POST /register`."""

    machine: str
    colo: str
    heartbeat_interval: float  # seconds between heartbeats
    samples_to: NotRequired[SampleSink]  # absent: ship samples to `POST /samples`


class StopWire(TypedDict):
    """One capture the machine is running that it should stop, and why (an end reason)."""

    id: str
    reason: str


class JobWire(TypedDict):
    """A job as the control plane sends it (`GET /jobs`, `jobs[]`)."""

    id: str
    account_id: str
    prefixes: list[str]
    filter_v1: dict[str, Any]
    time_limit: int
    packet_limit: int | None
    byte_limit: int | None
    destination_conf: str
    object_name: str


@dataclass
class Job:
    """A capture job as the agent runs it, checked before it reaches the kernel."""

    id: str
    prefixes: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    filter: FilterV1
    time_limit: int
    packet_limit: int | None
    byte_limit: int | None
    destination_conf: str
    object_name: str

    @classmethod
    def parse(cls, raw: dict[str, Any], machine: str) -> Job:
        pcap_id = str(raw["id"])
        if len(pcap_id) != 32 or any(c not in "0123456789abcdef" for c in pcap_id):
            raise ValueError(f"job id {pcap_id!r} is not 32 hex digits")
        prefixes = [ipaddress.ip_network(p, strict=True) for p in raw["prefixes"]]
        if not prefixes:
            raise ValueError("job has no account prefixes: refusing to capture everything")
        time_limit = int(raw["time_limit"])
        if not 1 <= time_limit <= 86_400:
            raise ValueError(f"job time_limit {time_limit} out of range")
        expected = object_name(machine, pcap_id)
        if raw.get("object_name") != expected:
            raise ValueError(f"job object name {raw.get('object_name')!r} is not {expected}")
        return cls(
            id=pcap_id,
            prefixes=prefixes,
            filter=FilterV1.model_validate(raw.get("filter_v1") or {}),
            time_limit=time_limit,
            packet_limit=raw.get("packet_limit"),
            byte_limit=raw.get("byte_limit"),
            destination_conf=str(raw["destination_conf"]),
            object_name=expected,
        )


class JobsAnswer(TypedDict):
    """The answer to the long poll `GET /jobs`: captures to start and captures to stop."""

    jobs: list[JobWire]
    stop: list[StopWire]


# Runs of a machine's own packets one end report may list (see Outbound): the report is
# JSON under the API's 64 KiB body limit, and 1 024 runs of 10-digit ordinals take ~25 KB.
OUTBOUND_RUNS = 1024


class Outbound:
    """Which packets of a machine's object the machine sent itself, in runs of their
    ordinals in the object: PCAP records have no room for a direction, and the objects stay
    PCAP (Cloudflare's layout), so the direction travels beside them, in the end report.

    A packet logged on NFLOG's output hook was sent by the machine (outbound); one logged
    on prerouting arrived (inbound). Forwarded traffic, an edge machine's usual load, is
    all inbound, so the runs are few; past OUTBOUND_RUNS runs the rest is unknown
    (`known`: how many leading packets the runs speak for; None while they speak for all).
    """

    def __init__(self, limit: int = OUTBOUND_RUNS) -> None:
        self.runs: list[list[int]] = []  # [first, last + 1] of each run of outbound packets
        self.known: int | None = None
        self.limit = limit

    def add(self, ordinal: int) -> None:
        """Packet `ordinal` of the object (0 first) is outbound; ordinals come in order."""
        if self.known is not None:
            return
        runs = self.runs
        if runs and runs[-1][1] == ordinal:
            runs[-1][1] = ordinal + 1
        elif len(runs) < self.limit:
            runs.append([ordinal, ordinal + 1])
        else:
            self.known = ordinal


def directions(
    runs: list[list[int]], known: int | None, first: int = 0
) -> Callable[..., int | None]:
    """The direction of each packet of an object from packet `first` on, asked in the
    object's order (the control plane's side of Outbound; whatever it is called with is
    not looked at): OUTBOUND inside a run, INBOUND between them, None (unknown) from
    `known` on."""
    ordinal = first - 1
    at = 0

    def direction(*_packet: Packet) -> int | None:
        nonlocal ordinal, at
        ordinal += 1
        if known is not None and ordinal >= known:
            return None
        while at < len(runs) and runs[at][1] <= ordinal:
            at += 1
        return OUTBOUND if at < len(runs) and runs[at][0] <= ordinal else INBOUND

    return direction


class Report(BaseModel):
    """What an agent tells about its part of a capture (`POST /captures/{id}/report`,
    besides the machine and boot it comes from). An agent sends only the fields it has
    something to say in; the others are 0 or null."""

    state: str = Field(pattern=r"^(running|done|failed)$")
    packets: int = Field(0, ge=0)
    bytes: int = Field(0, ge=0)
    kernel_matched: int = Field(0, ge=0)
    dropped: int = Field(0, ge=0)
    overruns: int = Field(0, ge=0)
    # Budget leases of a limited capture: wanted ahead, needed now, given back.
    want_packets: int = Field(0, ge=0)
    want_bytes: int = Field(0, ge=0)
    need_packets: int = Field(0, ge=0)
    need_bytes: int = Field(0, ge=0)
    release_packets: int = Field(0, ge=0)
    release_bytes: int = Field(0, ge=0)
    object_name: str | None = Field(None, max_length=1024)
    error: str | None = Field(None, max_length=2000)
    end_reason: str | None = Field(None, max_length=32)
    # In an end report: the object's packets the machine sent itself (Outbound), and how
    # many of its first packets those runs speak for (None: an agent that does not say,
    # from before directions: none).
    outbound: list[tuple[int, int]] = Field(default_factory=list, max_length=OUTBOUND_RUNS)
    directions_known: int | None = Field(None, ge=0)


class ReportWire(TypedDict, total=False):
    """A `Report` as the agent builds it: the same keys, only those it has a value for."""

    state: str
    packets: int
    bytes: int
    kernel_matched: int
    dropped: int
    overruns: int
    want_packets: int
    want_bytes: int
    need_packets: int
    need_bytes: int
    release_packets: int
    release_bytes: int
    object_name: str | None
    error: str | None
    end_reason: str | None
    outbound: list[list[int]]
    directions_known: int | None


@dataclass
class Answer:
    """The control plane's answer to a report: stop (and why), give back leases, or
    take these grants."""

    stop: bool = False
    release: bool = False
    grant_packets: int = 0
    grant_bytes: int = 0
    reason: str | None = None
    # Someone watches the capture live since this time (unix ns): send copies of the
    # records written from then on (`live_runs`).
    live_since: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Answer:
        """The answer as received; fields it lacks keep their defaults, unknown ones
        (from a newer control plane) are ignored."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


# A live batch (`POST /captures/{id}/live?first=N[&known=K]`): the body is the runs of the
# packets the machine sent itself, "a-b" (ordinals a to b - 1 of the object) joined by
# commas, as ASCII after its length (LIVE_HEAD), then PCAP records (microseconds, no file
# header) as the machine wrote them to its object, packet `first` first. From packet
# `known` on, the machine no longer knows directions (Outbound's cap).
LIVE_MAX_BYTES = 4 << 20  # of one live batch's records
LIVE_HEAD = struct.Struct("!I")
MAX_ORDINAL = 1 << 62


def live_body(records: bytes, runs: list[list[int]]) -> bytes:
    text = runs_text(runs).encode()
    return LIVE_HEAD.pack(len(text)) + text + records


def split_live_body(body: bytes) -> tuple[str, bytes]:
    """A live batch's runs (text) and records; ValueError when it is not one."""
    if len(body) < LIVE_HEAD.size:
        raise ValueError("a live batch starts with the length of its runs")
    (size,) = LIVE_HEAD.unpack_from(body)
    end = LIVE_HEAD.size + size
    if end > len(body):
        raise ValueError("a live batch's runs run past its end")
    return body[LIVE_HEAD.size : end].decode("ascii", "replace"), body[end:]


def runs_text(runs: list[list[int]]) -> str:
    return ",".join(f"{a}-{b}" for a, b in runs)


def parse_runs(text: str, first: int, count: int) -> list[list[int]]:
    """`runs_text`'s runs, each checked to lie within packets [first, first + count)."""
    runs: list[list[int]] = []
    for part in filter(None, text.split(",")):
        a, sep, b = part.partition("-")
        if not (sep and a.isascii() and a.isdigit() and b.isascii() and b.isdigit()):
            raise ValueError(f"outbound run {part!r} is not FIRST-END")
        start, end = int(a), int(b)
        if not first <= start < end <= first + count or (runs and start < runs[-1][1]):
            raise ValueError(f"outbound run {part!r} is out of order or out of the batch")
        runs.append([start, end])
    return runs


def live_runs(outbound: Outbound, first: int, count: int) -> list[list[int]]:
    """The runs of `outbound` within packets [first, first + count): what a live batch of
    those packets says of their directions."""
    end = first + count
    runs: list[list[int]] = []
    for a, b in reversed(outbound.runs):
        if b <= first:
            break
        if a < end:
            runs.append([max(a, first), min(b, end)])
    runs.reverse()
    return runs
