"""One hour's matching samples as key codes, and their counts per (key, bucket) cell.

`hourcols.count` reads an hour's columns as `Coded`: each row's group key as a small
integer code that sorts as the key does, its original length, and where its query bucket
starts. `cells` cuts and sums them by `tally`'s per-hour rule. Hand-written numpy, for
the reasons `tally` is: each pass over an hour's rows (hundreds of thousands for a busy
account) costs about as much as any other, so the counting makes as few as it can: rows
stay in bucket order, and each query bucket's rows are counted by one `np.bincount` of
their slice, with no per-row bucket number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgepcap.control.samples import tally

# Counted densely, one bincount over (code, bucket), while there are no more cells than
# this nor than rows.
DENSE_CELLS = 1 << 22
# Counted per code, without first finding the heaviest, while there are no more codes.
DENSE_CODES = 4096
# Counted slice by slice while the hour has no more query buckets than this (a 24 h
# window in 10-s steps has 360 an hour: one bincount per row is cheaper then).
MAX_RUNS = 64


@dataclass
class Coded:
    """One hour's matching samples as key codes: the tally's to cut and sum (`cells`)."""

    codes: np.ndarray  # each row's key code, < ncodes
    orig: np.ndarray  # each row's original length
    ncodes: int
    keys: np.ndarray | None  # the tally key of each code (None: the code is the key)
    port: bool = False  # port codes: key = code - 1
    # Rows in bucket order: each run's query bucket (ascending) and where it starts, then
    # the end; or (None) each row's query bucket, in any order.
    runs: tuple[np.ndarray, np.ndarray] | None = None
    buckets: np.ndarray | None = None
    # Rows of the same hour from elsewhere (`merged`), in the same codes, in any order:
    # (codes, query buckets, original lengths).
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def row_buckets(self) -> np.ndarray:
        if self.runs is None:
            assert self.buckets is not None
            return self.buckets
        qb, bounds = self.runs
        return np.repeat(qb, np.diff(bounds))

    def merged(self, keys: np.ndarray, buckets: np.ndarray, orig: np.ndarray) -> Coded:
        """These rows and others of the same hour given by tally key (`tally.encode`), as
        codes that still sort as their keys do: an address missing from the hour's keys
        is inserted among them, and the codes after it shift. The others are kept apart
        (`extra`): these rows keep their order, and are counted run by run."""
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
        more = (extra.astype(np.intp), buckets.astype(np.intp), orig)
        if self.extra is not None:
            more = tuple(np.concatenate(pair) for pair in zip(self.extra, more, strict=True))
        return Coded(codes, self.orig, ncodes, mapped, self.port, self.runs, self.buckets, more)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.keys is not None:
            return self.keys[codes]
        return codes.astype(np.int64) - 1 if self.port else codes.astype(np.int64)

    def cells(self, top: int | None) -> tuple[np.ndarray, ...]:
        """(keys, buckets, samples, bytes) per cell, as `tally.reduce` sums them: with `top`,
        keys past the `top` heaviest (ties by code = by key) summed as OTHER."""
        if self.runs is not None and len(self.runs[0]) <= MAX_RUNS:
            return self._by_runs(top)
        codes, buckets, orig = self.codes, self.row_buckets(), self.orig
        if self.extra is not None:
            codes, buckets, orig = (
                np.concatenate(pair)
                for pair in zip((codes, buckets, orig), self.extra, strict=True)
            )
        first, last = int(buckets.min()), int(buckets.max())
        width = last - first + 1
        local = buckets - first if first else buckets
        if self.ncodes * width <= min(DENSE_CELLS, max(len(codes) // 8, 1 << 12)):
            # Few codes for the rows: one pass, cut afterwards.
            flat = codes * width + local
            s = np.bincount(flat, minlength=self.ncodes * width).reshape(self.ncodes, width)
            y = np.bincount(flat, weights=orig, minlength=self.ncodes * width)
            return self._dense(s, y.reshape(self.ncodes, width), first, top)
        keep, slot = self._slots(top)
        flat = slot.take(codes)
        flat *= width
        flat += local
        n = (len(keep) + 1) * width
        s = np.bincount(flat, minlength=n).reshape(-1, width)
        y = np.bincount(flat, weights=orig, minlength=n).reshape(-1, width)
        return self._cut(keep, s, y, first)

    def _by_runs(self, top: int | None) -> tuple[np.ndarray, ...]:
        """`cells` of rows in bucket order, one bincount per run (and one for `extra`)."""
        assert self.runs is not None
        qb = self.runs[0]
        first, last = int(qb[0]), int(qb[-1])
        if self.extra is not None:
            first, last = min(first, int(self.extra[1].min())), max(last, int(self.extra[1].max()))
        width = last - first + 1
        if self.ncodes <= DENSE_CODES:
            s, y = self._per_run(None, self.ncodes, width, first)
            return self._dense(s, y, first, top)
        keep, slot = self._slots(top)
        s, y = self._per_run(slot, len(keep) + 1, width, first)
        return self._cut(keep, s, y, first)

    def _per_run(self, slot: np.ndarray | None, n: int, width: int, first: int):
        """Samples and bytes per (slot, bucket - first) of every row, each code counted at
        `slot[code]` (< n), or at itself (None)."""
        qb, bounds = self.runs  # type: ignore[misc]
        codes = self.codes if slot is None else slot.take(self.codes)
        s = np.zeros((n, width), dtype=np.int64)
        y = np.zeros((n, width), dtype=np.float64)
        cols, ends = (qb - first).tolist(), bounds.tolist()
        for b, lo, hi in zip(cols, ends[:-1], ends[1:], strict=True):
            if lo < hi:
                s[:, b] += np.bincount(codes[lo:hi], minlength=n)
                y[:, b] += np.bincount(codes[lo:hi], weights=self.orig[lo:hi], minlength=n)
        if self.extra is not None:
            more, buckets, orig = self.extra
            flat = (more if slot is None else slot.take(more)) * width + (buckets - first)
            s += np.bincount(flat, minlength=n * width).reshape(n, width)
            y += np.bincount(flat, weights=orig, minlength=n * width).reshape(n, width)
        return s, y

    def _slots(self, top: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The codes kept (the `top` heaviest) and each code's slot: its rank among them,
        or one past them for the rest."""
        totals = np.bincount(self.codes, minlength=self.ncodes)
        if self.extra is not None:
            totals += np.bincount(self.extra[0], minlength=self.ncodes)
        keep = _heaviest(totals, top)
        slot = np.full(self.ncodes, len(keep), dtype=np.intp)
        slot[keep] = np.arange(len(keep))
        return keep, slot

    def _cut(self, keep, s, y, first):
        """Cells of per-slot counts: the kept codes' keys, and OTHER if any row is not."""
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
    codes may have samples: listing them all costs more than the rest of the hour). The
    histogram is of the totals over 1 only: when most keys have one sample, as random
    sources do, fewer than `top` have more, and the floor is 1."""
    if top is None or np.count_nonzero(totals) <= top:
        return np.flatnonzero(totals)
    many = totals > 1
    more = totals[many]
    if len(more) < top:
        floor, above = 1, np.flatnonzero(many)
    else:
        at_least = np.cumsum(np.bincount(more)[::-1])[::-1]  # codes with >= v samples
        floor = int(np.flatnonzero(at_least >= top)[-1])
        above = np.flatnonzero(totals > floor)
    need, end = top - len(above), 4 * top
    tied = np.flatnonzero(totals[:end] == floor)
    while len(tied) < need and end < len(totals):
        end *= 4
        tied = np.flatnonzero(totals[:end] == floor)
    return np.union1d(above, tied[:need])
