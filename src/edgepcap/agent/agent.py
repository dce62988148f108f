"""The agent process: registers, heartbeats, long-polls jobs and runs a worker per capture."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edgepcap.agent.control_plane import ControlPlane, ControlPlaneError, ReRegister
from edgepcap.agent.kernel import nft
from edgepcap.agent.sampler import Sampler
from edgepcap.agent.worker import NFLOG_RCVBUF, CaptureWorker
from edgepcap.destinations import StoreSettings
from edgepcap.formats import protocol
from edgepcap.formats.protocol import Job

log = logging.getLogger("edgepcap.agent")
GROUPS = range(1000, 2000)  # NFLOG groups for full captures; one per running capture


class Agent:
    """One edge machine's agent: the loop that connects the machine to the control plane.

    `run` removes tables a previous run left, registers (again whenever the control plane
    says the machine's boot is unknown), starts the sampler and a heartbeat thread, then
    long-polls for jobs: each new full capture gets a `CaptureWorker` on its own NFLOG
    group, each stop is passed to its worker. `shutdown` stops the workers, which remove
    their tables and report their end, and the sampler.
    """

    def __init__(
        self,
        cp: ControlPlane,
        ns: str | None,
        stores: StoreSettings,
        sample_rate: int = 100,
        nflog_rcvbuf: int = NFLOG_RCVBUF,
    ) -> None:
        self.cp = cp
        self.nflog_rcvbuf = nflog_rcvbuf
        self.sampler = Sampler(cp, ns, sample_rate) if sample_rate else None
        self.ns = ns
        self.stores = stores
        self.stopping = threading.Event()
        self.workers: dict[str, CaptureWorker] = {}
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.heartbeat_interval = 1.0

    def run(self) -> None:
        removed = nft.remove_stale(self.ns)
        if removed:
            log.warning("removed stale tables left by a previous run: %s", ", ".join(removed))
        self._register()
        if self.sampler is not None:
            self.sampler.start()
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        try:
            self._poll_jobs()
        finally:
            self.shutdown()

    def _register(self) -> None:
        while not self.stopping.is_set():
            try:
                info = self.cp.register()
                self.heartbeat_interval = float(info.get("heartbeat_interval", 1.0))
                if self.sampler is not None:
                    self.sampler.ship_to(info.get("samples_to"))
                log.info("registered %s in %s", self.cp.machine, self.cp.colo)
                return
            except Exception as exc:
                log.warning("registration failed (%s); retrying", exc)
                self.stopping.wait(1.0)

    def _heartbeats(self) -> None:
        while not self.stopping.wait(self.heartbeat_interval):
            try:
                self.cp.heartbeat(self.sampler.snapshot() if self.sampler else None)
            except ReRegister:
                self._register()
            except ControlPlaneError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    def _poll_jobs(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                running = [i for i, w in self.workers.items() if not w.stop_event.is_set()]
            asked = time.monotonic()
            try:
                answer = self.cp.jobs(wait=20, running=running)
            except ReRegister:
                self._register()
                continue
            except ControlPlaneError as exc:
                log.warning("job poll failed: %s", exc)
                self.stopping.wait(1.0)
                continue
            except Exception as exc:
                log.warning("job poll failed: %s", exc)
                self.stopping.wait(1.0)
                continue
            for stop in answer["stop"]:
                with self.lock:
                    worker = self.workers.get(str(stop.get("id")))
                if worker is not None:
                    worker.request_stop(str(stop.get("reason") or "stop"))
            for raw in answer["jobs"]:
                self._start(raw)
            if not answer["jobs"] and not answer["stop"] and time.monotonic() - asked < 1:
                # Nothing, at once: that api process is stopping. Ask again in a moment,
                # not in a tight loop until it stops listening.
                self.stopping.wait(0.5)

    def _start(self, raw: dict[str, Any]) -> None:
        pcap_id = str(raw.get("id", ""))
        with self.lock:
            if pcap_id in self.seen:
                return
            self.seen.add(pcap_id)
        try:
            job = Job.parse(raw, self.cp.machine)
        except Exception as exc:
            log.error("refusing job %s: %s", pcap_id, exc)
            self._refuse(pcap_id, f"agent refused the job: {exc}")
            return
        with self.lock:
            used = {w.group for w in self.workers.values()}
            group = next((g for g in GROUPS if g not in used), None)
            if group is None:
                self._refuse(pcap_id, "no free NFLOG group on this machine")
                return
            worker = CaptureWorker(
                job, self.cp, group, self.ns, self.stores, self._finished, self.nflog_rcvbuf
            )
            self.workers[job.id] = worker
        log.info("starting capture %s on NFLOG group %d", job.id, group)
        worker.start()

    def _refuse(self, pcap_id: str, message: str) -> None:
        if len(pcap_id) == 32:
            try:
                refusal: protocol.ReportWire = {
                    "state": protocol.FAILED,
                    "error": message,
                    "end_reason": protocol.ERROR,
                }
                self.cp.report(pcap_id, refusal)
            except Exception as exc:
                log.warning("could not report refusal of %s: %s", pcap_id, exc)

    def _finished(self, worker: CaptureWorker) -> None:
        with self.lock:
            self.workers.pop(worker.job.id, None)
        log.info("capture %s finished (%d packets)", worker.job.id, worker.written_packets)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.request_stop("agent_shutdown")
        if self.sampler is not None and self.sampler.is_alive():
            self.sampler.stop()
            self.sampler.join(10)
        deadline = time.monotonic() + 30
        for w in workers:
            w.join(max(0.1, deadline - time.monotonic()))
        nft.remove_stale(self.ns)


def bound_malloc() -> None:
    """Keep the heap of a long-running agent small: glibc otherwise gives each thread
    (ours and the uploader's Rust threads) its own arena and keeps freed upload parts."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_arena_max, 2)
    # Fixed thresholds: big buffers (record batches, 5 MiB parts) are mapped and returned
    # to the kernel when freed, instead of the dynamic threshold moving them to the heap.
    mallopt(m_mmap_threshold, 256 * 1024)
    mallopt(m_trim_threshold, 1024 * 1024)


def run_agent(
    api: str,
    key: str,
    colo: str,
    machine: str,
    ns: str | None,
    stores: StoreSettings,
    sample_rate: int = 100,
    nflog_rcvbuf: int = NFLOG_RCVBUF,
    ca_file: Path | None = None,
) -> None:
    bound_malloc()
    cp = ControlPlane(api, key, colo, machine, ca_file)
    agent = Agent(cp, ns, stores, sample_rate, nflog_rcvbuf)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping captures and exiting", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    poller = threading.Thread(target=agent.run, name="agent", daemon=True)
    poller.start()
    while poller.is_alive() and not agent.stopping.is_set():
        poller.join(0.5)
    agent.shutdown()
    cp.close()
