"""Live viewers of running captures in this API process: the hub that hands machines'
copies to them, and the pcapng stream each viewer reads.

A viewer never slows a capture or its object in the bucket: each has a bounded queue,
and what does not fit is dropped whole and counted per machine (so are copies lost
before they reached this process: a gap in a machine's packet ordinals). The viewer is
told in Interface Statistics Blocks (`isb_ifdrop`) as it goes and at the end; one whose
queue stays full for `STALLED` seconds is disconnected. Everything runs on the process's
event loop; packet bytes live only in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from edgepcap.formats import pcapng
from edgepcap.formats.pcapfile import LINKTYPE_RAW, RECORD_HEADER

QUEUE_BYTES = 16 << 20  # of one viewer's queue
STALLED = 10.0  # seconds a viewer's queue may stay full before it is disconnected
FLUSH_EVERY = 0.2  # seconds at most between the arrival of a packet and its sending
CHECK_EVERY = 0.5  # seconds between looks at whether the capture still runs
END_GRACE = 1.0  # seconds after the end for copies still on their way (relayed ones)


@dataclass(frozen=True)
class Piece:
    """Copies of packets [first, first + count) of one machine's object."""

    machine: str
    colo: str
    first: int
    count: int
    records: bytes  # PCAP records, microseconds
    runs: list[list[int]]  # which of them the machine sent itself


class Viewer:
    """One viewer's queue and what it lost."""

    def __init__(self, pcap_id: str, limit: int = QUEUE_BYTES) -> None:
        self.pcap_id = pcap_id
        self.limit = limit
        self.queue: collections.deque[Piece] = collections.deque()
        self.queued = 0
        self.dropped: dict[str, int] = collections.defaultdict(int)
        self.expected: dict[str, int] = {}  # each machine's next packet ordinal
        self.full_since: float | None = None
        self.event = asyncio.Event()
        # The task sending this viewer's stream: cancelled (the connection closed) when the
        # viewer stalls, for it is then blocked writing to a client that does not read.
        self.task: asyncio.Task[object] | None = None
        self.cut = False

    def put(self, piece: Piece) -> None:
        expected = self.expected.get(piece.machine, piece.first)
        if piece.first > expected:  # lost before it reached this process
            self.dropped[piece.machine] += piece.first - expected
        self.expected[piece.machine] = max(expected, piece.first + piece.count)
        if self.queued + len(piece.records) > self.limit:
            self.dropped[piece.machine] += piece.count
            if self.full_since is None:
                self.full_since = time.monotonic()
            elif self.stalled and self.task is not None and not self.cut:
                self.cut = True
                self.task.cancel()
            return
        self.queue.append(piece)
        self.queued += len(piece.records)
        self.event.set()

    def take(self) -> list[Piece]:
        pieces = list(self.queue)
        self.queue.clear()
        self.queued = 0
        self.full_since = None
        self.event.clear()
        return pieces

    @property
    def stalled(self) -> bool:
        return self.full_since is not None and time.monotonic() - self.full_since > STALLED


@dataclass
class Hub:
    """This process's viewers, by capture."""

    viewers: dict[str, set[Viewer]] = field(default_factory=dict)

    def add(self, pcap_id: str, limit: int = QUEUE_BYTES) -> Viewer:
        viewer = Viewer(pcap_id, limit)
        self.viewers.setdefault(pcap_id, set()).add(viewer)
        return viewer

    def remove(self, viewer: Viewer) -> bool:
        """Forget `viewer`; True when it was the capture's last here."""
        left = self.viewers.get(viewer.pcap_id, set())
        left.discard(viewer)
        if not left:
            self.viewers.pop(viewer.pcap_id, None)
        return not left

    def publish(self, pcap_id: str, piece: Piece) -> None:
        for viewer in self.viewers.get(pcap_id, ()):
            viewer.put(piece)


class Stream:
    """The pcapng a viewer reads: the section, then each machine's interface when its
    first copy arrives, its packets, and its losses."""

    def __init__(self, comment: str) -> None:
        self.head = pcapng.section_header(comment)
        self.interfaces: dict[str, int] = {}
        self.told: dict[str, int] = {}  # losses told so far, per machine

    def pieces(self, pieces: list[Piece], out: bytearray) -> None:
        for piece in pieces:
            index = self.interfaces.get(piece.machine)
            if index is None:
                index = self.interfaces[piece.machine] = len(self.interfaces)
                description = f"edgepcap {piece.colo} {piece.machine}"
                out += pcapng.interface_block(
                    LINKTYPE_RAW, 0xFFFF, piece.machine, description, False
                )
            _packets(out, index, piece)

    def losses(self, viewer: Viewer, out: bytearray, comment: str | None = None) -> None:
        """An ISB for every machine whose losses grew (all of them, with `comment`)."""
        now = time.time_ns()
        for machine, index in self.interfaces.items():
            lost = viewer.dropped.get(machine, 0)
            if comment is not None or lost != self.told.get(machine, 0):
                self.told[machine] = lost
                out += pcapng.statistics_block(index, now, lost, nanosecond=False, comment=comment)


def _packets(out: bytearray, index: int, piece: Piece) -> None:
    data = memoryview(piece.records)
    runs = piece.runs
    at = 0
    ordinal = piece.first
    pos = 0
    size = RECORD_HEADER.size
    while pos + size <= len(data):
        sec, usec, incl, orig = RECORD_HEADER.unpack_from(data, pos)
        while at < len(runs) and runs[at][1] <= ordinal:
            at += 1
        outbound = at < len(runs) and runs[at][0] <= ordinal
        direction = pcapng.OUTBOUND if outbound else pcapng.INBOUND
        start = pos + size
        pcapng.write_packet(
            out,
            index,
            sec * 1_000_000_000 + usec * 1000,
            data[start : start + incl],
            orig,
            direction,
            False,
        )
        pos = start + incl
        ordinal += 1


async def follow(
    viewer: Viewer,
    stream: Stream,
    running: Callable[[], Awaitable[tuple[bool, str]]],
) -> AsyncIterator[bytes]:
    """The viewer's pcapng until the capture ends (`running()` says whether it still
    does, and its status), the viewer stalls, or the client goes away."""
    viewer.task = asyncio.current_task()
    yield stream.head
    next_check = 0.0
    ended_at: float | None = None
    status = ""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(viewer.event.wait(), FLUSH_EVERY)
        out = bytearray()
        stream.pieces(viewer.take(), out)
        stream.losses(viewer, out)
        if viewer.stalled:
            stream.losses(viewer, out, "disconnected: this viewer did not keep up")
            yield bytes(out)
            return
        if out:
            yield bytes(out)
        now = time.monotonic()
        if ended_at is None and now >= next_check:
            next_check = now + CHECK_EVERY
            active, status = await running()
            if not active:
                ended_at = now
        if ended_at is not None and now - ended_at >= END_GRACE and not viewer.queue:
            out = bytearray()
            stream.losses(viewer, out, f"capture ended: {status}")
            yield bytes(out)
            return
