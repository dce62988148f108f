"""An hour's sealed samples column by column, for filtered traffic queries.

The hour summaries (sealing.py) answer only unfiltered queries: a filter decides which
samples count, so a filtered query must look at every sample of the window. Read from
the sealed partitions that is 1440 row-major files of 54 B a row for 24 h, 0.4 to 0.7 s at
5 M samples. So when an hour is summed, its samples inside the account's prefixes are
also written here, one `.npy` per field, sorted by 10-s bucket: a query maps only the
columns its filter and group need, cuts the window by binary search on the buckets, and
counts with `np.bincount` over small integer codes, no sort.

Columns (`c.<name>.npy`): `b` the 10-s bucket in the hour (u2), `proto` (u1), `sport`
and `dport` (u2), `orig_len` (u4), `machine` (u2, into the summary's machine list), and
`src` and `dst` (u4): codes into `k.src.npy` / `k.dst.npy`, the hour's distinct
(family, address) keys in `tally.ADDRESS` order. An address filter is one lookup in the
keys and one integer compare per row; an address group needs no sort of addresses.

Counts follow `tally`'s per-hour rule: the `HOUR_GROUPS` heaviest keys (ties by key),
the rest as OTHER, cut here in code order, which is the keys' order. When other rows
join the same hour (strays, a cut last bucket), the cells go uncut to `Tally.end_hour`,
which cuts them together. Hand-written numpy for the reasons the segments are (no
server, measured fastest); readers use it only while the account's prefixes still cover
what the hour recorded, like the summaries (segments.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepcap.control.samples import tally, traffic
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

# Written in an hour summary's meta.json as "columns" when the hour has these files.
VERSION = 1
PORTISH = np.zeros(256, dtype=bool)
PORTISH[records.PORT_PROTOCOLS] = True
PORT_CODES = 65537  # 0 = NO_PORT, port + 1 otherwise: the codes sort as the keys do
# Above this many (key, bucket) cells an uncut hour is counted by np.unique, not densely.
DENSE_CELLS = 1 << 22


def write(directory: Path, rows: np.ndarray, buckets: np.ndarray, sides: dict) -> None:
    """The hour's `rows` (sealing.COLS, machine renumbered) with their 10-s `buckets`, as
    columns sorted by bucket; `sides` holds each side's (distinct keys, each row's code)."""
    order = np.argsort(buckets.astype(np.uint16), kind="stable")
    np.save(directory / "c.b.npy", buckets[order].astype(np.uint16))
    for name, dtype in (
        ("proto", "u1"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("orig_len", "<u4"),
        ("machine", "<u2"),
    ):
        np.save(directory / f"c.{name}.npy", rows[name][order].astype(dtype))
    for side, (keys, codes) in sides.items():
        np.save(directory / f"k.{side}.npy", keys)
        np.save(directory / f"c.{side}.npy", codes[order].astype(np.uint32))


def address_codes(rows: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """The side's distinct keys (tally.ADDRESS, sorted) and each row's index into them."""
    keys = np.zeros(len(rows), dtype=tally.ADDRESS)
    keys["fam"], keys["hi"], keys["lo"] = rows["family"], rows[f"{side}_hi"], rows[f"{side}_lo"]
    return tally.unique(keys)


@dataclass
class Coded:
    """One hour's matching samples as key codes: the tally's to cut and sum (`cells`)."""

    codes: np.ndarray  # each row's key code, < ncodes
    buckets: np.ndarray  # each row's query bucket
    orig: np.ndarray  # each row's original length
    ncodes: int
    keys: np.ndarray | None  # the tally key of each code (None: the code is the key)
    port: bool = False  # port codes: key = code - 1

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.keys is not None:
            return self.keys[codes]
        return codes.astype(np.int64) - 1 if self.port else codes.astype(np.int64)

    def cells(self, top: int | None) -> tuple[np.ndarray, ...]:
        """(keys, buckets, samples, bytes) per cell, as `tally.reduce` sums them: with `top`,
        keys past the `top` heaviest (ties by code = by key) summed as OTHER."""
        totals = np.bincount(self.codes, minlength=self.ncodes)
        present = np.flatnonzero(totals)
        slot = np.zeros(self.ncodes, dtype=np.int64)
        if top is not None and len(present) > top:
            keep = present[np.lexsort((present, -totals[present]))[:top]]
            slot[:] = top
            slot[keep] = np.arange(top)
            sample = self.decode(keep[:1])
            other = tally.other_key_like(sample) if len(sample) else None
            keys = np.concatenate([self.decode(keep), other])
        else:
            slot[present] = np.arange(len(present))
            keys = self.decode(present)
        first = int(self.buckets.min())
        width = int(self.buckets.max()) - first + 1
        flat = slot[self.codes] * width + (self.buckets - first)
        if len(keys) * width <= DENSE_CELLS:
            s = np.bincount(flat, minlength=len(keys) * width)
            y = np.bincount(flat, weights=self.orig, minlength=len(keys) * width)
            cells = np.flatnonzero(s)
            s, y = s[cells], y[cells]
        else:
            cells, where = np.unique(flat, return_inverse=True)
            s = np.bincount(where.reshape(-1), minlength=len(cells))
            y = np.bincount(where.reshape(-1), weights=self.orig, minlength=len(cells))
        return keys[cells // width], cells % width + first, s.astype(np.int64), y.astype(np.int64)


class Hour:
    """The columns of one summed hour, mapped on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._maps: dict[str, np.ndarray] = {}
        self.lo = 0
        self.hi = 0

    def _map(self, name: str) -> np.ndarray:
        if name not in self._maps:
            path = self.directory / f"c.{name}.npy"
            self._maps[name] = np.load(path, mmap_mode="r").view(np.ndarray)
        return self._maps[name]

    def col(self, name: str) -> np.ndarray:
        """The column's rows of the window (`select`)."""
        return self._map(name)[self.lo : self.hi]

    def select(self, first: int, last: int) -> int:
        """Keeps the rows of 10-s buckets [first, last); how many."""
        b = self._map("b")
        self.lo, self.hi = (int(i) for i in np.searchsorted(b, [first, last]))
        return self.hi - self.lo

    def code_of(self, side: str, addr) -> int:
        """The side's code of `addr` in the hour, or -1 if no sample has it."""
        keys = np.load(self.directory / f"k.{side}.npy")
        hi, lo = records.split(addr)
        hit = np.flatnonzero(
            (keys["fam"] == addr.version) & (keys["hi"] == hi) & (keys["lo"] == lo)
        )
        return int(hit[0]) if len(hit) else -1

    def equal(self, side: str, code: int) -> np.ndarray:
        column = self.col(side)
        return column == code if code >= 0 else np.zeros(len(column), dtype=bool)

    def mask(self, f: FilterV1) -> np.ndarray | None:
        """Which selected rows match the filter (None: all of them)."""
        out = None

        def both(m):
            nonlocal out
            out = m if out is None else out & m

        for addr, side in ((f.source, "src"), (f.destination, "dst")):
            if addr is not None:
                both(self.equal(side, self.code_of(side, addr)))
        if f.either is not None:
            src, dst = self.code_of("src", f.either), self.code_of("dst", f.either)
            both(self.equal("src", src) | self.equal("dst", dst))
        if f.protocol is not None:
            both(self.col("proto") == f.protocol)
        ports = [(f.source_port, ("sport",)), (f.destination_port, ("dport",))]
        ports.append((f.port, ("sport", "dport")))
        for port, names in ports:
            if port is not None:
                hit = self.col(names[0]) == port
                for name in names[1:]:
                    hit |= self.col(name) == port
                both(hit & PORTISH[self.col("proto")])
        return out


