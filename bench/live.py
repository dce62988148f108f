"""Live stream latency: from the moment the kernel logs a packet to the moment its bytes
reach a viewer of the capture's stream (`GET …/pcaps/{id}/stream`), in the real lab.

The lab (`edgepcap lab up`: two machines of ORD with their agents, and the API) runs one
full capture of UDP. A viewer reads its stream on a thread and notes when each chunk
arrives; once both machines' interfaces are in the stream (warm-up), paced traffic from
the lab's client namespace crosses both machines. A packet's latency is the arrival of the
chunk that completes its Enhanced Packet Block minus the kernel's timestamp in that block:
the agents, the API and this process share the host's clock (namespaces do not change it).
Each datagram carries its number and the sender's clock, to count losses and to check that
the block's timestamp is the kernel's (it follows the send by microseconds).
"""

from __future__ import annotations

import itertools
import json
import math
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.lab import Lab, running_lab
from tests.support.live import send_udp

PORT = 7300  # the measured datagrams' destination port
WARM_PORT = 6300  # warm-up datagrams': not measured
RATE = 200  # datagrams per second in all, alternating between the hosts (one per machine)
SHB, IDB, EPB = 0x0A0D0D0A, 1, 6
IF_TSRESOL = 9
BLOCK = struct.Struct("<II")  # block type, total length
EPB_FIXED = struct.Struct("<5I")  # interface, timestamp high and low, captured, original
OPTION = struct.Struct("<HH")
TAG = struct.Struct("!IQ")  # in each measured datagram: its number, the sender's time_ns

# Runs in the client namespace: argv[4] datagrams to port argv[2], argv[3] per second in
# all, host after host of argv[1]; each starts with its number and the time it was sent.
# Prints how long the sending took and by how much the latest send missed its moment.
SEND = (
    "import json, socket, struct, sys, time\n"
    "hosts, port = sys.argv[1].split(','), int(sys.argv[2])\n"
    "rate, count = float(sys.argv[3]), int(sys.argv[4])\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "pad = b'x' * 20\n"
    "start = time.monotonic()\n"
    "late = 0.0\n"
    "for i in range(count):\n"
    "    wait = start + i / rate - time.monotonic()\n"
    "    if wait > 0:\n"
    "        time.sleep(wait)\n"
    "    else:\n"
    "        late = max(late, -wait)\n"
    "    tag = struct.pack('!IQ', i, time.time_ns())\n"
    "    s.sendto(tag + pad, (hosts[i % len(hosts)], port))\n"
    "print(json.dumps({'seconds': time.monotonic() - start, 'late_max_s': late}))\n"
)


class Blocks:
    """The packets of a pcapng stream fed in chunks, each with the time its chunk came:
    `packets` holds (arrival_ns, kernel_ns, interface, udp_dport, udp_payload) per EPB,
    stamped with the arrival of the chunk that completed its block."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.resolution: list[int] = []  # per interface: nanoseconds per timestamp unit
        self.names: list[str] = []
        self.packets: list[tuple[int, int, int, int, bytes]] = []
        self.chunks = 0

    def feed(self, chunk: bytes, arrival_ns: int) -> None:
        self.chunks += 1
        self.buffer += chunk
        pos, data = 0, self.buffer
        while pos + BLOCK.size <= len(data):
            kind, length = BLOCK.unpack_from(data, pos)
            if length < 12 or length % 4:
                raise ValueError(f"pcapng block of length {length} at {pos}: not a stream")
            if pos + length > len(data):
                break
            body = bytes(data[pos + BLOCK.size : pos + length - 4])
            if kind == IDB:
                self._interface(body)
            elif kind == EPB:
                self._packet(body, arrival_ns)
            elif kind == SHB:  # a new section numbers its interfaces from 0 again
                self.resolution, self.names = [], []
            pos += length
        del data[:pos]

    def _interface(self, body: bytes) -> None:
        nanoseconds, name = 1000, ""  # if_tsresol's default: microseconds
        at = 8  # link type, reserved, snap length
        while at + OPTION.size <= len(body):
            code, size = OPTION.unpack_from(body, at)
            value = body[at + OPTION.size : at + OPTION.size + size]
            if code == 0:
                break
            if code == IF_TSRESOL:
                if value[0] & 0x80:
                    raise ValueError("if_tsresol as a power of two: not what edgepcap writes")
                nanoseconds = 10 ** (9 - value[0]) if value[0] <= 9 else 0
            elif code == 2:  # if_name
                name = value.decode()
            at += OPTION.size + size + (-size & 3)
        if not nanoseconds:
            raise ValueError("if_tsresol finer than a nanosecond")
        self.resolution.append(nanoseconds)
        self.names.append(name)

    def _packet(self, body: bytes, arrival_ns: int) -> None:
        interface, high, low, caplen, _orig = EPB_FIXED.unpack_from(body)
        kernel_ns = ((high << 32) | low) * self.resolution[interface]
        ip = body[EPB_FIXED.size : EPB_FIXED.size + caplen]
        dport, payload = -1, b""
        if len(ip) >= 20 and ip[0] >> 4 == 4 and ip[9] == 17:
            udp = (ip[0] & 0x0F) * 4
            if len(ip) >= udp + 8:
                dport = int.from_bytes(ip[udp + 2 : udp + 4], "big")
                payload = ip[udp + 8 : udp + 8 + TAG.size]
        self.packets.append((arrival_ns, kernel_ns, interface, dport, payload))


class Viewer(threading.Thread):
    """Reads a capture's stream until the server ends it (or `timeout` s without bytes)."""

    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        super().__init__(name="live-viewer", daemon=True)
        self.url, self.token, self.timeout = url, token, timeout
        self.blocks = Blocks()
        self.lock = threading.Lock()
        self.status: int | None = None
        self.error: BaseException | None = None
        self.tail = b""  # the last bytes: the end's comment says why the stream ended
        self.started = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=self.timeout) as r:
                self.status = r.status_code
                self.started.set()
                if r.status_code != 200:
                    return
                for chunk in r.iter_raw():
                    arrival = time.time_ns()
                    with self.lock:
                        self.blocks.feed(chunk, arrival)
                    self.tail = (self.tail + chunk)[-512:]
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()

    def interfaces(self) -> int:
        with self.lock:
            return len(self.blocks.names)

    def measured(self) -> dict[int, tuple[int, int, int, int]]:
        """Per datagram number: (arrival_ns, kernel_ns, sent_ns, interface), the first copy."""
        out: dict[int, tuple[int, int, int, int]] = {}
        with self.lock:
            packets = list(self.blocks.packets)
        for arrival, kernel, interface, dport, payload in packets:
            if dport == PORT and len(payload) == TAG.size:
                number, sent = TAG.unpack(payload)
                out.setdefault(number, (arrival, kernel, sent, interface))
        return out


