"""Live viewers of running captures in this API process: the hub that hands machines'
copies to them, and the pcapng stream each viewer reads.

A capture watched here has one `Channel`: the interface of each machine, numbered in the
order its first copy came, and every copy turned into pcapng blocks once, whatever the
number of viewers. A viewer never slows a capture or its object in the bucket: each has a
bounded queue, and what does not fit is dropped whole and counted per machine (so are
copies lost before they reached this process: a gap in a machine's packet ordinals). The
viewer is told in Interface Statistics Blocks (`isb_ifdrop`) as it goes and at the end;
one whose queue stays full for `STALLED` seconds (its client does not read) is cut off.
Everything runs on the process's event loop; packet bytes live only in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from edgepcap.formats import pcapng, protocol
from edgepcap.formats.pcapfile import LINKTYPE_RAW, walk_records

log = logging.getLogger("edgepcap.api")
QUEUE_BYTES = 16 << 20  # of one viewer's queue
STALLED = 10.0  # seconds a viewer's queue may stay full before it is cut off
FLUSH_EVERY = 0.2  # seconds at most between the arrival of a packet and its sending
CHECK_EVERY = 0.5  # seconds between looks at whether the capture still runs
END_GRACE = 1.0  # seconds after the end for copies still on their way (relayed ones)
OUTAGE = 30.0  # seconds the database may be unreachable before a stream gives up


@dataclass(frozen=True)
class Piece:
    """Copies of packets [first, first + count) of one machine's object."""

    machine: str
    colo: str
    first: int
    count: int
    records: bytes  # PCAP records, microseconds
    runs: list[list[int]]  # which of them the machine sent itself
    known: int | None = None  # from this packet on, directions are unknown


@dataclass(frozen=True)
class Blocks:
    """A piece as pcapng packet blocks, for every viewer of its capture."""

    machine: str
    interface: int
    first: int
    count: int
    data: bytes


class Viewer:
    """One viewer's queue and what it lost."""

    def __init__(self, channel: Channel, limit: int = QUEUE_BYTES) -> None:
        self.channel = channel
        self.limit = limit
        self.queue: collections.deque[Blocks] = collections.deque()
        self.queued = 0
        self.dropped: dict[str, int] = collections.defaultdict(int)
        self.full_since: float | None = None
        self.event = asyncio.Event()
        # The task sending this viewer's stream: cancelled when the viewer stalls, for it
        # is then blocked writing to a client that does not read.
        self.task: asyncio.Task[object] | None = None
        self.cut = False

    def put(self, blocks: Blocks) -> None:
        if self.cut:
            return
        if self.queued + len(blocks.data) > self.limit:
            self.dropped[blocks.machine] += blocks.count
            if self.full_since is None:
                self.full_since = time.monotonic()
            elif time.monotonic() - self.full_since > STALLED:
                self._cut()
            return
        self.queue.append(blocks)
        self.queued += len(blocks.data)
        self.event.set()

    def take(self) -> list[Blocks]:
        taken = list(self.queue)
        self.queue.clear()
        self.queued = 0
        self.full_since = None
        self.event.clear()
        return taken

    def _cut(self) -> None:
        self.cut = True
        self.channel.viewers.discard(self)
        self.queue.clear()  # its memory goes now, not when the connection does
        self.queued = 0
        if self.task is not None:
            self.task.cancel()


@dataclass
class Channel:
    """One capture's viewers in this process, and its machines' interfaces."""

    pcap_id: str
    viewers: set[Viewer] = field(default_factory=set)
    interfaces: list[bytes] = field(default_factory=list)  # IDBs, by interface number
    numbers: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)  # each machine's next ordinal
    renewed: float = 0.0  # when this process last renewed its watch of the capture

    def publish(self, piece: Piece) -> None:
        expected = self.expected.get(piece.machine, piece.first)
        if piece.first < expected:
            return  # came late (or twice): its packets were counted lost, or were sent
        number = self.numbers.get(piece.machine)
        if number is None:
            number = self.numbers[piece.machine] = len(self.interfaces)
            description = f"edgepcap {piece.colo} {piece.machine}"
            self.interfaces.append(
                pcapng.interface_block(LINKTYPE_RAW, 0xFFFF, piece.machine, description, False)
            )
        self.expected[piece.machine] = piece.first + piece.count
        lost = piece.first - expected
        blocks = Blocks(piece.machine, number, piece.first, piece.count, _packets(number, piece))
        for viewer in list(self.viewers):
            if lost:  # lost before it reached this process
                viewer.dropped[piece.machine] += lost
            viewer.put(blocks)


