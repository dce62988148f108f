"""Copies of a capture's records for live viewers, sent to the control plane on a thread
of their own.

The object in the bucket is the record: live copies never slow or change it. The worker
offers each read's records; they wait in a bounded queue, and when the control plane
cannot take them as fast as they come the newest are dropped whole and counted (the
viewers are told by the control plane, which sees the gap in the ordinals).
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass

from edgepcap.agent.control_plane import ControlPlane
from edgepcap.formats import protocol
from edgepcap.formats.pcapfile import RECORD_HEADER, walk_records

log = logging.getLogger("edgepcap.agent")
QUEUE_BYTES = 8 << 20  # records waiting to be sent; more are dropped
SEND_EVERY = 0.05  # seconds at most a lone read's records wait for the next read's
PIECE = protocol.LIVE_MAX_BYTES // 4  # records of one send at most


class LiveSender(threading.Thread):
    """Sends the records `offer`ed for capture `pcap_id`, oldest first, in batches of at
    most `PIECE` bytes of records, until `close`."""

    def __init__(self, cp: ControlPlane, pcap_id: str) -> None:
        super().__init__(name=f"live-{pcap_id[:8]}", daemon=True)
        self.cp = cp
        self.pcap_id = pcap_id
        self.queue: collections.deque[Offer] = collections.deque()
        self.queued = 0
        self.dropped = 0  # packets offered that never left
        self.failures = 0
        self._cond = threading.Condition()
        self._closing = False

    def offer(self, records: bytes, first: int, count: int, outbound: protocol.Outbound) -> None:
        """Queue copies of packets [first, first + count) of the object; never blocks."""
        for part, at, n in _pieces(records, first, count):
            runs = protocol.live_runs(outbound, at, n)
            with self._cond:
                if self._closing or self.queued + len(part) > QUEUE_BYTES:
                    self.dropped += n
                    continue
                self.queue.append(Offer(part, at, n, runs, outbound.known))
                self.queued += len(part)
                self._cond.notify()

    def close(self, timeout: float) -> None:
        """Send what is queued (for at most `timeout` s), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        while True:
            with self._cond:
                while not self.queue and not self._closing:
                    self._cond.wait()
                if not self.queue:
                    return
            # Until the next read's records come (offer wakes this wait), or SEND_EVERY:
            # under steady traffic a send carries two reads' records, and a lone packet
            # waits at most SEND_EVERY (BENCHMARKS.md, "Live stream latency").
            if not self._closing:
                with self._cond:
                    self._cond.wait(SEND_EVERY)
            self._send(self._take())

    def _take(self) -> Offer:
        """The queued offers that are contiguous and fit one send, joined."""
        parts: list[Offer] = []
        size = 0
        with self._cond:
            while self.queue:
                head = self.queue[0]
                if parts and (
                    head.first != parts[-1].first + parts[-1].count
                    or size + len(head.records) > PIECE
                ):
                    break
                self.queue.popleft()
                self.queued -= len(head.records)
                parts.append(head)
                size += len(head.records)
        return Offer(
            b"".join(p.records for p in parts),
            parts[0].first,
            sum(p.count for p in parts),
            [run for p in parts for run in p.runs],
            next((p.known for p in parts if p.known is not None), None),
        )

    def _send(self, offer: Offer) -> None:
        try:
            body = protocol.live_body(offer.records, offer.runs)
            self.cp.live(self.pcap_id, body, offer.first, offer.known)
        except Exception as exc:
            self.dropped += offer.count
            if self.failures % 50 == 0:
                log.warning("live copy of %s not sent: %s", self.pcap_id, exc)
            self.failures += 1


@dataclass(frozen=True)
class Offer:
    """Copies of packets [first, first + count): their records, which of them the machine
    sent itself, and from which packet on it no longer knows (None: it knows all)."""

    records: bytes
    first: int
    count: int
    runs: list[list[int]]
    known: int | None


def _pieces(records: bytes, first: int, count: int) -> list[tuple[bytes, int, int]]:
    """`records` cut at record boundaries into pieces of at most PIECE bytes (a lone
    record larger than that is one piece), with each piece's first ordinal and count."""
    if len(records) <= PIECE:
        return [(records, first, count)]
    pieces = []
    start = n = 0
    for data, end, _ts, _orig in walk_records(records):
        pos = data - RECORD_HEADER.size  # where this record begins
        if end - start > PIECE and n:
            pieces.append((records[start:pos], first, n))
            first, start, n = first + n, pos, 0
        n += 1
    pieces.append((records[start:], first, n))
    return pieces
