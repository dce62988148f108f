"""The kernel floor of a capture: the capture's rule read by a reader that only receives
NFLOG batches and discards them, with the agent's socket settings. What forwarding with
a capture costs whatever the reader does (BENCHMARKS.md, forwarding)."""

from __future__ import annotations

import threading

from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.kernel.nflog import NflogSocket
from edgepcap.agent.worker import NFLOG_RCVBUF


class Discard:
    """Binds `group` in `ns` and receives until `close`; counts what it received."""

    def __init__(self, ns: str, group: int) -> None:
        self.sock = netns.run_in(ns, NflogSocket, group, rcvbuf=NFLOG_RCVBUF)
        self.stop = threading.Event()
        self.bytes = 0
        self.thread = threading.Thread(target=self._run, name="floor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = bytearray(1 << 20)
        sock = self.sock.sock
        sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                self.bytes += sock.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:
                continue  # ENOBUFS: dropped batches are the kernel's, not counted here

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def with_floor(ns: str, rule: nft.CaptureRule, send: object) -> float:
    """`send()` (returns seconds) with `rule` installed in `ns` and read by a Discard."""
    reader = Discard(ns, rule.group)
    try:
        nft.install(rule, ns)
        try:
            return send()  # type: ignore[operator]
        finally:
            nft.remove(rule.table, ns)
    finally:
        reader.close()