@dataclass
class Hub:
    """This process's live channels, by capture."""

    channels: dict[str, Channel] = field(default_factory=dict)

    def add(self, pcap_id: str, limit: int = QUEUE_BYTES) -> Viewer:
        channel = self.channels.setdefault(pcap_id, Channel(pcap_id))
        viewer = Viewer(channel, limit)
        channel.viewers.add(viewer)
        return viewer

    def remove(self, viewer: Viewer) -> bool:
        """Forget `viewer`; True when the capture has no viewer left here."""
        channel = viewer.channel
        channel.viewers.discard(viewer)
        if channel.viewers:
            return False
        if self.channels.get(channel.pcap_id) is channel:
            del self.channels[channel.pcap_id]
        return True

    def watching(self, pcap_id: str) -> int:
        channel = self.channels.get(pcap_id)
        return len(channel.viewers) if channel else 0

    def publish(self, pcap_id: str, piece: Piece) -> None:
        channel = self.channels.get(pcap_id)
        if channel is not None:
            channel.publish(piece)


class Stream:
    """The pcapng a viewer reads: the section, the interfaces as their machines come (in
    the channel's numbering), the packets, and the losses."""

    def __init__(self, comment: str, channel: Channel) -> None:
        self.head = pcapng.section_header(comment)
        self.channel = channel
        self.written = 0  # interfaces written so far
        self.told: dict[str, int] = {}  # losses told so far, per machine

    def blocks(self, taken: list[Blocks], out: bytearray) -> None:
        for blocks in taken:
            self._interfaces(blocks.interface + 1, out)
            out += blocks.data

    def _interfaces(self, upto: int, out: bytearray) -> None:
        while self.written < upto:
            out += self.channel.interfaces[self.written]
            self.written += 1

    def losses(self, viewer: Viewer, out: bytearray, comment: str | None = None) -> None:
        """An ISB for every machine whose losses grew (all of them, with `comment`)."""
        now = time.time_ns()
        numbers = self.channel.numbers
        self._interfaces(max((numbers[m] + 1 for m in viewer.dropped), default=0), out)
        for machine, number in numbers.items():
            if number >= self.written:
                continue
            lost = viewer.dropped.get(machine, 0)
            if comment is not None or lost != self.told.get(machine, 0):
                self.told[machine] = lost
                out += pcapng.statistics_block(number, now, lost, nanosecond=False, comment=comment)


def _packets(number: int, piece: Piece) -> bytes:
    """The piece's records as Enhanced Packet Blocks of interface `number`, each with its
    direction (none past what the machine kept track of: not a guess)."""
    out = bytearray()
    data = memoryview(piece.records)
    direction = protocol.directions(piece.runs, piece.known, piece.first)
    for start, end, ts, orig in walk_records(data):
        pcapng.write_packet(out, number, ts, data[start:end], orig, direction(), False)
    return bytes(out)


async def follow(
    viewer: Viewer,
    stream: Stream,
    running: Callable[[], Awaitable[tuple[bool, str]]],
) -> AsyncIterator[bytes]:
    """The viewer's pcapng until the capture ends (`running()` says whether it still
    does, and its status), or the client goes away (or is cut off: `Viewer`)."""
    viewer.task = asyncio.current_task()
    yield stream.head
    next_check = 0.0
    ended_at: float | None = None
    status = ""
    unreachable_since: float | None = None
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(viewer.event.wait(), FLUSH_EVERY)
        out = bytearray()
        stream.blocks(viewer.take(), out)
        stream.losses(viewer, out)
        if out:
            yield bytes(out)
        now = time.monotonic()
        if ended_at is None and now >= next_check:
            next_check = now + CHECK_EVERY
            try:
                active, status = await running()
                unreachable_since = None
            except Exception as exc:  # the database, for a moment: the copies still come
                if unreachable_since is None:
                    log.warning("live stream of %s: %s", viewer.channel.pcap_id, exc)
                    unreachable_since = now
                active = now - unreachable_since < OUTAGE
                status = "unknown: the control plane's database is unreachable"
            if not active:
                ended_at = now
        if ended_at is not None and now - ended_at >= END_GRACE and not viewer.queue:
            out = bytearray()
            stream.losses(viewer, out, f"capture ended: {status}")
            yield bytes(out)
            return
