"""The continuous sampler: 1 in N packets of every account's traffic, 160 bytes, to the store.

One long-lived table samples in the kernel (`numgen random mod N`) and logs to its own NFLOG
group with snaplen 160; this thread attributes each sample to its account(s) and ships
batches at least every second, to the control plane or, when registration names one,
straight into the sample store (`sample_sink`). When they cannot be taken it keeps a
bounded backlog and retries; whatever it has to give up is counted, never silent.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

import numpy as np

from edgepcap.agent.control_plane import ControlPlane
from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.kernel.nflog import NflogSocket
from edgepcap.agent.sample_sink import ClickHouseSink
from edgepcap.formats import protocol
from edgepcap.formats import samples as records

log = logging.getLogger("edgepcap.agent")
GROUP = 100
TABLE = f"{nft.TABLE_PREFIX}sampler"
SHIP_EVERY = 0.5
PREFIX_EVERY = 2.0
BACKLOG_MAX = 500_000  # records (~110 MiB at most) kept while the store is unreachable


class Sampler(threading.Thread):
    """The sampler's thread: installs its table, reads sampled packets from NFLOG,
    attributes each to the account(s) whose prefixes it touches (refreshed from the
    control plane), and ships them in batches; `snapshot` gives its counters to the
    heartbeat. Packets of no account are counted and dropped here."""

    def __init__(self, cp: ControlPlane, ns: str | None, rate: int) -> None:
        super().__init__(name="sampler", daemon=True)
        self.cp = cp
        self.ns = ns
        self.rate = rate
        self.stop_event = threading.Event()
        self.version: str | None = None
        self.accounts: dict[str, list[Any]] = {}
        self.backlog: list[np.ndarray] = []
        self.stats = {
            "sampled": 0,
            "attributed": 0,
            "shipped": 0,
            "kernel_dropped": 0,
            "overruns": 0,
            "backlog_dropped": 0,
            "backlog": 0,
            "ship_errors": 0,
        }
        self.lock = threading.Lock()
        self.sock: NflogSocket | None = None
        self.sink: ClickHouseSink | None = None

    def ship_to(self, sink: protocol.SampleSink | None) -> None:
        """Where batches go from now on (registration's answer): None, the control plane."""
        if self.sink is not None and self.sink.sink == sink:
            return
        old, self.sink = self.sink, ClickHouseSink(sink) if sink else None
        if old is not None:
            old.close()

    def run(self) -> None:
        try:
            self.sock = netns.run_in(self.ns, NflogSocket, GROUP, 160)
            self._loop()
        except Exception:
            log.exception("sampler stopped")
        finally:
            try:
                nft.remove(TABLE, self.ns)
            except Exception:
                log.exception("removing %s", TABLE)
            if self.sock is not None:
                self.sock.close()

    def _loop(self) -> None:
        assert self.sock is not None
        snaps: list[bytes] = []
        stamps: list[int] = []
        lengths: list[int] = []
        next_ship = time.monotonic() + SHIP_EVERY
        next_prefixes = 0.0
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_prefixes:
                self._refresh_prefixes()
                next_prefixes = now + PREFIX_EVERY
            for p in self.sock.receive(0.1):
                snaps.append(p.data)
                stamps.append(p.ts_ns)
                lengths.append(p.orig_len)
            if time.monotonic() >= next_ship or len(snaps) >= 50_000:
                self._batch(snaps, stamps, lengths)
                snaps, stamps, lengths = [], [], []
                self._ship()
                next_ship = time.monotonic() + SHIP_EVERY
        self._batch(snaps, stamps, lengths)
        self._ship()

    def _refresh_prefixes(self) -> None:
        try:
            answer = self.cp.prefixes()
        except Exception as exc:
            log.warning("sampler: cannot fetch prefixes: %s", exc)
            return
        if answer["version"] == self.version:
            return
        accounts = {
            a: [ipaddress.ip_network(c) for c in cidrs] for a, cidrs in answer["accounts"].items()
        }
        every = [n for nets in accounts.values() for n in nets]
        try:
            if every:
                rule = nft.CaptureRule(
                    table=TABLE, prefixes=every, group=GROUP, snaplen=160, sample_mod=self.rate
                )
                nft.replace(rule, self.ns)
            else:
                nft.remove(TABLE, self.ns)
        except nft.NftError as exc:
            # The old table (if any) stays; the version is not taken, so the next poll
            # tries again rather than the thread dying with sampling off for good.
            log.warning("sampler: cannot install the prefixes: %s", exc)
            return
        self.accounts = accounts
        self.version = answer["version"]
        log.info("sampler: 1 in %d packets of %d prefixes", self.rate, len(every))

    def _batch(self, snaps: list[bytes], stamps: list[int], lengths: list[int]) -> None:
        if not snaps:
            return
        rows = records.parse(snaps, stamps, lengths)
        wire = records.attribute(rows, self.accounts)
        with self.lock:
            self.stats["sampled"] += len(snaps)
            self.stats["attributed"] += len(wire)
            if len(wire):
                self.backlog.append(wire)
            total = sum(len(b) for b in self.backlog)
            while total > BACKLOG_MAX and self.backlog:
                dropped = self.backlog.pop(0)
                total -= len(dropped)
                self.stats["backlog_dropped"] += len(dropped)
            self.stats["backlog"] = total

    def _ship(self) -> None:
        with self.lock:
            pending = list(self.backlog)
        if not pending:
            return
        body = np.concatenate(pending).tobytes()
        try:
            if (sink := self.sink) is not None:
                sink.insert(body)
            else:
                self.cp.samples(body)
        except Exception as exc:
            with self.lock:
                self.stats["ship_errors"] += 1
            log.warning(
                "sampler: shipping %d samples failed (%s); keeping them",
                len(body) // records.WIRE.itemsize,
                exc,
            )
            return
        with self.lock:
            shipped = sum(len(b) for b in pending)
            del self.backlog[: len(pending)]
            self.stats["shipped"] += shipped
            self.stats["backlog"] = sum(len(b) for b in self.backlog)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            out = dict(self.stats)
        if self.sock is not None:
            out["kernel_dropped"] = self.sock.dropped
            out["overruns"] = self.sock.overruns
        return out

    def stop(self) -> None:
        self.stop_event.set()
