"""Sample records: the fixed-size row shipped by agents and kept by the stores.

Addresses are kept as 128 bits (IPv4 as IPv4-mapped IPv6) in two 64-bit halves, so that
every filter is a vectorised integer comparison over a whole batch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import numpy as np

SNAPLEN = 160
ACCOUNT_BYTES = 16

STORED = np.dtype(
    [
        ("ts", "<i8"),
        ("orig_len", "<u4"),
        ("cap_len", "<u2"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("proto", "u1"),
        ("family", "u1"),
        ("src_hi", "<u8"),
        ("src_lo", "<u8"),
        ("dst_hi", "<u8"),
        ("dst_lo", "<u8"),
        ("data", "u1", (SNAPLEN,)),
    ]
)
WIRE = np.dtype(
    [("account", f"V{ACCOUNT_BYTES}"), *[(n, STORED.fields[n][0]) for n in STORED.names]]
)
PORT_PROTOCOLS = np.array([6, 17, 33, 132, 136], dtype=np.uint8)
MAPPED = np.uint64(0x0000FFFF00000000)


def split(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    """An address as (high, low) 64-bit halves of its IPv6 (or IPv4-mapped) form."""
    value = int(addr) | (0xFFFF << 32) if addr.version == 4 else int(addr)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def join(hi: int, lo: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    value = (int(hi) << 64) | int(lo)
    if value >> 32 == 0xFFFF:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return ipaddress.IPv6Address(value)


def _be(arr: np.ndarray, start: int, width: int) -> np.ndarray:
    """Big-endian unsigned integers from `width` bytes at column `start` of each row."""
    out = np.zeros(len(arr), dtype=np.uint64)
    for i in range(width):
        out = (out << np.uint64(8)) | arr[:, start + i].astype(np.uint64)
    return out


def parse(
    snapshots: Sequence[bytes], timestamps: Sequence[int], orig_lens: Sequence[int]
) -> np.ndarray:
    """Stored records for packet snapshots (starting at the IP header), vectorised."""
    n = len(snapshots)
    out = np.zeros(n, dtype=STORED)
    if n == 0:
        return out
    buf = np.zeros((n, SNAPLEN), dtype=np.uint8)
    cap = np.fromiter((min(len(s), SNAPLEN) for s in snapshots), dtype=np.uint16, count=n)
    joined = b"".join(s[:SNAPLEN].ljust(SNAPLEN, b"\0") for s in snapshots)
    buf[:] = np.frombuffer(joined, dtype=np.uint8).reshape(n, SNAPLEN)
    out["data"] = buf
    out["cap_len"] = cap
    out["ts"] = np.asarray(timestamps, dtype=np.int64)
    out["orig_len"] = np.asarray(orig_lens, dtype=np.uint32)
    version = buf[:, 0] >> 4
    v4 = version == 4
    v6 = version == 6
    out["family"] = np.where(v4, 4, np.where(v6, 6, 0))
    ihl = (buf[:, 0] & 0x0F).astype(np.intp) * 4
    proto = np.where(v4, buf[:, 9], np.where(v6, buf[:, 6], 0)).astype(np.uint8)
    out["proto"] = proto
    out["src_hi"] = np.where(v6, _be(buf, 8, 8), 0)
    out["src_lo"] = np.where(v6, _be(buf, 16, 8), MAPPED | _be(buf, 12, 4))
    out["dst_hi"] = np.where(v6, _be(buf, 24, 8), 0)
    out["dst_lo"] = np.where(v6, _be(buf, 32, 8), MAPPED | _be(buf, 16, 4))
    first_fragment = ~v4 | ((((buf[:, 6] & 0x1F).astype(np.uint16) << 8) | buf[:, 7]) == 0)
    l4 = np.where(v4, ihl, 40).clip(0, SNAPLEN - 4)
    rows = np.arange(n)
    has_ports = np.isin(proto, PORT_PROTOCOLS) & first_fragment & (cap >= l4 + 4)
    sport = (buf[rows, l4].astype(np.uint16) << 8) | buf[rows, l4 + 1]
    dport = (buf[rows, l4 + 2].astype(np.uint16) << 8) | buf[rows, l4 + 3]
    out["sport"] = np.where(has_ports, sport, 0)
    out["dport"] = np.where(has_ports, dport, 0)
    return out


def in_network(
    hi: np.ndarray, lo: np.ndarray, net: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> np.ndarray:
    """Which of the (hi, lo) addresses lie in `net`, vectorised."""
    base_hi, base_lo = split(net.network_address)
    bits = net.prefixlen + (96 if net.version == 4 else 0)
    mask = ((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1)
    m_hi, m_lo = np.uint64(mask >> 64), np.uint64(mask & 0xFFFFFFFFFFFFFFFF)
    return ((hi & m_hi) == np.uint64(base_hi)) & ((lo & m_lo) == np.uint64(base_lo))


def attribute(records: np.ndarray, accounts: dict[str, list]) -> np.ndarray:
    """Wire records: one per (sample, account whose prefix holds its source or destination)."""
    parts = []
    for account_id, nets in accounts.items():
        hit = np.zeros(len(records), dtype=bool)
        for net in nets:
            hit |= in_network(records["src_hi"], records["src_lo"], net)
            hit |= in_network(records["dst_hi"], records["dst_lo"], net)
        if hit.any():
            chosen = records[hit]
            wire = np.zeros(len(chosen), dtype=WIRE)
            for name in STORED.names:
                wire[name] = chosen[name]
            wire["account"] = np.frombuffer(bytes.fromhex(account_id), dtype=f"V{ACCOUNT_BYTES}")[0]
            parts.append(wire)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=WIRE)


def stored(wire: np.ndarray) -> np.ndarray:
    out = np.zeros(len(wire), dtype=STORED)
    for name in STORED.names:
        out[name] = wire[name]
    return out


def account_ids(wire: np.ndarray) -> list[str]:
    return sorted({bytes(a).hex() for a in np.unique(wire["account"])})