def send_paced(lab: Lab, rate: int, count: int) -> dict[str, Any]:
    """`count` datagrams at `rate` per second from the client namespace, to the customer's
    hosts in turn (host i is reached through machine i)."""
    hosts = ",".join(h["v4"] for h in lab["hosts"])
    ns = lab["namespaces"]["client"]
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", SEND]
    argv += [hosts, str(PORT), str(rate), str(count)]
    timeout = count / rate + 30
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=timeout)
    return json.loads(out.stdout)


def warm_up(lab: Lab, viewer: Viewer, rounds: int = 150) -> int:
    """One datagram to each host per round until the stream holds both machines'
    interfaces: from then on every machine sends its copies as it reads (at most `rounds`
    rounds, 0.1 s apart). Returns the rounds it took."""
    for done in range(1, rounds + 1):
        send_udp(lab, WARM_PORT, 1)
        if viewer.interfaces() >= len(lab["hosts"]):
            return done
        time.sleep(0.1)
    raise RuntimeError(f"the stream had {viewer.interfaces()} interfaces after {rounds} rounds")


def measure(seconds: float, rate: int = RATE) -> dict[str, Any]:
    """One lab, one capture, one viewer, `seconds` of datagrams at `rate` per second."""
    count = int(seconds * rate)
    with tempfile.TemporaryDirectory(prefix="edgepcap-bench-live-") as tmp:
        began = time.monotonic()
        # The lab's buckets are directories: no S3 endpoint to give it.
        with running_lab(Path(tmp) / "lab", "") as lab:
            lab_up_s = time.monotonic() - began
            pcap = lab.start_full(filter_v1={"protocol": 17}, time_limit=60 + math.ceil(seconds))
            url = f"{lab['api']}/client/v4/accounts/{lab['account_id']}/pcaps/{pcap['id']}/stream"
            viewer = Viewer(url, lab["api_token"])
            viewer.start()
            viewer.started.wait(10)
            if viewer.status != 200:
                raise RuntimeError(f"the stream answered {viewer.status}: {viewer.error!r}")
            rounds = warm_up(lab, viewer)
            sender = send_paced(lab, rate, count)
            # Every copy in the stream, or 5 s for the last ones.
            deadline = time.monotonic() + 5
            while len(viewer.measured()) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            with lab.client() as c:
                c.put(f"/pcaps/{pcap['id']}/stop").raise_for_status()
            done = lab.wait_end(pcap["id"])
            viewer.join(15)
            ended = not viewer.is_alive() and b"capture ended" in viewer.tail
            got = viewer.measured()
    latency = sorted((a - k) / 1e6 for a, k, _s, _i in got.values())
    per_machine = {
        viewer.blocks.names[i]: sorted((a - k) / 1e6 for a, k, _s, j in got.values() if j == i)
        for i in range(len(viewer.blocks.names))
    }
    # Chunks that brought measured packets, and the time between them: how often the
    # machines' senders post (both machines' posts interleave).
    arrivals = sorted({a for a, _k, _s, _i in got.values()})
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(arrivals)]
    return {
        "sent": count,
        "received": len(got),
        "rate_pps": rate,
        "seconds": seconds,
        "latency_ms": latency,
        "per_machine_ms": per_machine,
        "kernel_after_send_ms": sorted((k - s) / 1e6 for _a, k, s, _i in got.values()),
        "chunks_with_packets": len(arrivals),
        "gap_between_chunks_ms": sorted(gaps),
        "chunks": viewer.blocks.chunks,
        "warm_up_rounds": rounds,
        "sender": sender,
        "capture": {
            "status": done["status"],
            "packets_captured": done["packets_captured"],
            "dropped": sum(m["dropped"] for m in done["machines"]),
        },
        "stream_ended_by_server": ended,
        "viewer_error": None if viewer.error is None else repr(viewer.error),
        "lab_up_s": round(lab_up_s, 1),
    }
