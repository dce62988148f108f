"""Capture-path figures: edgepcap's agent worker against tcpdump on the same nftables rule."""

from __future__ import annotations

import ipaddress
import mmap
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.topology import DST, Topology, pair
from edgepcap.agent.agent import bound_malloc
from edgepcap.agent.kernel import netns, nft
from edgepcap.agent.worker import CaptureWorker
from edgepcap.destinations import StoreSettings
from edgepcap.formats import protocol
from edgepcap.formats.filters import FilterV1
from edgepcap.formats.pcapfile import GLOBAL_HEADER, parse_global_header
from edgepcap.formats.protocol import Job

# Seconds tcpdump keeps reading after the generator ends: the kernel holds a last partial
# batch up to 1 s, on NFLOG (NFULNL_TIMEOUT_DEFAULT, which libpcap leaves) and on AF_PACKET
# (the ring block's timeout, libpcap's 1000 ms); and margin.
NFLOG_FLUSH_DEFAULT = 1.1
PREFIX = [ipaddress.ip_network(f"{DST}/32")]
FILTER = FilterV1(protocol=17, destination_port=5000)
MIXED_SHARE = 10  # forwarding's mixed traffic: 1 packet in 10 is the capture's


class LocalControlPlane:
    """What the worker reports to, kept in memory: the benchmark has no api in the loop."""

    machine = "bench01"

    def __init__(self) -> None:
        self.final: protocol.ReportWire = {}

    def report(self, _pcap_id: str, report: protocol.ReportWire) -> dict[str, Any]:
        if report["state"] != protocol.RUNNING:
            self.final = report
        return {}


def count_packets(path: Path) -> int:
    """The records of a pcap file, hopping from record header to record header.

    Hand-written: the pcap Reader copies every packet out, ~0.7 s per 100 000 whole
    packets here, which the quick run cannot afford after every capture; this reads only
    the 16-byte headers. A file that ends inside a record is an error, not a count.
    """
    with path.open("rb") as fh:
        _header, record = parse_global_header(fh.read(GLOBAL_HEADER.size), str(path))
        size = os.fstat(fh.fileno()).st_size
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            offset, count = GLOBAL_HEADER.size, 0
            while offset + record.size <= size:
                offset += record.size + record.unpack_from(m, offset)[2]
                count += 1
    if offset > size:
        raise ValueError(f"{path}: cut off inside record {count}")
    if offset < size:
        raise ValueError(f"{path}: cut off after record {count}, inside a record header")
    return count


def send_limit(count: int) -> float:
    """Seconds a run of `count` packets may take: the generator's slowest rate seen here
    (~150 k pps with a reader beside it) with margin, and never under a minute."""
    return max(60.0, count / 100_000)


def _wait_quiet(
    read: Any, quiet: float = 0.5, limit: float = 20.0, enough: int | None = None
) -> None:
    """Wait until `read()` reaches `enough`, or stops changing for `quiet` seconds."""
    deadline = time.monotonic() + limit
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline and (enough is None or last < enough):
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def settle() -> None:
    """Start each run from the same memory state: drop clean page cache, compact free memory.

    Measured on this VM: after one side wrote a 700 MB capture file, the next run's writes
    into the page cache took up to 7x as long (`copy_folio_from_iter_atomic`, perf), and
    the reader sharing that core dropped packets; which run followed which decided the
    figure. Done before every run of both sides, like dropping caches between I/O runs.
    """
    os.sync()  # dirty pages first, or dropping clean ones leaves them behind
    Path("/proc/sys/vm/drop_caches").write_text("1")
    Path("/proc/sys/vm/compact_memory").write_text("1")


