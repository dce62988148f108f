"""Sample records: the fixed-size row shipped by agents and kept by the stores.

Addresses are kept as 128 bits (IPv4 as IPv4-mapped IPv6) in two 64-bit halves, so that
every filter is a vectorised integer comparison over a whole batch. The bits alone do not say
which family a record is: an IPv6 packet to ::ffff:192.0.2.1 has the same bits as an IPv4
packet to 192.0.2.1. So every match also compares the record's `family` (4 or 6) with the
prefix's or address's version; a record of family 0 (not IP) matches nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import numpy as np

from edgepcap.formats import filters

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


def _clickhouse_type(dtype: np.dtype) -> str:
    if dtype.kind == "V" or dtype.subdtype is not None:
        return f"FixedString({dtype.itemsize})"
    return {"i": "Int", "u": "UInt"}[dtype.kind] + str(8 * dtype.itemsize)


# A WIRE record's bytes are one ClickHouse RowBinary row of these columns (fixed-size,
# little-endian, in order): an agent inserts a batch's bytes as they are.
ROW_BINARY = tuple((name, _clickhouse_type(WIRE.fields[name][0])) for name in WIRE.names)
# filters.PORT_PROTOCOLS as an array, for np.isin over a batch of rows
PORT_PROTOCOLS = np.array(filters.PORT_PROTOCOLS, dtype=np.uint8)
MAPPED = np.uint64(0x0000FFFF00000000)


def split(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    """An address as (high, low) 64-bit halves of its IPv6 (or IPv4-mapped) form."""
    value = int(addr) | (0xFFFF << 32) if addr.version == 4 else int(addr)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def join(hi: int, lo: int, family: int = 4) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of (high, low) halves; only a family-4 record's mapped form is IPv4."""
    value = (int(hi) << 64) | int(lo)
    if family == 4 and value >> 32 == 0xFFFF:
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


def bits(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> tuple[int, int, int, int, int]:
    """(family, base_hi, base_lo, mask_hi, mask_lo) of `net` in the records' 128-bit form."""
    base_hi, base_lo = split(net.network_address)
    length = net.prefixlen + (96 if net.version == 4 else 0)
    mask = ((1 << 128) - 1) ^ ((1 << (128 - length)) - 1)
    return net.version, base_hi, base_lo, mask >> 64, mask & 0xFFFFFFFFFFFFFFFF


def _within(
    hi: np.ndarray, lo: np.ndarray, net: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> np.ndarray:
    """Which (hi, lo) addresses have `net`'s bits; the family is the caller's to compare."""
    _family, base_hi, base_lo, m_hi, m_lo = bits(net)
    return ((hi & np.uint64(m_hi)) == np.uint64(base_hi)) & (
        (lo & np.uint64(m_lo)) == np.uint64(base_lo)
    )


def in_network(
    rows: np.ndarray, side: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> np.ndarray:
    """Which rows have their `side` ("src" or "dst") address in `net` and are of its family."""
    return (rows["family"] == net.version) & _within(rows[f"{side}_hi"], rows[f"{side}_lo"], net)


def is_address(
    rows: np.ndarray, side: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> np.ndarray:
    """Which rows have exactly `addr` as their `side` address, in its family."""
    hi, lo = split(addr)
    return (
        (rows["family"] == addr.version)
        & (rows[f"{side}_hi"] == np.uint64(hi))
        & (rows[f"{side}_lo"] == np.uint64(lo))
    )


_HALVES = ("src_hi", "src_lo", "dst_hi", "dst_lo")


def owned(
    rows: np.ndarray, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> np.ndarray:
    """Which rows have their source or destination in one of `nets`, family by family."""
    # Contiguous copies once: the records' fields are strided, and each net reads them all.
    col = {name: np.ascontiguousarray(rows[name]) for name in ("family", *_HALVES)}
    hit = np.zeros(len(col["family"]), dtype=bool)
    for version in sorted({net.version for net in nets}):
        inside = np.zeros(len(hit), dtype=bool)
        for net in (n for n in nets if n.version == version):
            inside |= _within(col["src_hi"], col["src_lo"], net)
            inside |= _within(col["dst_hi"], col["dst_lo"], net)
        hit |= inside & (col["family"] == version)
    return hit


def attribute(records: np.ndarray, accounts: dict[str, list]) -> np.ndarray:
    """Wire records: one per (sample, account whose prefix holds its source or destination)."""
    parts = []
    for account_id, nets in accounts.items():
        hit = owned(records, nets)
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
