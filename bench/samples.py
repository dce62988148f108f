"""Sample figures: sustained sampler ingest, sample captures end to end over HTTP, and the
traffic view (24 h queries, store-level: the route is the API's).

The store is filled with synthetic samples of real packets (Zipf-distributed over 20
accounts), appended straight to the embedded store; captures then go through the api.
The baseline answers the same questions with `tcpdump -r` on a pcap of the same hour.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np

from edgepcap.control.samples import traffic
from edgepcap.control.samples.segments import SegmentStore
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1
from edgepcap.formats.pcapfile import LINKTYPE_RAW, global_header

ACCOUNTS = 20
MACHINE = "bench01"
# The traffic view's mix: every group unfiltered, and a few filters.
TRAFFIC_MIX = [(g, {}) for g in traffic.GROUPS] + [
    ("destination_port", {"protocol": 17}),
    ("source_address", {"destination_port": 53}),
    ("protocol", {"port": 443}),
]


def account_net(i: int) -> ipaddress.IPv4Network:
    """Account i's prefix: a /27 of the TEST-NET ranges (24 of them, 20 used)."""
    base = ("203.0.113", "198.51.100", "192.0.2")[i // 8]
    return ipaddress.ip_network(f"{base}.{32 * (i % 8)}/27")


def synth(n: int, start_ns: int, span_ns: int, ids: list[str], seed: int = 7) -> np.ndarray:
    """`n` wire records over [start, start+span) with Zipf-distributed accounts."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, ACCOUNTS + 1)
    which = rng.choice(ACCOUNTS, size=n, p=weights / weights.sum())
    ts = np.sort(start_ns + rng.integers(0, span_ns, size=n))
    wire = np.zeros(n, dtype=records.WIRE)
    wire["ts"] = ts
    wire["family"] = 4
    wire["proto"] = 17
    wire["sport"] = rng.integers(1024, 65535, size=n)
    wire["dport"] = rng.choice([53, 80, 443, 123], size=n)
    wire["cap_len"] = 160
    wire["orig_len"] = 1200
    src = rng.integers(0, 2**32, size=n, dtype=np.uint64)
    dst_base = np.array(
        [int(account_net(i).network_address) for i in range(ACCOUNTS)], dtype=np.uint64
    )
    dst = dst_base[which] + rng.integers(1, 30, size=n, dtype=np.uint64)
    wire["src_lo"] = records.MAPPED | src
    wire["dst_lo"] = records.MAPPED | dst
    header = np.zeros((n, 28), dtype=np.uint8)
    header[:, 0] = 0x45
    header[:, 2], header[:, 3] = 1200 >> 8, 1200 & 0xFF
    header[:, 8], header[:, 9] = 64, 17
    for k in range(4):
        header[:, 12 + k] = (src >> np.uint64(24 - 8 * k)) & np.uint64(0xFF)
        header[:, 16 + k] = (dst >> np.uint64(24 - 8 * k)) & np.uint64(0xFF)
    header[:, 20] = (wire["sport"] >> 8).astype(np.uint8)
    header[:, 21] = (wire["sport"] & 0xFF).astype(np.uint8)
    header[:, 22] = (wire["dport"] >> 8).astype(np.uint8)
    header[:, 23] = (wire["dport"] & 0xFF).astype(np.uint8)
    wire["data"][:, :28] = header
    for i, account_id in enumerate(ids):
        wire["account"][which == i] = np.frombuffer(bytes.fromhex(account_id), dtype="V16")[0]
    return wire


def fill(store_root: Path, n: int, hours: float, ids: list[str]) -> tuple[np.ndarray, int, float]:
    """Append `n` samples over the last `hours` to the store, a slice at a time (bounded
    memory), then seal it as the supervisor would; returns the last hour's samples, for
    the baseline's pcap, the end time, and how long sealing took (s)."""
    now = time.time_ns()
    span = int(hours * 3600e9) - int(5e9)
    start = now - int(hours * 3600e9)
    store = SegmentStore(store_root, retention=dt.timedelta(hours=25), partition_seconds=60)
    slices = max(1, n // 2_000_000)
    last_hour = []
    for k in range(slices):
        lo = start + span * k // slices
        hi = start + span * (k + 1) // slices
        wire = synth(n // slices, lo, hi - lo, ids, seed=7 + k)
        parts = wire["ts"] // (60 * 1_000_000_000)
        for p in np.unique(parts):
            store.append(wire[parts == p], MACHINE)  # one append per minute of history
        recent = wire[wire["ts"] >= now - 3600 * 1_000_000_000]
        if len(recent):
            last_hour.append(recent)
    nets = {account_id: [account_net(i)] for i, account_id in enumerate(ids)}
    started = time.perf_counter()
    # The API process's own sealer may be at it too: wait for it, then seal the rest.
    store.seal(time.time_ns(), nets.get, wait=True)
    sealing = time.perf_counter() - started
    empty = np.zeros(0, dtype=records.WIRE)
    return (np.concatenate(last_hour) if last_hour else empty), now, sealing


def write_hour_pcap(wire: np.ndarray, end_ns: int, path: Path) -> None:
    hour = wire[wire["ts"] >= end_ns - 3600 * 1_000_000_000]
    with path.open("wb") as fh:
        fh.write(global_header(LINKTYPE_RAW, 160))
        rec = np.zeros(
            len(hour),
            dtype=[
                ("sec", "<u4"),
                ("usec", "<u4"),
                ("incl", "<u4"),
                ("orig", "<u4"),
                ("data", "u1", (160,)),
            ],
        )
        rec["sec"] = hour["ts"] // 1_000_000_000
        rec["usec"] = (hour["ts"] % 1_000_000_000) // 1000
        rec["incl"] = 160
        rec["orig"] = hour["orig_len"]
        rec["data"] = hour["data"]
        rec.tofile(fh)


# The sample capture both stores' figures ask for: the newest 10 000 UDP packets of 5 min.
CAPTURE = {
    "system": "magic-transit",
    "type": "simple",
    "time_limit": 300,
    "packet_limit": 10000,
    "filter_v1": {"protocol": 17},
}


def account_clients(api: str, tokens: dict[str, str], ids: list[str]) -> dict[str, httpx.Client]:
    """A client of the customer API per account, made before any clock starts (each loads
    the CA store); the caller closes them."""
    return {
        account: httpx.Client(
            base_url=f"{api}/client/v4/accounts/{account}",
            headers={"Authorization": f"Bearer {tokens[account]}"},
            timeout=60,
        )
        for account in ids
    }


def query_latency(
    api: str, accounts: dict[str, str], ids: list[str], pcap_path: Path, n_queries: int
) -> dict:
    """create → download complete over HTTP, vs `tcpdump -r` with the equivalent BPF."""
    ours, theirs = [], []
    clients = account_clients(api, accounts, ids[:5])
    try:
        for q in range(n_queries):
            i = q % 5  # the busiest accounts: the Zipf head holds the most samples
            account = ids[i]
            net = account_net(i)
            c = clients[account]
            start = time.perf_counter()
            r = c.post("/pcaps", json=CAPTURE)
            pcap = r.json()["result"]
            body = c.get(f"/pcaps/{pcap['id']}/download").content
            ours.append(time.perf_counter() - start)
            assert len(body) >= 24
            start = time.perf_counter()
            subprocess.run(
                [
                    "tcpdump",
                    "-r",
                    str(pcap_path),
                    "-w",
                    "/dev/null",
                    # No -c: the newest packets of the window are at the end of the hour, and
                    # BPF cannot select by time, so tcpdump has to read it all.
                    f"udp and dst net {net}",
                ],
                capture_output=True,
                check=True,
            )
            theirs.append(time.perf_counter() - start)
    finally:
        for client in clients.values():
            client.close()
    return {
        "ours_ms": sorted(x * 1000 for x in ours),
        "tcpdump_ms": sorted(x * 1000 for x in theirs),
    }


def ingest_rate(
    api: str, key: str, machine: dict, ids: list[str], rate: int, seconds: float
) -> dict:
    """Post `rate` samples per second in 0.5 s batches; how many the api keeps per second."""
    wire = synth(
        int(rate * seconds), time.time_ns() - int(seconds * 1e9), int(seconds * 1e9), ids, seed=11
    )
    batches = np.array_split(wire, max(1, int(seconds * 2)))
    kept = 0
    lat = []
    start = time.monotonic()
    with httpx.Client(
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
        timeout=60,
    ) as c:
        for k, batch in enumerate(batches):
            due = start + k * 0.5
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            t = time.perf_counter()
            r = c.post(f"{api}/agent/v1/samples", params=machine, content=batch.tobytes())
            lat.append(time.perf_counter() - t)
            kept += r.json()["kept"]
    elapsed = max(time.monotonic() - start, seconds)
    return {
        "offered_per_s": rate,
        "kept_per_s": kept / elapsed,
        "kept": kept,
        "offered": len(wire),
        "max_batch_ms": max(lat) * 1000,
    }


def traffic_latency(store_root: Path, ids: list[str], hours: float, rounds: int) -> dict:
    """Each query of TRAFFIC_MIX over the last `hours` (5-min steps) for the 3 busiest
    accounts, `rounds` times, straight on the store as the API's route would call it;
    latencies in ms, unfiltered and filtered apart."""
    store = SegmentStore(store_root, retention=dt.timedelta(hours=25), partition_seconds=60)
    step = 300 * traffic.NS
    plain, filtered, per = [], [], {}
    for _ in range(rounds):
        for i, account_id in enumerate(ids[:3]):
            for group_by, f in TRAFFIC_MIX:
                now = time.time_ns()
                start = (now - int(hours * 3600e9)) // step * step
                q = traffic.TrafficQuery(
                    account_id, start, now, step, group_by, FilterV1(**f), (account_net(i),)
                )
                t = time.perf_counter()
                groups = store.traffic(q)
                ms = (time.perf_counter() - t) * 1000
                assert groups
                (filtered if f else plain).append(ms)
                name = group_by + ("" if not f else " " + ",".join(f))
                per.setdefault(name, []).append(ms)
    return {"plain_ms": sorted(plain), "filtered_ms": sorted(filtered), "by_query_ms": per}
