"""Stored sample records over hours, for the traffic-view tests: two accounts, two
machines, IPv4 and IPv6, ports and portless protocols, and strays outside the prefixes."""

from __future__ import annotations

import ipaddress

import numpy as np

from edgepcap.formats import samples as records

A, B = "a" * 32, "b" * 32
NETS = {
    A: [ipaddress.ip_network("203.0.113.0/25"), ipaddress.ip_network("2001:db8:a::/48")],
    B: [ipaddress.ip_network("203.0.113.128/25")],
}
MINUTE = 60 * 1_000_000_000
MACHINES = ("m1", "m2")


def _v4(text: str) -> tuple[int, int]:
    return records.split(ipaddress.ip_address(text))


def records_over(start_ns: int, end_ns: int, n: int, seed: int) -> dict:
    """`n` records per account over [start, end), grouped by (machine, minute) as
    {"id": account, "rows": stored records}; keys of the groups are few enough to be exact."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for account, base in ((A, 1), (B, 129)):
        rows = np.zeros(n, dtype=records.STORED)
        rows["ts"] = np.sort(rng.integers(start_ns, end_ns, size=n))
        rows["orig_len"] = rng.integers(60, 1500, size=n)
        rows["proto"] = rng.choice([6, 17, 1, 17], size=n)
        ports = np.isin(rows["proto"], records.PORT_PROTOCOLS)
        rows["sport"] = np.where(ports, rng.choice([1000, 1001, 53, 443], size=n), 0)
        rows["dport"] = np.where(ports, rng.choice([53, 80, 443], size=n), 0)
        v6 = (rng.random(n) < 0.2) if account == A else np.zeros(n, bool)
        rows["family"] = np.where(v6, 6, 4)
        src = [_v4(f"198.51.100.{k}") for k in range(1, 6)]
        dst = [_v4(f"203.0.113.{base + k}") for k in range(12)]
        s = rng.integers(0, len(src), size=n)
        d = rng.integers(0, len(dst), size=n)
        rows["src_hi"] = [src[i][0] for i in s]
        rows["src_lo"] = [src[i][1] for i in s]
        rows["dst_hi"] = [dst[i][0] for i in d]
        rows["dst_lo"] = [dst[i][1] for i in d]
        inbound = rng.random(n) < 0.5  # half the samples leave the account's addresses
        for a, b in (("src_hi", "dst_hi"), ("src_lo", "dst_lo")):
            rows[a], rows[b] = (
                np.where(inbound, rows[a], rows[b]),
                np.where(inbound, rows[b], rows[a]),
            )
        v6_src = records.split(ipaddress.ip_address("2001:db8:c::7"))
        v6_dst = [records.split(ipaddress.ip_address(f"2001:db8:a::{k}")) for k in (1, 2, 3)]
        k = rng.integers(0, 3, size=n)
        rows["src_hi"] = np.where(v6, v6_src[0], rows["src_hi"])
        rows["src_lo"] = np.where(v6, v6_src[1], rows["src_lo"])
        rows["dst_hi"] = np.where(v6, [v6_dst[i][0] for i in k], rows["dst_hi"])
        rows["dst_lo"] = np.where(v6, [v6_dst[i][1] for i in k], rows["dst_lo"])
        # Strays: filed under the account, neither address in its prefixes.
        stray = rng.random(n) < 0.02
        other = _v4("192.0.2.9")
        for side in ("src", "dst"):
            rows[f"{side}_hi"] = np.where(stray, other[0], rows[f"{side}_hi"])
            rows[f"{side}_lo"] = np.where(stray, other[1], rows[f"{side}_lo"])
        rows["family"] = np.where(stray, 4, rows["family"])
        rows["cap_len"] = 40
        machine = rng.integers(0, len(MACHINES), size=n)
        minute = rows["ts"] // MINUTE
        for m in range(len(MACHINES)):
            for t in np.unique(minute[machine == m]):
                pick = (machine == m) & (minute == t)
                # Two appends in some minutes: compaction joins them.
                halves = np.array_split(rows[pick], 2 if t % 3 == 0 else 1)
                for h, half in enumerate(halves):
                    if len(half):
                        out[(MACHINES[m], int(t), account, h)] = {"id": account, "rows": half}
    return {(k[0], k[1], k[2], k[3]): v for k, v in out.items()}


def wire_of(part: dict) -> np.ndarray:
    rows = part["rows"]
    wire = np.zeros(len(rows), dtype=records.WIRE)
    for name in records.STORED.names:
        wire[name] = rows[name]
    wire["account"] = np.frombuffer(bytes.fromhex(part["id"]), dtype=f"V{records.ACCOUNT_BYTES}")[0]
    return wire


def many_keys_over(start_ns: int, end_ns: int, n: int, seed: int) -> dict:
    """`n` records of account A over [start, end) from random sources and source ports
    (more keys an hour than `tally.HOUR_GROUPS`), 5 % of them strays to 192.0.2.0/24,
    as `records_over` groups them."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=records.STORED)
    rows["ts"] = np.sort(rng.integers(start_ns, end_ns, size=n))
    rows["orig_len"] = rng.integers(60, 1500, size=n)
    rows["proto"] = rng.choice([6, 17, 17, 1], size=n)
    ports = np.isin(rows["proto"], records.PORT_PROTOCOLS)
    # Zipf-ish sources and ports: some heavy keys, a long tail, ties among the light ones.
    rows["sport"] = np.where(ports, np.minimum(rng.zipf(1.3, size=n), 60000) + 1000, 0)
    rows["dport"] = np.where(ports, rng.choice([53, 80, 443], size=n), 0)
    rows["family"] = 4
    src = np.minimum(rng.zipf(1.2, size=n), 2**24 - 1).astype(np.uint64)
    rows["src_lo"] = records.MAPPED | (np.uint64(10 << 24) + src)
    dst = _v4("203.0.113.0")[1] + rng.integers(1, 13, size=n).astype(np.uint64)
    stray = rng.random(n) < 0.05
    rows["dst_lo"] = np.where(stray, _v4("192.0.2.0")[1] + np.uint64(9), dst)
    rows["cap_len"] = 40
    machine = rng.integers(0, len(MACHINES), size=n)
    minute = rows["ts"] // MINUTE
    out = {}
    for m in range(len(MACHINES)):
        for t in np.unique(minute[machine == m]):
            pick = (machine == m) & (minute == t)
            out[(MACHINES[m], int(t), A, 0)] = {"id": A, "rows": rows[pick]}
    return out


def rows_read(store, monkeypatch) -> list[int]:
    """The partitions of which `store` reads rows from now on (a list it fills)."""
    read: list[int] = []
    real = store._read_partition

    def reading(*a):
        chunks = real(*a)
        read.extend([a[0]] if chunks else [])
        return chunks

    monkeypatch.setattr(store, "_read_partition", reading)
    return read
