"""The sampled-traffic view: what a store counts for it, and how counts become estimates.

A store answers a `TrafficQuery` with `Groups`: for each value of the grouping dimension,
the matching samples and their original bytes per step. `aggregate` is the reference
count over stored records, which every store's faster path must equal; `estimate` turns
counts into the API's series: the top `limit` groups by samples, the rest summed as
`other`, each count multiplied by the sample rate.

A sampled count n of a 1-in-N sample estimates N·n packets. The draws are independent
(the kernel's `numgen random`), so n is binomial with p = 1/N: its standard deviation is
sqrt(n (1 - p)), and the estimate's 95 % bound is ± 1.96 · N · sqrt(n (1 - p)), that is a
relative error of about 1.96 / sqrt(n). A series carries that bound for its total.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from edgepcap.control.samples.store import SampleQuery, matching
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

NS = 1_000_000_000
# What the view groups by, in the API's words. `colo` is counted by machine and summed
# by the machine's colo here: a store knows machines, the fleet knows their colos.
GROUPS = (
    "protocol",
    "source_address",
    "destination_address",
    "source_port",
    "destination_port",
    "colo",
    "machine",
)
# The smallest step, and what every step is a multiple of: stores may count in buckets
# of this many seconds, aligned to the Unix epoch.
STEP_QUANTUM = 10
# A port group's key for samples that have no ports (not a port protocol, or a later
# fragment).
NO_PORT = -1
# The key a store may sum groups under when it keeps only the heaviest ones (addresses).
OTHER = "other"
# 95 % two-sided normal quantile, for the binomial bound.
Z95 = 1.96

Key = int | str | ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TrafficQuery:
    """The account's samples in [start_ns, end_ns) matching `filter`, counted per `step_ns`
    (buckets start at `start_ns`, a multiple of the step) and per `group_by` value
    (`machine` when the API asks for `colo`). Only samples whose source or destination is
    in `prefixes` count, family by family, as for sample captures."""

    account_id: str
    start_ns: int
    end_ns: int
    step_ns: int
    group_by: str
    filter: FilterV1
    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @property
    def buckets(self) -> int:
        return -(-(self.end_ns - self.start_ns) // self.step_ns)

    def window(self) -> SampleQuery:
        """The same samples as a sample query (its window is inclusive: the last ns is cut
        by `aggregate`)."""
        return SampleQuery(
            self.account_id, self.start_ns, self.end_ns - 1, self.filter, 0, self.prefixes
        )


@dataclass
class Counts:
    """Samples and their original bytes, per bucket."""

    samples: np.ndarray
    bytes: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> Counts:
        return cls(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))

    def add(self, other: Counts) -> None:
        self.samples += other.samples
        self.bytes += other.bytes


Groups = dict[Key, Counts]


def keys_of(rows: np.ndarray, group_by: str, machine: str) -> list[Key] | np.ndarray:
    """Each row's group key: numbers for protocols and ports, addresses, or the machine."""
    if group_by == "protocol":
        return rows["proto"].astype(np.int64)
    if group_by in ("source_port", "destination_port"):
        ports = rows["sport" if group_by == "source_port" else "dport"].astype(np.int64)
        return np.where(np.isin(rows["proto"], records.PORT_PROTOCOLS), ports, NO_PORT)
    if group_by in ("source_address", "destination_address"):
        side = "src" if group_by == "source_address" else "dst"
        return [
            records.join(hi, lo, fam)
            for hi, lo, fam in zip(
                rows[f"{side}_hi"], rows[f"{side}_lo"], rows["family"], strict=True
            )
        ]
    if group_by in ("machine", "colo"):
        return [machine] * len(rows)
    raise ValueError(f"unknown group {group_by!r}")


def aggregate(chunks: Iterable[tuple[np.ndarray, str]], q: TrafficQuery) -> Groups:
    """The reference count: stored records, each chunk from one machine, into `Groups`."""
    groups: Groups = {}
    window = q.window()
    n = q.buckets
    for rows, machine in chunks:
        rows = matching(rows, window)
        if not len(rows):
            continue
        bucket = (rows["ts"] - q.start_ns) // q.step_ns
        keys = keys_of(rows, q.group_by, machine)
        orig = rows["orig_len"].astype(np.int64)
        for key in dict.fromkeys(keys.tolist() if isinstance(keys, np.ndarray) else keys):
            mine = (
                keys == key
                if isinstance(keys, np.ndarray)
                else np.fromiter((k == key for k in keys), dtype=bool, count=len(keys))
            )
            counts = Counts(
                np.bincount(bucket[mine], minlength=n)[:n].astype(np.int64),
                np.bincount(bucket[mine], weights=orig[mine], minlength=n)[:n].astype(np.int64),
            )
            groups.setdefault(key, Counts.zeros(n)).add(counts)
    return groups


def by_colo(groups: Groups, colo_of: Callable[[str], str]) -> Groups:
    """Machine groups summed by their colo (`colo_of` names it; unknown machines: "")."""
    out: Groups = {}
    for key, counts in groups.items():
        colo = OTHER if key == OTHER else colo_of(str(key))
        target = out.setdefault(colo, Counts.zeros(len(counts.samples)))
        target.add(counts)
    return out


@dataclass
class Series:
    key: str
    samples: int
    packets: int
    bits: int
    packets_error: int
    points: list[list[float]] = field(default_factory=list)


def label(key: Key) -> str:
    if key == NO_PORT:
        return "none"
    return str(key)


def bound(samples: int, rate: int) -> int:
    """The 95 % binomial bound (in packets) of the estimate rate · samples."""
    p = 1 / rate if rate else 1.0
    return math.ceil(Z95 * rate * math.sqrt(samples * (1 - p)))


def estimate(groups: Groups, q: TrafficQuery, limit: int, rate: int) -> list[Series]:
    """The top `limit` groups by samples (ties by key), then `other` for the rest, as
    estimated packets/s and bits/s per step. A bucket cut short by the window's end is
    divided by the time it covers."""

    def total(item: tuple[Key, Counts]) -> tuple[int, str]:
        return (-int(item[1].samples.sum()), label(item[0]))

    ranked = sorted(((k, c) for k, c in groups.items() if k != OTHER), key=total)
    shown = ranked[:limit]
    rest = Counts.zeros(q.buckets)
    for _key, counts in ranked[limit:]:
        rest.add(counts)
    if OTHER in groups:
        rest.add(groups[OTHER])
    if rest.samples.any():
        shown.append((OTHER, rest))
    starts = q.start_ns + np.arange(q.buckets, dtype=np.int64) * q.step_ns
    seconds = (np.minimum(starts + q.step_ns, q.end_ns) - starts) / NS
    out = []
    for key, counts in shown:
        n = int(counts.samples.sum())
        pps = counts.samples * rate / seconds
        bps = counts.bytes * 8 * rate / seconds
        out.append(
            Series(
                key=label(key),
                samples=n,
                packets=n * rate,
                bits=int(counts.bytes.sum()) * 8 * rate,
                packets_error=bound(n, rate),
                points=[
                    [int(t // NS), round(float(p), 3), round(float(b), 3)]
                    for t, p, b in zip(starts, pps, bps, strict=True)
                ],
            )
        )
    return out
