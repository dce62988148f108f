"""A limited full capture's budget on one machine: the packets and bytes leased from the
control plane, the packets waiting for a lease, and what each progress report asks for
or gives back."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any

from edgepcap.formats import pcapfile as pcap
from edgepcap.formats.pcapng import OUTBOUND
from edgepcap.formats.protocol import Answer, Outbound, ReportWire

PENDING_MAX_PACKETS = 200_000
PENDING_MAX_BYTES = 64 << 20


@dataclass
class Budget:
    """Leased packets and bytes this machine may still write (None: no such limit)."""

    limited_packets: bool
    limited_bytes: bool
    packets: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def try_take(self, size: int) -> bool:
        with self.lock:
            if self.limited_packets and self.packets < 1:
                return False
            if self.limited_bytes and self.bytes < size:
                return False
            if self.limited_packets:
                self.packets -= 1
            if self.limited_bytes:
                self.bytes -= size
            return True

    def add(self, packets: int, bytes_: int) -> None:
        with self.lock:
            self.packets += packets
            self.bytes += bytes_

    @property
    def unlimited(self) -> bool:
        return not (self.limited_packets or self.limited_bytes)


class Leases:
    """The budget, and the packets matched but not yet leased (written once a lease covers
    them, dropped when too many wait); `dropped` counts those."""

    def __init__(self, packet_limit: int | None, byte_limit: int | None) -> None:
        self.budget = Budget(packet_limit is not None, byte_limit is not None)
        self.pending: collections.deque[pcap.Packet] = collections.deque()
        self.pending_bytes = 0
        self.dropped = 0
        self.release_now = False
        self._rate: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=8)

    def admit(
        self, packets: list[Any], batch: bytearray, outbound: Outbound, first: int
    ) -> tuple[int, int]:
        """Queue `packets`; append the records a lease covers to `batch` (the first is
        packet `first` of the object; those the machine sent go to `outbound`); returns
        the packets and bytes written."""
        pending = self.pending
        for p in packets:
            pending.append(p)
            self.pending_bytes += len(p.data)
        written = written_bytes = 0
        while pending and self.budget.try_take(len(pending[0].data)):
            p = pending.popleft()
            self.pending_bytes -= len(p.data)
            batch += pcap.record(p)
            if p.direction == OUTBOUND:
                outbound.add(first + written)
            written += 1
            written_bytes += len(p.data)
        while len(pending) > PENDING_MAX_PACKETS or self.pending_bytes > PENDING_MAX_BYTES:
            self.pending_bytes -= len(pending.popleft().data)
            self.dropped += 1
        return written, written_bytes

    def discard(self) -> int:
        """Forget the packets still waiting for a lease; returns how many there were."""
        count = len(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return count

    def ask(self, report: ReportWire, now: float, min_span: float) -> None:
        """Add to a running progress report what it gives back and asks for."""
        self._rate.append((now, report["packets"], report["bytes"]))
        t0, p0, b0 = self._rate[0]
        span = max(now - t0, min_span)
        # Ask for about a second of traffic at the recent rate, at least a little.
        rate_p = (report["packets"] - p0) / span
        rate_b = (report["bytes"] - b0) / span
        with self.budget.lock:
            have_p, have_b = self.budget.packets, self.budget.bytes
            if self.release_now:
                report["release_packets"], report["release_bytes"] = have_p, have_b
                self.budget.packets = self.budget.bytes = 0
                have_p = have_b = 0
                self.release_now = False
        head = self.pending[0] if self.pending else None
        if head is not None:
            report["need_packets"] = 1 if self.budget.limited_packets else 0
            report["need_bytes"] = len(head.data) if self.budget.limited_bytes else 0
            want_p = max(64, int(rate_p * 1.0), len(self.pending))
            want_b = max(64 << 10, int(rate_b * 1.0), self.pending_bytes)
            if self.budget.limited_packets:
                report["want_packets"] = max(0, want_p - have_p)
            if self.budget.limited_bytes:
                report["want_bytes"] = max(0, want_b - have_b)

    def take(self, answer: Answer) -> None:
        """The grants and release of the control plane's answer to a progress report."""
        self.budget.add(answer.grant_packets, answer.grant_bytes)
        if answer.release:
            self.release_now = True