def count(directory: Path, machines: np.ndarray, q: traffic.TrafficQuery, dim: str, lo, hi):
    """The hour's samples in [lo, hi) matching the query's filter, as `Coded` (None if
    none); `machines` are the tally's codes of the summary's machines."""
    hour = lo // tally.HOUR_NS
    h0 = hour * tally.HOUR_NS
    first, last = (lo - h0) // tally.QUANTUM_NS, (hi - h0) // tally.QUANTUM_NS
    cols = Hour(directory)
    if not cols.select(first, last):
        return None
    mask = cols.mask(q.filter)
    pick = slice(None) if mask is None else np.flatnonzero(mask)
    b = cols.col("b")[pick]
    if not len(b):
        return None
    starts = h0 + np.arange(int(last), dtype=np.int64) * tally.QUANTUM_NS
    buckets = ((starts - q.start_ns) // q.step_ns)[b]
    orig = cols.col("orig_len")[pick]
    if dim == "protocol":
        return Coded(cols.col("proto")[pick].astype(np.intp), buckets, orig, 256, None)
    if dim in ("source_port", "destination_port"):
        port = cols.col("sport" if dim == "source_port" else "dport")[pick].astype(np.intp)
        codes = np.where(PORTISH[cols.col("proto")[pick]], port + 1, 0)
        return Coded(codes, buckets, orig, PORT_CODES, None, port=True)
    if tally.is_address(dim):
        side = "src" if dim == "source_address" else "dst"
        keys = np.load(directory / f"k.{side}.npy")
        return Coded(cols.col(side)[pick].astype(np.intp), buckets, orig, len(keys), keys)
    if dim == "machine":
        codes = cols.col("machine")[pick].astype(np.intp)
        return Coded(codes, buckets, orig, len(machines), np.asarray(machines, np.int64))
    raise ValueError(f"unknown group {dim!r}")
