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

from edgepcap.agent.control_plane import ControlPlane
from edgepcap.formats import protocol

log = logging.getLogger("edgepcap.agent")
QUEUE_BYTES = 8 << 20  # records waiting to be sent; more are dropped
SEND_EVERY = 0.05  # seconds at most a lone read's records wait for the next read's


class LiveSender(threading.Thread):
    """Sends the records `offer`ed for capture `pcap_id`, oldest first, in batches of at
    most `protocol.LIVE_MAX_BYTES`, until `close`."""

    def __init__(self, cp: ControlPlane, pcap_id: str) -> None:
        super().__init__(name=f"live-{pcap_id[:8]}", daemon=True)
        self.cp = cp
        self.pcap_id = pcap_id
        self.queue: collections.deque[tuple[bytes, int, int, list[list[int]]]] = collections.deque()
        self.queued = 0
        self.dropped = 0  # packets offered that never left
        self.failures = 0
        self._cond = threading.Condition()
        self._closing = False

    def offer(self, records: bytes, first: int, count: int, outbound: protocol.Outbound) -> None:
        """Queue copies of packets [first, first + count) of the object; never blocks."""
        runs = protocol.live_runs(outbound, first, count)
        with self._cond:
            if self._closing or self.queued + len(records) > QUEUE_BYTES:
                self.dropped += count
                return
            self.queue.append((records, first, count, runs))
            self.queued += len(records)
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

    def _take(self) -> tuple[bytes, int, int, list[list[int]]]:
        """The queued batches that are contiguous and fit one send, joined."""
        parts: list[bytes] = []
        size = count = 0
        first = -1
        runs: list[list[int]] = []
        with self._cond:
            while self.queue:
                records, at, n, batch_runs = self.queue[0]
                if parts and (at != first + count or size + len(records) > protocol.LIVE_MAX_BYTES):
                    break
                self.queue.popleft()
                self.queued -= len(records)
                if not parts:
                    first = at
                parts.append(records)
                size += len(records)
                count += n
                runs += batch_runs
        return b"".join(parts), first, count, runs

    def _send(self, batch: tuple[bytes, int, int, list[list[int]]]) -> None:
        body, first, count, runs = batch
        try:
            self.cp.live(self.pcap_id, body, first, protocol.runs_text(runs))
        except Exception as exc:
            self.dropped += count
            if self.failures % 50 == 0:
                log.warning("live copy of %s not sent: %s", self.pcap_id, exc)
            self.failures += 1
