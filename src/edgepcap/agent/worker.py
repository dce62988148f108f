"""One machine's part of one full capture: nft table → NFLOG → PCAP → bucket, with reporting.
The lease arithmetic is in `budget`, the writer thread in `upload`."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from edgepcap.agent.budget import Leases
from edgepcap.agent.control_plane import ControlPlane
from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.kernel.nflog import NflogSocket
from edgepcap.agent.kernel.nflog_receive import RECV_BYTES
from edgepcap.agent.live import LiveSender
from edgepcap.agent.upload import Upload, probe
from edgepcap.destinations import StoreSettings, parse
from edgepcap.direct_io import Chunk
from edgepcap.formats import pcapfile as pcap
from edgepcap.formats import protocol
from edgepcap.formats.protocol import Answer, Job, ReportWire

log = logging.getLogger("edgepcap.agent")
REPORT_EVERY = 0.2
FINAL_REPORT_PATIENCE = 600.0  # seconds of retrying the end-of-capture report
# Records handed to the writer at a time: each chunk is one big direct write.
FLUSH_BYTES = 4 << 20
# A chunk holds FLUSH_BYTES and the records of one more receive (below RECV_BYTES and
# two batches of the kernel's); idle flushes smaller than SMALL_FLUSH go as copies, so
# that a quiet capture does not take a chunk for every few packets.
CHUNK_BYTES = FLUSH_BYTES + RECV_BYTES + (512 << 10)
SMALL_FLUSH = 64 << 10
SPARE_CHUNKS = 2  # emptied chunks kept for reuse: their pages are not new to the kernel
# The NFLOG socket's receive buffer: deep enough that a reader busy for a moment drops
# nothing at the lab's top rates (BENCHMARKS.md, full capture at top rate).
NFLOG_RCVBUF = 256 << 20
# Records written lately, kept (by reference) for a live viewer who comes: the control
# plane tells the machine of a viewer with its next report answer, a moment later.
RECENT_BYTES = 8 << 20


class CaptureWorker(threading.Thread):
    """One machine's part of one full capture, on a thread of its own: installs the
    capture's nftables table, reads the matched packets from NFLOG until the time limit or
    a stop, writes them as PCAP records (within the leased budget, when the capture is
    limited) to an `Upload`, removes the table, and reports progress (a reporter thread,
    every REPORT_EVERY s) and the end (retried until the control plane listens)."""

    def __init__(
        self,
        job: Job,
        cp: ControlPlane,
        group: int,
        ns: str | None,
        stores: StoreSettings,
        on_exit: Any,
        nflog_rcvbuf: int = NFLOG_RCVBUF,
    ) -> None:
        super().__init__(name=f"capture-{job.id[:8]}", daemon=True)
        self.job = job
        self.cp = cp
        self.group = group
        self.ns = ns
        self.stores = stores
        self.on_exit = on_exit
        self.nflog_rcvbuf = nflog_rcvbuf
        self.table = f"{nft.TABLE_PREFIX}{job.id}"
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self.leases = Leases(job.packet_limit, job.byte_limit)
        self.written_packets = 0
        self.written_bytes = 0
        self.over_limit = 0  # matched after the limit was reached: not written, not lost
        self.outbound = protocol.Outbound()  # the object's packets the machine sent itself
        # Copies for live viewers, while there are any: the reporter thread says since
        # when (`live_since`, from the control plane), the reading thread starts and stops
        # the sender, and seeds it from the records it wrote lately (`recent`).
        self.live_since: int | None = None
        self.live: LiveSender | None = None
        self.recent: collections.deque[tuple[int, int, memoryview, Chunk | None]] = (
            collections.deque()
        )
        self.recent_bytes = 0
        self.position = 0  # bytes of the object handed to the writer so far
        self.spare: list[Chunk] = []
        self.batch_first = 0  # ordinal of the first record in the batch being filled
        self.sock: NflogSocket | None = None
        self.upload: Upload | None = None
        self.table_installed = False
        self._lock = threading.Lock()

    # -- the capture -------------------------------------------------------------

    def run(self) -> None:
        error: str | None = None
        kernel = (0, 0)
        reporter = threading.Thread(
            target=self._report_loop, name=f"report-{self.job.id[:8]}", daemon=True
        )
        try:
            dest = parse(self.job.destination_conf, self.stores)
            probe(dest, self.job.object_name)
            bucket = dest.bucket_identity()
            self.sock = netns.run_in(self.ns, NflogSocket, self.group, rcvbuf=self.nflog_rcvbuf)
            self.upload = Upload(
                dest, bucket, self.job.object_name, f"write-{self.job.id[:8]}", self.stop_event
            )
            header = pcap.global_header(pcap.LINKTYPE_RAW, 0xFFFF)
            self.upload.put(header)
            self.position = len(header)
            self.table_installed = True
            nft.install(
                nft.CaptureRule(
                    table=self.table,
                    prefixes=self.job.prefixes,
                    filter=self.job.filter,
                    group=self.group,
                ),
                self.ns,
            )
            reporter.start()
            self._read_loop()
            # No new packets once the table is gone; what the kernel queued before that
            # is part of the capture.
            kernel = self._remove_table()
            self._drain()
        except Exception as exc:
            error = _describe(exc)
            log.warning("capture %s failed: %s", self.job.id, error)
            self.stop_event.set()
        finally:
            if self.table_installed:
                kernel = self._remove_table()
            if self.sock is not None:
                self.sock.close()
            if error is None and self.stop_reason == "agent_shutdown":
                error = "the agent was shut down during the capture"
            # A failed part leaves no file: the upload is dropped, never completed.
            if self.upload is not None:
                self.upload.finish(error is None)
                if self.upload.error is not None and error is None:
                    error = str(self.upload.error)
            self.stop_event.set()
            if reporter.is_alive():
                reporter.join(5)
            if self.live is not None:
                self.live.close(2.0)  # the last packets reach the viewers before the end
            self._final_report(error, kernel)
            self.on_exit(self)

    def _read_loop(self) -> None:
        assert self.sock is not None and self.upload is not None
        deadline = time.monotonic() + self.job.time_limit
        batch = self._chunk()
        while not self.stop_event.is_set():
            if time.monotonic() >= deadline:
                self.stop_reason = self.stop_reason or protocol.TIME_LIMIT
                break
            if self.upload.error is not None:
                raise self.upload.error
            packets = self._read(0.05, batch)
            if batch.size >= FLUSH_BYTES or (batch.size and not packets):
                batch = self._put(batch)
        if batch.size:
            self._put(batch)

    def _drain(self) -> None:
        assert self.sock is not None and self.upload is not None
        batch = self._chunk()
        while self._read(0, batch):
            if batch.size >= FLUSH_BYTES:
                batch = self._put(batch)
        if batch.size:
            self._put(batch)
        if self.stop_reason in protocol.LIMIT_REASONS:
            self.over_limit += self.leases.discard()
        else:
            # Matched, but the capture ended before a lease for them arrived.
            self.leases.dropped += self.leases.discard()

    def _chunk(self) -> Chunk:
        """An empty chunk for the records from the object's current position on."""
        chunk = self.spare.pop() if self.spare else Chunk(CHUNK_BYTES)
        chunk.reset(self.position)
        return chunk

    def _put(self, batch: Chunk) -> Chunk:
        """Hand a batch's records to the writer and keep them (no copy) a while, for a
        live viewer who comes now; returns the chunk to read on into.

        A full chunk goes itself, a small one (an idle moment) as a copy, its chunk
        reused. Chunks come back for reuse once the writer is done with them and they
        are no longer among the recent ones."""
        assert self.upload is not None
        size = batch.size
        records: memoryview | bytes = batch.data()
        held: Chunk | None = batch
        if size < SMALL_FLUSH:
            records, held = bytes(records), None
        self.upload.put(held if held is not None else records)
        self.recent.append(
            (self.batch_first, self.written_packets - self.batch_first, memoryview(records), held)
        )
        self.recent_bytes += len(held.view) if held is not None else size
        while self.recent_bytes > RECENT_BYTES:
            _, _, old, chunk = self.recent.popleft()
            self.recent_bytes -= len(chunk.view) if chunk is not None else len(old)
            if chunk is not None and chunk.written and len(self.spare) < SPARE_CHUNKS:
                self.spare.append(chunk)
        self.batch_first = self.written_packets
        self.position += size
        if held is None:
            batch.reset(self.position)
            return batch
        return self._chunk()

    def _read(self, timeout: float, batch: Chunk) -> int:
        """`_read_once`, and a copy of what it wrote for the live viewers if there are any."""
        since = self.live_since
        if since is not None and self.live is None:
            self._start_live(since, batch)
        elif since is None and self.live is not None and not self.stop_event.is_set():
            live, self.live = self.live, None
            live.close(0)
        before, first = batch.end, self.written_packets
        got = self._read_once(timeout, batch)
        live = self.live
        if live is not None and batch.end > before:
            count = self.written_packets - first
            live.offer(bytes(batch.view[before : batch.end]), first, count, self.outbound)
        return got

    def _start_live(self, since: int, batch: Chunk) -> None:
        """Start sending copies, from the first record written at or after `since`."""
        self.live = LiveSender(self.cp, self.job.id)
        pending = [(f, c, records) for f, c, records, _ in self.recent]
        pending.append((self.batch_first, self.written_packets - self.batch_first, batch.data()))
        started = False
        for first, count, chunk in pending:
            # From the first record stamped since then: the ones after it go whole (the
            # machine's own packets are stamped when read, so stamps may step back).
            skipped, offset = (0, 0) if started else pcap.records_before(chunk, since)
            if skipped < count:
                started = True
                self.live.offer(
                    bytes(chunk[offset:]), first + skipped, count - skipped, self.outbound
                )
        self.live.start()

    def _read_once(self, timeout: float, batch: Chunk) -> int:
        """One receive: append what may be written as PCAP records; returns packets received."""
        assert self.sock is not None
        if self.leases.budget.unlimited:
            got, size = self.sock.receive_records(
                timeout, batch, self.outbound, self.written_packets
            )
            with self._lock:
                self.written_packets += got
                self.written_bytes += size
            return got
        packets = self.sock.receive(timeout)
        written, written_bytes = self.leases.admit(
            packets, batch, self.outbound, self.written_packets
        )
        with self._lock:
            self.written_packets += written
            self.written_bytes += written_bytes
        return len(packets)

    def _remove_table(self) -> tuple[int, int]:
        self.table_installed = False
        kernel = (0, 0)
        try:
            kernel = nft.counters(self.table, self.ns)
        except nft.NftError as exc:
            if "No such file or directory" not in str(exc):  # else: it was never installed
                log.warning("reading counters of %s: %s", self.table, exc)
        except Exception:
            log.exception("reading counters of %s", self.table)
        for attempt in range(3):
            try:
                nft.remove(self.table, self.ns)
                break
            except Exception:
                log.exception("removing %s (attempt %d)", self.table, attempt + 1)
                time.sleep(0.2)
        return kernel

    # -- reporting -----------------------------------------------------------------

    def _snapshot(self, state: str) -> ReportWire:
        sock = self.sock
        with self._lock:
            report: ReportWire = {
                "state": state,
                "packets": self.written_packets,
                "bytes": self.written_bytes,
                "dropped": (sock.dropped if sock else 0) + self.leases.dropped,
                "overruns": sock.overruns if sock else 0,
            }
        if state == protocol.RUNNING and not self.leases.budget.unlimited:
            self.leases.ask(report, time.monotonic(), REPORT_EVERY)
        return report

    def _report_loop(self) -> None:
        failures = 0
        # The first report goes at once: it is what makes the capture `running`.
        while not self.stop_event.is_set():
            try:
                answer = self.cp.report(self.job.id, self._snapshot(protocol.RUNNING))
            except Exception as exc:
                # The control plane may be away for a while; the capture goes on.
                if failures % 50 == 0:
                    log.warning("progress report for %s failed: %s", self.job.id, exc)
                failures += 1
            else:
                if failures:
                    log.info("progress reports for %s reach the control plane again", self.job.id)
                    failures = 0
                self._take(Answer.from_wire(answer))
            self.stop_event.wait(REPORT_EVERY)

    def _take(self, answer: Answer) -> None:
        """Act on the control plane's answer to a progress report."""
        self.leases.take(answer)
        if not answer.stop:  # once stopping, the viewers get the last packets too
            self.live_since = answer.live_since
        if answer.stop:
            self.stop_reason = self.stop_reason or answer.reason or protocol.STOP
            self.stop_event.set()

    def _final_report(self, error: str | None, kernel: tuple[int, int]) -> None:
        report = self._snapshot(protocol.FAILED if error else protocol.DONE)
        report["kernel_matched"] = kernel[0]
        # The rule's counter is the truth: losses at the very end leave no gap in the
        # NFLOG sequence numbers to see.
        unaccounted = kernel[0] - report["packets"] - self.over_limit
        report["dropped"] = max(report["dropped"], unaccounted)
        report["error"] = error
        report["end_reason"] = protocol.ERROR if error else self.stop_reason
        report["object_name"] = None if error else self.job.object_name
        report["outbound"] = self.outbound.runs
        known = self.outbound.known
        report["directions_known"] = known if known is not None else report["packets"]
        # The file is complete: keep telling the control plane until it listens again (it
        # may be restarting, or its database may be), or it would count this part lost.
        deadline = time.monotonic() + FINAL_REPORT_PATIENCE
        attempt = 0
        while True:
            try:
                self.cp.report(self.job.id, report)
                return
            except Exception as exc:
                attempt += 1
                if time.monotonic() >= deadline:
                    log.error("giving up the final report of %s: %s", self.job.id, exc)
                    return
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("final report for %s failed (%s), retrying", self.job.id, exc)
                time.sleep(min(2.0, 0.2 * attempt))

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.stop_event.set()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:500]
