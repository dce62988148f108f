"""An hour of made-up but plausible sampled traffic for the Traffic and Triggers pages:
DNS, HTTPS, HTTP and ping to two hosts of the account, seen by a machine in ORD and one in
AMS, and a UDP flood to port 5555 from 35 to 25 minutes ago; shipped as the agents ship
their 1-in-100 samples. `BURST` says where the flood is, for a drag on the chart."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np

from edgepcap.control.samples.segments import SegmentStore
from edgepcap.control.settings import SAMPLE_PARTITION, SAMPLE_RETENTION
from tests.support.packets import udp
from tests.support.samples import icmp, owned_by, ship
from tests.support.servers import MachineHeartbeat

STEP = 10
# The flood, in seconds before the data's "now": from, to.
BURST = (35 * 60, 25 * 60)


def tcp(src: str, dst: str, sport: int, dport: int, size: int = 52) -> bytes:
    """An IPv4 TCP segment of `size` bytes (ACK); the checksums are not checked."""
    s, d = (bytes(map(int, a.split("."))) for a in (src, dst))
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000, 64, 6, 0, s, d)
    segment = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x10, 65535, 0, 0)
    return header + segment + b"\0" * (size - 40)


def fill(
    data_dir: Path, account: dict, host, ord01: MachineHeartbeat, ams01: MachineHeartbeat
) -> int:
    """Stores the hour of samples of `account` (its hosts by `host(i)`) in the server's
    store under `data_dir`; the records kept."""
    rng = np.random.default_rng(19)
    now = time.time()
    end = int(now) // STEP * STEP
    web, resolver = host(1), host(2)
    kinds = [  # (samples per step at the mean, packet maker)
        (9, lambda i: udp(f"198.51.100.{i % 200 + 1}", resolver, 30000 + i % 30000, 53)),
        (14, lambda i: tcp(f"192.0.2.{i % 250 + 1}", web, 40000 + i % 20000, 443, 1400)),
        (4, lambda i: tcp(f"198.51.100.{i % 50 + 1}", web, 50000 + i % 10000, 80, 600)),
        (2, lambda i: icmp(f"192.0.2.{i % 20 + 1}", web)),
    ]
    snaps: list[bytes] = []
    stamps: list[int] = []
    for t in range(end - 3600, end, STEP):
        day = 1 + 0.3 * np.sin((t - end) / 900)
        for mean, make in kinds:
            for _ in range(rng.poisson(mean * day)):
                snaps.append(make(len(snaps)))
                stamps.append(int((t + rng.uniform(0, STEP)) * 1e9))
        if end - BURST[0] <= t < end - BURST[1]:
            for _ in range(rng.poisson(60)):
                src = f"100.64.{rng.integers(0, 255)}.{rng.integers(1, 255)}"
                snaps.append(udp(src, resolver, int(rng.integers(1024, 65535)), 5555, b"\0" * 900))
                stamps.append(int((t + rng.uniform(0, STEP)) * 1e9))
    # The agent endpoint refuses records more than 5 min old: the history goes into the
    # server's segment store directly (several processes may share it), the last minutes
    # are shipped as the agents ship them.
    store = SegmentStore(data_dir / "samples", SAMPLE_RETENTION, SAMPLE_PARTITION)
    recent = (now - 240) * 1e9
    kept = 0
    order = np.argsort(stamps)
    for half, machine in ((order[::2], ord01), (order[1::2], ams01)):
        for chunk in np.array_split(half, 8):
            wire = owned_by(account["id"], [snaps[i] for i in chunk], [stamps[i] for i in chunk])
            old = wire["ts"] < recent
            kept += store.append(wire[old], machine.me["machine"])
            if (~old).any():
                kept += ship(machine, wire[~old])["kept"]
    store.close()
    return kept