def run_ours(topo: Topology, count: int, payload: int, rate: str | None = None) -> dict:
    # The agent's malloc settings, which `edgepcap agent` sets at start: with them big
    # record batches grow by mremap, not by copying (~1.1 against ~1.6 µs per 1400-byte
    # packet in the reader here). Process-wide, and harmless to the figures after this.
    bound_malloc()
    settle()
    root = Path(tempfile.mkdtemp(prefix="edgepcap-bench-"))
    job = Job(
        id="b" * 32,
        prefixes=PREFIX,
        filter=FILTER,
        time_limit=600,
        packet_limit=None,
        byte_limit=None,
        destination_conf=f"file://{root}/bench",
        object_name="bench01/x.pcap",
    )
    (root / "bench" / "bench01").mkdir(parents=True)
    cp = LocalControlPlane()
    done = threading.Event()
    worker = CaptureWorker(
        job,
        cp,
        1500,
        topo.rx,
        StoreSettings(bucket_root=root),  # type: ignore[arg-type]
        lambda _w: done.set(),
    )
    worker.start()
    table = f"{nft.TABLE_PREFIX}{job.id}"
    deadline = time.monotonic() + 10
    while table not in nft.list_tables(topo.rx) and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    seconds = topo.trafgen(count, payload, seconds=send_limit(count), rate=rate)
    wall = time.monotonic() - started
    # The packets to DST among the `count` (trafgen cycles through its frames).
    _wait_quiet(lambda: worker.written_packets, enough=(count + topo.others) // (topo.others + 1))
    worker.request_stop("stop")
    done.wait(30)
    written = count_packets(root / "bench" / "bench01" / "x.pcap")
    shutil.rmtree(root, ignore_errors=True)
    report = cp.final
    return {
        "offered": report.get("kernel_matched", 0),
        "written": written,
        "dropped": report.get("dropped", 0),
        "gen_seconds": seconds,
        "gen_wall": wall,
    }


def _tcpdump_while_sending(
    topo: Topology, source: list[str], count: int, payload: int, rate: str | None
) -> tuple[int, float, float]:
    """tcpdump (in topo.rx) writing what `source` selects while trafgen sends: the packets
    it wrote, trafgen's seconds and the wall time of the sending."""
    out = Path(tempfile.mkstemp(suffix=".pcap")[1])
    proc = subprocess.Popen(
        netns.argv(topo.rx, ["tcpdump", "-Z", "root", "-B", "4096", *source, "-w", str(out)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while "listening" not in (proc.stderr.readline() or "listening"):
            pass
        time.sleep(0.2)
        started = time.monotonic()
        seconds = topo.trafgen(count, payload, seconds=send_limit(count), rate=rate)
        wall = time.monotonic() - started
        _wait_quiet(lambda: out.stat().st_size)
        # The last partial batch can sit in the kernel up to a second after the final
        # packet. Stopped sooner, tcpdump lost its last ~10 packets in every run, which
        # read as drops.
        time.sleep(max(0.0, started + wall + NFLOG_FLUSH_DEFAULT - time.monotonic()))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    try:
        return count_packets(out), seconds, wall
    finally:
        out.unlink()


def run_tcpdump(topo: Topology, count: int, payload: int, rate: str | None = None) -> dict:
    settle()
    group = 1501
    table = f"{nft.TABLE_PREFIX}tcpdump"
    nft.install(
        nft.CaptureRule(table=table, prefixes=PREFIX, filter=FILTER, group=group, snaplen=None),
        topo.rx,
    )
    try:
        written, seconds, wall = _tcpdump_while_sending(
            topo, ["-i", f"nflog:{group}"], count, payload, rate
        )
        offered = nft.counters(table, topo.rx)[0]
    finally:
        nft.remove(table, topo.rx)
    return {
        "offered": offered,
        "written": written,
        "dropped": offered - written,
        "gen_seconds": seconds,
        "gen_wall": wall,
    }


def run_afpacket(topo: Topology, device: str, count: int, payload: int) -> dict:
    """tcpdump on `device` itself (AF_PACKET, the capture's filter as BPF), not on NFLOG:
    what the other way to capture costs the same traffic (BENCHMARKS.md, forwarding)."""
    settle()
    bpf = f"udp and dst port {FILTER.destination_port} and dst host {DST}"
    written, seconds, wall = _tcpdump_while_sending(
        topo, ["-i", device, "-s", "0", bpf], count, payload, None
    )
    return {"written": written, "gen_seconds": seconds, "gen_wall": wall}


def capture_ratio(count: int, payload: int, reps: int) -> dict:
    """Packets written / offered at the generator's top rate, alternating ours and tcpdump
    (and which of them goes first, so that neither always follows the other's writes)."""
    ours, theirs = [], []
    with pair() as topo:
        for rep in range(reps):
            if rep % 2:
                theirs.append(run_tcpdump(topo, count, payload))
            ours.append(run_ours(topo, count, payload))
            if not rep % 2:
                theirs.append(run_tcpdump(topo, count, payload))
    return {"ours": ours, "tcpdump": theirs}


def max_lossless_rate(seconds: int, payload: int, steps: int, low: int, high: int) -> dict:
    """Highest rate R (packets per second) each side keeps with 0 drops.

    A binary search on trafgen's `-b R`, which (measured; see BENCHMARKS.md) sends R
    packets at its top rate at the start of every second and then waits: each step sends
    `seconds` such bursts, and a side passes when it keeps every packet of them.
    """
    result: dict[str, Any] = {}
    with pair() as topo:
        for name, run in (("ours", run_ours), ("tcpdump", run_tcpdump)):
            lo, hi, best, log = low, high, 0, []
            for _ in range(steps):
                mid = (lo + hi) // 2
                r = run(topo, mid * seconds, payload, rate=f"{mid}pps")
                log.append({"rate_pps": mid, "average_pps": r["offered"] / r["gen_wall"], **r})
                if r["written"] >= r["offered"] > 0:
                    lo, best = mid, max(best, mid)
                else:
                    hi = mid
            result[name] = best
            result[f"{name}_steps"] = log
    return result
