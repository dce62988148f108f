"""Sparse traffic counts: (group key, bucket, samples, bytes) rows, summed and capped.

The embedded store counts the traffic view from three sources (hour summaries, sealed
partitions' columns, raw segments); each hands its counts here as sparse rows keyed by a
numpy form of the group key (`encode`), and `Tally.groups` sums them into the dense
`traffic.Groups` the API reads. Hand-written because `traffic.aggregate` compares every row
with every key (fine as a reference, quadratic on random source addresses), and because
the dense answer of a 24 h query of random ports or addresses would not fit in memory.

What is exact. Protocol and machine groups: always. Port and address groups (the
high-cardinality ones): within each hour of the window, only the `HOUR_GROUPS` heaviest
keys of that hour's matching samples keep their own counts, the rest of the hour's samples
are summed under `traffic.OTHER`; then only the `MAX_GROUPS` heaviest keys of the window
(ties by label, as `traffic.estimate` ranks them) are answered, the rest joining OTHER.
So a key's counts are exact for every hour in which it was among that hour's
`HOUR_GROUPS` heaviest, and every bucket's total over all groups (OTHER included) is
exact. With fewer than `HOUR_GROUPS` keys per hour the answer equals `aggregate`'s.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from edgepcap.control.samples import traffic
from edgepcap.control.samples.store import SampleQuery, _filter_mask
from edgepcap.control.samples.traffic import Counts, Groups, TrafficQuery
from edgepcap.formats import samples as records

HOUR_NS = 3600 * traffic.NS
QUANTUM_NS = traffic.STEP_QUANTUM * traffic.NS
HOUR_GROUPS = 1000
MAX_GROUPS = 200
# Hours of column counts summed at once, on threads: numpy releases the GIL in the
# reads, bincounts and takes that make most of a filtered query's time.
WORKERS = min(4, os.cpu_count() or 1)
_POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="traffic")  # threads start on use
# Group keys in numpy form: integers (protocols, ports, machine codes) or addresses.
ADDRESS = np.dtype([("fam", "u1"), ("hi", "<u8"), ("lo", "<u8")])
INT_OTHER = -2  # NO_PORT is -1; protocols, ports and machine codes are >= 0
SMALL_KEYS = 1 << 17  # integer keys below this are made unique by a table
ADDRESS_OTHER = 255  # in `fam`
CAPPED = ("source_address", "destination_address", "source_port", "destination_port")
# What a group_by counts by in the stores' columns ("colo" is counted by machine).
DIMENSION = {
    "protocol": "protocol",
    "source_port": "source_port",
    "destination_port": "destination_port",
    "source_address": "source_address",
    "destination_address": "destination_address",
    "machine": "machine",
    "colo": "machine",
}


def is_address(dim: str) -> bool:
    return dim.endswith("_address")


def other_key(dim: str) -> np.ndarray:
    if is_address(dim):
        out = np.zeros(1, dtype=ADDRESS)
        out["fam"] = ADDRESS_OTHER
        return out
    return np.array([INT_OTHER], dtype=np.int64)


def encode(rows: np.ndarray, dim: str, machine_codes: np.ndarray) -> np.ndarray:
    """Each row's group key in numpy form (`machine_codes`: each row's machine number)."""
    if dim == "protocol":
        return rows["proto"].astype(np.int64)
    if dim in ("source_port", "destination_port"):
        ports = rows["sport" if dim == "source_port" else "dport"].astype(np.int64)
        return np.where(np.isin(rows["proto"], records.PORT_PROTOCOLS), ports, traffic.NO_PORT)
    if is_address(dim):
        side = "src" if dim == "source_address" else "dst"
        out = np.zeros(len(rows), dtype=ADDRESS)
        out["fam"], out["hi"], out["lo"] = rows["family"], rows[f"{side}_hi"], rows[f"{side}_lo"]
        return out
    if dim == "machine":
        return machine_codes.astype(np.int64)
    raise ValueError(f"unknown group {dim!r}")


def unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True), by lexsort for addresses: numpy sorts a
    structured array by generic comparisons, ten times slower."""
    if keys.dtype != ADDRESS:
        if len(keys) and keys.min() >= INT_OTHER and keys.max() < SMALL_KEYS:
            # Ports, protocols, machines: by a table, without sorting.
            seen = np.zeros(int(keys.max()) - INT_OTHER + 1, dtype=bool)
            seen[keys - INT_OTHER] = True
            uniq = np.flatnonzero(seen)
            inv = (np.cumsum(seen) - 1)[keys - INT_OTHER]
            return (uniq + INT_OTHER).astype(keys.dtype), inv
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, inv.reshape(-1)
    order = np.lexsort((keys["lo"], keys["hi"], keys["fam"]))
    ordered = keys[order]
    new = np.ones(len(keys), dtype=bool)
    if len(keys):
        new[1:] = (
            (ordered["lo"][1:] != ordered["lo"][:-1])
            | (ordered["hi"][1:] != ordered["hi"][:-1])
            | (ordered["fam"][1:] != ordered["fam"][:-1])
        )
    inv = np.empty(len(keys), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return ordered[new], inv


def reduce(keys, buckets, samples, nbytes, top: int | None):
    """Rows summed per (key, bucket); with `top`, keys past the `top` heaviest (ties by key)
    are first renamed OTHER."""
    if not len(keys):
        return keys, buckets, samples, nbytes
    uniq, inv = unique(keys)
    if top is not None and len(uniq) > top:
        totals = np.bincount(inv, weights=samples, minlength=len(uniq))
        order = np.lexsort((np.arange(len(uniq)), -totals))
        keep = np.zeros(len(uniq), dtype=bool)
        keep[order[:top]] = True
        uniq = np.concatenate([uniq, other_key_like(uniq)])
        inv = np.where(keep[inv], inv, len(uniq) - 1)
    flat = inv.astype(np.int64) * (int(buckets.max()) + 1) + buckets
    cells, where = np.unique(flat, return_inverse=True)
    where = where.reshape(-1)
    width = int(buckets.max()) + 1
    s = np.bincount(where, weights=samples, minlength=len(cells)).astype(np.int64)
    b = np.bincount(where, weights=nbytes, minlength=len(cells)).astype(np.int64)
    return uniq[cells // width], cells % width, s, b


def other_key_like(keys: np.ndarray) -> np.ndarray:
    return other_key("source_address" if keys.dtype == ADDRESS else "protocol")


class Tally:
    """Counts of one query, as sparse rows added by source and hour."""

    def __init__(self, q: TrafficQuery) -> None:
        self.q = q
        self.dim = DIMENSION[q.group_by]
        self.capped = q.group_by in CAPPED
        self.machines: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._hour: list[tuple[np.ndarray, ...]] = []
        self._coded = None  # an hour's rows as key codes, to read (hourcols.count)
        self._pending: list[Future] = []  # hours summed on the pool

    def code(self, names: list[str]) -> np.ndarray:
        """The tally's machine numbers for a source's list of machine names."""
        return np.array([self.machines.setdefault(n, len(self.machines)) for n in names], int)

    def add(self, keys, buckets, samples, nbytes) -> None:
        """Counts already reduced per hour (an hour summary's rows)."""
        self._parts.append((keys, buckets, samples, nbytes))

    def add_rows(self, rows: np.ndarray, codes: np.ndarray, window: SampleQuery, skip=None) -> None:
        """Stored rows (or columns) of the current hour with their machine numbers: those
        matching the query's window, filter and prefixes, outside [skip) if given."""
        if not len(rows):
            return
        keep = matching_index(rows, window)
        ts = rows["ts"][keep]
        if skip is not None:
            inside = (ts >= skip[0]) & (ts < skip[1])
            keep, ts = keep[~inside], ts[~inside]
        if not len(keep):
            return
        rows = rows[keep]
        keys = encode(rows, self.dim, codes[keep])
        bucket = (ts - self.q.start_ns) // self.q.step_ns
        self._hour.append((keys, bucket, np.ones(len(rows)), rows["orig_len"].astype(np.int64)))

    def add_coded(self, rows) -> None:
        """An hour's columns (`hourcols.count`: a function that reads them as
        `coded.Coded`), cut by the hour's rule in `end_hour`."""
        self._coded = rows

    def drop_hour(self) -> None:
        """Forgets the rows and columns added since the last `end_hour`."""
        self._hour, self._coded = [], None

    def end_hour(self) -> None:
        """Sums the rows added since the last call, as one hour's (bounded memory)."""
        top = HOUR_GROUPS if self.capped else None
        if self._coded is not None:
            rows, self._coded = self._coded, None
            if not self._hour:
                self._pending.append(_POOL.submit(lambda: rows().cells(top)))
                return
            # Rows (all of one sample) join the columns' codes: no sort.
            cols = [np.concatenate(c) for c in zip(*self._hour, strict=True)]
            keys, buckets, _ones, nbytes = cols
            self._hour = []
            self._parts.append(rows().merged(keys, buckets, nbytes).cells(top))
            return
        if self._hour:
            cols = [np.concatenate(c) for c in zip(*self._hour, strict=True)]
            self._hour = []
            self._parts.append(reduce(*cols, top))

    def groups(self) -> Groups:
        self.end_hour()
        self._parts += [f.result() for f in self._pending]
        self._pending = []
        n = self.q.buckets
        if not self._parts:
            return {}
        keys, buckets, samples, nbytes = (np.concatenate(c) for c in zip(*self._parts, strict=True))
        uniq, inv = unique(keys)
        totals = np.bincount(inv, weights=samples, minlength=len(uniq)).astype(np.int64)
        live = np.flatnonzero(totals > 0)
        if self.capped and len(live) > MAX_GROUPS:
            # Only the MAX_GROUPS heaviest keys can be answered: name only those.
            sentinels = self._sentinels(uniq)
            live = np.union1d(heaviest(uniq, totals, np.setdiff1d(live, sentinels)), sentinels)
        names = dict(zip(live.tolist(), self._names(uniq[live]), strict=True))
        chosen = [i for i in live.tolist() if totals[i] > 0]
        other = [i for i in chosen if names[i] == traffic.OTHER]
        chosen = [i for i in chosen if names[i] != traffic.OTHER]
        if self.capped and len(chosen) > MAX_GROUPS:
            chosen.sort(key=lambda i: (-totals[i], traffic.label(names[i])))
            other += chosen[MAX_GROUPS:]
            chosen = chosen[:MAX_GROUPS]
        slot = np.full(len(uniq), len(chosen), dtype=np.int64)  # unnamed keys: OTHER
        for rank, i in enumerate(chosen):
            slot[i] = rank
        other += [-1] if len(names) < len(uniq) else []  # some keys were not named
        width = len(chosen) + 1
        where = slot[inv] * n + buckets
        dense_s = np.bincount(where, weights=samples, minlength=width * n)
        dense_b = np.bincount(where, weights=nbytes, minlength=width * n)
        dense_s = dense_s.astype(np.int64).reshape(width, n)
        dense_b = dense_b.astype(np.int64).reshape(width, n)
        out: Groups = {names[i]: Counts(dense_s[r], dense_b[r]) for r, i in enumerate(chosen)}
        if other and dense_s[-1].any():
            out[traffic.OTHER] = Counts(dense_s[-1], dense_b[-1])
        return out

    def _sentinels(self, uniq: np.ndarray) -> np.ndarray:
        if uniq.dtype == ADDRESS:
            return np.flatnonzero(uniq["fam"] == ADDRESS_OTHER)
        return np.flatnonzero(uniq == INT_OTHER)

    def _names(self, uniq: np.ndarray) -> list:
        """The API's key of each numpy key (OTHER for the sentinel)."""
        if uniq.dtype == ADDRESS:
            return [
                traffic.OTHER if fam == ADDRESS_OTHER else records.join(hi, lo, fam)
                for fam, hi, lo in uniq.tolist()
            ]
        if self.dim == "machine":
            by_code = {c: n for n, c in self.machines.items()}
            return [traffic.OTHER if k == INT_OTHER else by_code[k] for k in uniq.tolist()]
        return [traffic.OTHER if k == INT_OTHER else k for k in uniq.tolist()]


def heaviest(uniq: np.ndarray, totals: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The MAX_GROUPS heaviest of `uniq[index]`, ties by label as `traffic.estimate` ranks
    them: only the keys tied at the floor are labelled (a window of random sources has
    hundreds of thousands of keys of one sample), IPv4 addresses in numpy."""
    if len(index) <= MAX_GROUPS:
        return index
    floor = np.partition(totals[index], -MAX_GROUPS)[-MAX_GROUPS]
    above = index[totals[index] > floor]
    tied = index[totals[index] == floor]
    need = MAX_GROUPS - len(above)
    return np.concatenate([above, tied[label_order(uniq[tied], need)]])


def label_order(keys: np.ndarray, count: int) -> np.ndarray:
    """The first `count` keys (addresses, ports or protocols) by `traffic.label`."""
    if keys.dtype != ADDRESS:
        return _by_text(keys.tolist(), np.arange(len(keys)), count)
    v4 = (keys["fam"] == 4) & (keys["hi"] == 0) & (keys["lo"] >> np.uint64(32) == 0xFFFF)
    # Dotted quads in numpy: their text order is that of their octets' texts.
    index = np.flatnonzero(v4)
    values = keys["lo"][index] & np.uint64(0xFFFFFFFF)
    rank = np.zeros(len(index), dtype=np.uint64)
    for k in range(4):
        octet = (values >> np.uint64(24 - 8 * k)) & np.uint64(255)
        rank |= _OCTET_RANK[octet.astype(np.intp)] << np.uint64(24 - 8 * k)
    if count < len(index):
        some = np.argpartition(rank, count)[:count]
        index, rank = index[some], rank[some]
    first = index[np.argsort(rank)]
    others = np.flatnonzero(~v4)
    if not len(others):
        return first[:count]
    first6 = _by_text(keys[others].tolist(), others, count)  # IPv6 texts: in Python
    both = np.concatenate([first, first6])
    return _by_text(keys[both].tolist(), both, count)


def _by_text(keys: list, index: np.ndarray, count: int) -> np.ndarray:
    """The first `count` of `index` by the label of its key (ints or address tuples)."""
    labels = [
        traffic.label(records.join(k[1], k[2], k[0]) if isinstance(k, tuple) else k) for k in keys
    ]
    return index[sorted(range(len(labels)), key=labels.__getitem__)[:count]]


# Each octet's rank among the texts "0".."255": "1" < "10" < "100" < "101" < "11" < "2".
_OCTET_RANK = np.argsort(np.argsort([str(i) for i in range(256)])).astype(np.uint64)


def matching_index(rows: np.ndarray, window: SampleQuery) -> np.ndarray:
    """The indices of the rows `store.matching` keeps (window, filter, then prefixes)."""
    index = np.flatnonzero(_filter_mask(rows, window))
    return index[records.owned(rows[index], window.prefixes)]
