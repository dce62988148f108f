"""An hour's sealed samples column by column, for filtered traffic queries.

The hour summaries (sealing.py) answer only unfiltered queries: a filter decides which
samples count, so a filtered query must look at every sample of the window. Read from
the sealed partitions that is 1440 row-major files of 54 B a row for 24 h, 0.4 to 0.7 s at
5 M samples. So when an hour is summed, its samples inside the account's prefixes are
also written here, one `.npy` per field, sorted by 10-s bucket: a query maps only the
columns its filter and group need, cuts the window by binary search on the buckets, and
counts with `np.bincount` over small integer codes, no sort.

Columns (`c.<name>.npy`): `b` the 10-s bucket in the hour (u2), `proto` (u1), `sk`
and `dk` (u4: the source and destination port + 1, 0 for a sample without ports, so
that a port is one compare and its code sorts as its key), `orig_len` (u4), `machine`
(u2, into the summary's machine list), and `src` and `dst` (u4): codes into `k.src.npy`
/ `k.dst.npy`, the hour's distinct (family, address) keys in `tally.ADDRESS` order. An
address filter is one lookup in the keys and one integer compare per row; an address
group needs no sort of addresses.

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
VERSION = 2
PORTISH = np.zeros(256, dtype=bool)
PORTISH[records.PORT_PROTOCOLS] = True
PORT_CODES = 65537  # 0 = NO_PORT, port + 1 otherwise: the codes sort as the keys do
# Counted densely, one bincount over (code, bucket), while there are no more cells than
# this nor than rows.
DENSE_CELLS = 1 << 22


def write(directory: Path, rows: np.ndarray, buckets: np.ndarray, sides: dict) -> None:
    """The hour's `rows` (sealing.COLS, machine renumbered) with their 10-s `buckets`, as
    columns sorted by bucket; `sides` holds each side's (distinct keys, each row's code)."""
    order = np.argsort(buckets.astype(np.uint16), kind="stable")
    rows = rows[order]
    np.save(directory / "c.b.npy", buckets[order].astype(np.uint16))
    for name, dtype in (("proto", "u1"), ("orig_len", "<u4"), ("machine", "<u2")):
        np.save(directory / f"c.{name}.npy", rows[name].astype(dtype))
    portish = PORTISH[rows["proto"]]
    for name, field in (("sk", "sport"), ("dk", "dport")):
        codes = np.where(portish, rows[field].astype(np.uint32) + 1, 0).astype(np.uint32)
        np.save(directory / f"c.{name}.npy", codes)
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
    buckets: np.ndarray  # each row's query bucket (intp)
    orig: np.ndarray  # each row's original length
    ncodes: int
    keys: np.ndarray | None  # the tally key of each code (None: the code is the key)
    port: bool = False  # port codes: key = code - 1
    ordered: bool = True  # rows in bucket order

    def merged(self, keys: np.ndarray, buckets: np.ndarray, orig: np.ndarray) -> Coded:
        """These rows and others of the same hour given by tally key (`tally.encode`), as
        codes that still sort as their keys do: an address missing from the hour's keys
        is inserted among them, and the codes after it shift."""
        codes, ncodes, mapped = self.codes, self.ncodes, self.keys
        if mapped is None:
            extra = keys + 1 if self.port else keys
        elif mapped.dtype != tally.ADDRESS:  # machines: by the tally's numbers
            codes, mapped = mapped[codes], None
            ncodes = int(max(codes.max(initial=0), keys.max(initial=0))) + 1
            extra = keys
        else:
            uniq, inverse = tally.unique(keys)
            mapped, shift, where = _insert(mapped, uniq)
            codes = codes if shift is None else shift[codes]
            ncodes, extra = len(mapped), where[inverse]
        return Coded(
            np.concatenate([codes, extra.astype(np.intp)]),
            np.concatenate([self.buckets, buckets]),
            np.concatenate([self.orig, orig]),
            ncodes,
            mapped,
            self.port,
            ordered=False,
        )

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.keys is not None:
            return self.keys[codes]
        return codes.astype(np.int64) - 1 if self.port else codes.astype(np.int64)

    def cells(self, top: int | None) -> tuple[np.ndarray, ...]:
        """(keys, buckets, samples, bytes) per cell, as `tally.reduce` sums them: with `top`,
        keys past the `top` heaviest (ties by code = by key) summed as OTHER."""
        if self.ordered:
            first, last = int(self.buckets[0]), int(self.buckets[-1])
        else:
            first, last = int(self.buckets.min()), int(self.buckets.max())
        width = last - first + 1
        local = self.buckets - first if first else self.buckets
        if self.ncodes * width <= min(DENSE_CELLS, max(len(self.codes) // 8, 1 << 12)):
            # Few codes for the rows: one pass, cut afterwards.
            flat = self.codes * width + local
            s = np.bincount(flat, minlength=self.ncodes * width).reshape(self.ncodes, width)
            y = np.bincount(flat, weights=self.orig, minlength=self.ncodes * width)
            return self._dense(s, y.reshape(self.ncodes, width), first, top)
        totals = np.bincount(self.codes, minlength=self.ncodes)
        keep = _heaviest(totals, top)
        slot = np.full(self.ncodes, len(keep), dtype=np.intp)
        slot[keep] = np.arange(len(keep))
        flat = slot[self.codes] * width + local
        n = (len(keep) + 1) * width
        s = np.bincount(flat, minlength=n).reshape(-1, width)
        y = np.bincount(flat, weights=self.orig, minlength=n).reshape(-1, width)
        keys = self.decode(keep)
        if s[-1].any():
            keys = np.concatenate([keys, tally.other_key_like(keys)])
        else:
            s, y = s[:-1], y[:-1]
        return self._sparse(keys, s, y, first)

    def _dense(self, s, y, first, top):
        totals = s.sum(axis=1)
        keep = _heaviest(totals, top)
        rest = np.ones(len(totals), dtype=bool)
        rest[keep] = False
        keys = self.decode(keep)
        if rest.any() and totals[rest].any():
            keys = np.concatenate([keys, tally.other_key_like(keys)])
            s = np.vstack([s[keep], s.sum(axis=0) - s[keep].sum(axis=0)])
            y = np.vstack([y[keep], y.sum(axis=0) - y[keep].sum(axis=0)])
        else:
            s, y = s[keep], y[keep]
        return self._sparse(keys, s, y, first)

    @staticmethod
    def _sparse(keys, s, y, first):
        row, col = np.nonzero(s)
        return keys[row], col + first, s[row, col].astype(np.int64), y[row, col].astype(np.int64)


def _insert(keys: np.ndarray, more: np.ndarray):
    """Sorted distinct address `keys` with the sorted distinct `more` among them: (all the
    keys, each old code's new code or None if unchanged, each of `more`'s code)."""
    a, b = _comparable(keys, more)
    pos = np.searchsorted(a, b)
    found = pos < len(a)
    found[found] = a[pos[found]] == b[found]
    at = pos[~found]
    if not len(at):
        return keys, None, pos
    shift = np.arange(len(keys)) + np.cumsum(np.bincount(at, minlength=len(keys)))[: len(keys)]
    where = np.empty(len(more), dtype=np.intp)
    where[found] = shift[pos[found]]
    where[~found] = at + np.arange(len(at))
    return np.insert(keys, at, more[~found]), shift, where


def _comparable(*keys: np.ndarray) -> list[np.ndarray]:
    """Address keys as scalars that sort as they do: by `lo` if all are IPv4-mapped, else
    as 17 big-endian bytes (numpy compares structured values ten times slower)."""
    if all(not len(k) or (k["fam"][0] == k["fam"][-1] == 4 and not k["hi"].any()) for k in keys):
        return [k["lo"] for k in keys]
    out = []
    for k in keys:
        b = np.zeros((len(k), 17), dtype=np.uint8)
        b[:, 0] = k["fam"]
        b[:, 1:9] = k["hi"].astype(">u8").view(np.uint8).reshape(-1, 8)
        b[:, 9:] = k["lo"].astype(">u8").view(np.uint8).reshape(-1, 8)
        out.append(b.view("S17").reshape(-1))
    return out


def _heaviest(totals: np.ndarray, top: int | None) -> np.ndarray:
    """The codes with samples, or (with `top`) only the `top` heaviest, ties by code; in
    code order. Linear: the floor from a histogram of the totals, the codes tied at it
    taken lowest first, from the start of the codes only (a quarter of a random source's
    codes may have samples: listing them all costs more than the rest of the hour)."""
    if top is None or np.count_nonzero(totals) <= top:
        return np.flatnonzero(totals)
    at_least = np.cumsum(np.bincount(totals)[::-1])[::-1]  # codes with >= v samples
    floor = int(np.flatnonzero(at_least >= top)[-1])
    above = np.flatnonzero(totals > floor)
    need, end = top - len(above), 4 * top
    tied = np.flatnonzero(totals[:end] == floor)
    while len(tied) < need and end < len(totals):
        end *= 4
        tied = np.flatnonzero(totals[:end] == floor)
    return np.union1d(above, tied[:need])


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
        self.offsets = np.searchsorted(self._map("b"), np.arange(first, last + 1))
        self.lo, self.hi = int(self.offsets[0]), int(self.offsets[-1])
        return self.hi - self.lo

    def buckets(self, of_bucket: np.ndarray) -> np.ndarray:
        """Each selected row's `of_bucket[10-s bucket - first]`, by runs (rows are sorted)."""
        return np.repeat(of_bucket, np.diff(self.offsets))

    def keys(self, side: str) -> np.ndarray:
        return np.load(self.directory / f"k.{side}.npy", mmap_mode="r").view(np.ndarray)

    def code_of(self, side: str, addr) -> int:
        """The side's code of `addr` in the hour, or -1 if no sample has it: a binary
        search of the sorted keys."""
        keys = self.keys(side)
        want = (addr.version, *records.split(addr))
        lo, hi = 0, len(keys)
        while lo < hi:
            mid = (lo + hi) // 2
            if keys[mid].item() < want:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(keys) and keys[lo].item() == want else -1

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
        if f.source_port is not None:
            both(self.col("sk") == f.source_port + 1)
        if f.destination_port is not None:
            both(self.col("dk") == f.destination_port + 1)
        if f.port is not None:
            both((self.col("sk") == f.port + 1) | (self.col("dk") == f.port + 1))
        return out


