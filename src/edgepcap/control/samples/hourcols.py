"""An hour's sealed samples column by column, for filtered traffic queries.

The hour summaries (sealing.py) answer only unfiltered queries: a filter decides which
samples count, so a filtered query must look at every sample of the window. Read from
the sealed partitions that is 1440 row-major files of 54 B a row for 24 h, 0.4 to 0.7 s at
5 M samples. So when an hour is summed, its samples inside the account's prefixes are
also written here, one `.npy` per field, sorted by 10-s bucket: a query maps only the
columns its filter and group need, cuts the window by binary search on the buckets, and
counts with `np.bincount` over small integer codes, no sort.

Columns (`c.<name>.npy`), rows sorted by 10-s bucket: `proto` (u1), `sk` and `dk` (u4:
the source and destination port + 1, 0 for a sample without ports, so that a port is one
compare and its code sorts as its key), `orig_len` (u4), `machine` (u2, into the
summary's machine list), and `src` and `dst` (u4): codes into `k.src.npy` / `k.dst.npy`,
the hour's distinct (family, address) keys in `tally.ADDRESS` order. An address filter
is one lookup in the keys and one integer compare per row; an address group needs no
sort of addresses. Where each 10-s bucket's rows start is in `meta.json` ("offsets",
`BUCKETS` + 1 of them): a window is cut without reading a column.

Counts follow `tally`'s per-hour rule: the `HOUR_GROUPS` heaviest keys (ties by key),
the rest as OTHER, cut in code order (coded.py), which is the keys' order. When other rows
join the same hour (strays, a cut last bucket), the cells go uncut to `Tally.end_hour`,
which cuts them together. Hand-written numpy for the reasons the segments are (no
server, measured fastest); readers use it only while the account's prefixes still cover
what the hour recorded, like the summaries (segments.py).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from edgepcap.control.samples import tally, traffic
from edgepcap.control.samples.coded import Coded
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

# Written in an hour summary's meta.json as "columns" when the hour has these files.
VERSION = 3
BUCKETS = tally.HOUR_NS // tally.QUANTUM_NS  # 10-s buckets in an hour
PORTISH = np.zeros(256, dtype=bool)
PORTISH[records.PORT_PROTOCOLS] = True
PORT_CODES = 65537  # 0 = NO_PORT, port + 1 otherwise: the codes sort as the keys do
# Each file's dtype, by its name without ".npy".
FILES = {
    "c.proto": np.dtype("u1"),
    "c.orig_len": np.dtype("<u4"),
    "c.machine": np.dtype("<u2"),
    "c.sk": np.dtype("<u4"),
    "c.dk": np.dtype("<u4"),
    "c.src": np.dtype("<u4"),
    "c.dst": np.dtype("<u4"),
    "k.src": tally.ADDRESS,
    "k.dst": tally.ADDRESS,
}
# The column each group counts by.
GROUP_COLUMN = {
    "protocol": "proto",
    "source_port": "sk",
    "destination_port": "dk",
    "source_address": "src",
    "destination_address": "dst",
    "machine": "machine",
}


def write(directory: Path, rows: np.ndarray, buckets: np.ndarray, sides: dict) -> list[int]:
    """The hour's `rows` (sealing.COLS, machine renumbered) with their 10-s `buckets`, as
    columns sorted by bucket; `sides` holds each side's (distinct keys, each row's code).
    Returns where each bucket's rows start, and their end (meta.json's "offsets")."""
    order = np.argsort(buckets.astype(np.uint16), kind="stable")
    rows = rows[order]
    offsets = np.searchsorted(buckets[order], np.arange(BUCKETS + 1))
    for name, field in (("proto", "proto"), ("orig_len", "orig_len"), ("machine", "machine")):
        _save(directory, f"c.{name}", rows[field])
    portish = PORTISH[rows["proto"]]
    for name, field in (("sk", "sport"), ("dk", "dport")):
        _save(directory, f"c.{name}", np.where(portish, rows[field].astype(np.uint32) + 1, 0))
    for side, (keys, codes) in sides.items():
        _save(directory, f"k.{side}", keys)
        _save(directory, f"c.{side}", codes[order])
    return offsets.tolist()


def _save(directory: Path, stem: str, values: np.ndarray) -> None:
    np.save(directory / f"{stem}.npy", values.astype(FILES[stem]))


def _mapped(path: Path, dtype: np.dtype) -> np.ndarray:
    """A file `_save` wrote, mapped read-only. By hand because np.load's header parsing and
    np.memmap cost more than the rest of a small column's read: the header is only
    skipped (its length is in bytes 8-9 of a format 1.0 file), the dtype is `FILES`'."""
    with open(path, "rb") as fh:
        head = fh.read(10)
        if head[:8] != b"\x93NUMPY\x01\x00":
            raise ValueError(f"{path}: not a .npy file of format 1.0")
        start = 10 + int.from_bytes(head[8:10], "little")
        if os.fstat(fh.fileno()).st_size == start:
            return np.zeros(0, dtype=dtype)
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(view, dtype=dtype, offset=start)