def count(directory: Path, machines: np.ndarray, q: traffic.TrafficQuery, dim: str, lo, hi):
    """The hour's samples in [lo, hi) matching the query's filter, as `Coded` (None if
    none); `machines` are the tally's codes of the summary's machines."""
    h0 = lo // tally.HOUR_NS * tally.HOUR_NS
    first, last = (lo - h0) // tally.QUANTUM_NS, (hi - h0) // tally.QUANTUM_NS
    cols = Hour(directory)
    if not cols.select(first, last):
        return None
    mask = cols.mask(q.filter)
    if mask is not None and mask.all():
        mask = None
    if mask is not None and not mask.any():
        return None

    pick = None if mask is None else np.flatnonzero(mask)

    def col(name: str) -> np.ndarray:
        return cols.col(name) if pick is None else cols.col(name).take(pick)

    starts = h0 + np.arange(int(first), int(last), dtype=np.int64) * tally.QUANTUM_NS
    buckets = cols.buckets(((starts - q.start_ns) // q.step_ns).astype(np.intp))
    buckets = buckets if pick is None else buckets.take(pick)
    orig = col("orig_len")
    if dim == "protocol":
        return Coded(col("proto").astype(np.intp), buckets, orig, 256, None)
    if dim in ("source_port", "destination_port"):
        codes = col("sk" if dim == "source_port" else "dk").astype(np.intp)
        return Coded(codes, buckets, orig, PORT_CODES, None, port=True)
    if tally.is_address(dim):
        side = "src" if dim == "source_address" else "dst"
        keys = cols.keys(side)
        return Coded(col(side).astype(np.intp), buckets, orig, len(keys), keys)
    if dim == "machine":
        codes = col("machine").astype(np.intp)
        return Coded(codes, buckets, orig, len(machines), np.asarray(machines, np.int64))
    raise ValueError(f"unknown group {dim!r}")