def address_codes(rows: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """The side's distinct keys (tally.ADDRESS, sorted) and each row's index into them."""
    keys = np.zeros(len(rows), dtype=tally.ADDRESS)
    keys["fam"], keys["hi"], keys["lo"] = rows["family"], rows[f"{side}_hi"], rows[f"{side}_lo"]
    return tally.unique(keys)


class Hour:
    """The columns of one summed hour, mapped on demand; `offsets` from its meta.json."""

    def __init__(self, directory: Path, offsets: list[int]) -> None:
        self.directory = directory
        self.offsets = np.asarray(offsets, dtype=np.intp)
        self._maps: dict[str, np.ndarray] = {}
        self.lo = 0
        self.hi = 0

    def _map(self, stem: str) -> np.ndarray:
        if stem not in self._maps:
            self._maps[stem] = _mapped(self.directory / f"{stem}.npy", FILES[stem])
        return self._maps[stem]

    def col(self, name: str) -> np.ndarray:
        """The column's rows of the window (`select`)."""
        return self._map(f"c.{name}")[self.lo : self.hi]

    def select(self, first: int, last: int) -> int:
        """Keeps the rows of 10-s buckets [first, last); how many."""
        self.starts = self.offsets[first : last + 1]
        self.lo, self.hi = int(self.starts[0]), int(self.starts[-1])
        return self.hi - self.lo

    def runs(self, of_bucket: np.ndarray, pick: np.ndarray | None):
        """The selected rows (or those `pick`s, ascending) as runs of one query bucket,
        `of_bucket[10-s bucket - first]`: each run's bucket and start, then the end."""
        starts = self.starts - self.lo
        if pick is not None:
            starts = np.searchsorted(pick, starts)
        change = np.flatnonzero(np.diff(of_bucket)) + 1
        firsts = np.concatenate([[0], change])
        return of_bucket[firsts], np.concatenate([starts[firsts], starts[-1:]])

    def keys(self, side: str) -> np.ndarray:
        return self._map(f"k.{side}")

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


def count(directory: Path, meta: dict, machines: np.ndarray, q: traffic.TrafficQuery, dim, lo, hi):
    """The hour's samples in [lo, hi) matching the query's filter, as a function that
    returns them as `Coded` (None if there are none): the filter is applied and the files
    are mapped now, the rows read when it is called, on any thread. `meta` is the hour's
    meta.json, `machines` the tally's codes of its machines."""
    h0 = lo // tally.HOUR_NS * tally.HOUR_NS
    first, last = (lo - h0) // tally.QUANTUM_NS, (hi - h0) // tally.QUANTUM_NS
    cols = Hour(directory, meta["offsets"])
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
    of_bucket = ((starts - q.start_ns) // q.step_ns).astype(np.intp)
    # Mapped now, read later: a column replaced meanwhile is still read whole.
    codes, orig = cols.col(GROUP_COLUMN[dim]), cols.col("orig_len")
    keys = cols.keys(GROUP_COLUMN[dim]) if tally.is_address(dim) else None

    def rows() -> Coded:
        def picked(column: np.ndarray) -> np.ndarray:
            return column if pick is None else column.take(pick)

        common = (picked(codes).astype(np.intp), picked(orig))
        runs = cols.runs(of_bucket, pick)
        if dim == "protocol":
            return Coded(*common, 256, None, runs=runs)
        if dim in ("source_port", "destination_port"):
            return Coded(*common, PORT_CODES, None, port=True, runs=runs)
        if keys is not None:
            return Coded(*common, len(keys), keys, runs=runs)
        return Coded(*common, len(machines), np.asarray(machines, np.int64), runs=runs)

    return rows
