"""The sample-store interface, the query every backend answers, and the backend factory."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

if TYPE_CHECKING:
    from edgepcap.control.samples.direct import DirectIngest
    from edgepcap.control.samples.traffic import Groups, TrafficQuery


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SampleQuery:
    """Samples of one account in [start_ns, end_ns] matching `filter`: the newest `limit`.

    Only samples whose source or destination lies in one of `prefixes` (the account's, as
    they are now) are answered, family by family: what the account's history holds from a
    prefix it no longer has, or that ingest should not have let in, is never handed out.
    """

    account_id: str
    start_ns: int
    end_ns: int
    filter: FilterV1
    limit: int
    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class SampleStore(Protocol):
    retention: dt.timedelta

    def append(self, wire: np.ndarray, machine: str = "") -> int:
        """Keep wire records (account + sample) that `machine` sampled; returns how many
        were kept."""
        ...

    def query(self, q: SampleQuery) -> np.ndarray:
        """Stored records, oldest first: the newest `q.limit` that match."""
        ...

    def traffic(self, q: TrafficQuery) -> Groups:
        """Matching samples counted per step and group (`traffic.aggregate`'s answer)."""
        ...

    def seal(self, now_ns: int, prefixes: Callable[[str], Sequence[Network] | None]) -> int:
        """Compact what can no longer receive samples (`prefixes`: an account's prefixes
        now, or None); returns how many partitions were compacted. Safe to repeat."""
        ...

    def expire(self, now_ns: int) -> int:
        """Drop whole partitions older than the retention; returns how many were dropped."""
        ...

    def close(self) -> None: ...


def filter_mask(rows: np.ndarray, f: FilterV1) -> np.ndarray:
    """Which stored rows match the filter's fields (the account's prefixes aside)."""
    mask = np.ones(len(rows), dtype=bool)
    for addr, side in ((f.source, "src"), (f.destination, "dst")):
        if addr is not None:
            mask &= records.is_address(rows, side, addr)
    if f.protocol is not None:
        mask &= rows["proto"] == f.protocol
    if f.source_port is not None:
        mask &= (rows["sport"] == f.source_port) & np.isin(rows["proto"], records.PORT_PROTOCOLS)
    if f.destination_port is not None:
        mask &= (rows["dport"] == f.destination_port) & np.isin(
            rows["proto"], records.PORT_PROTOCOLS
        )
    if f.either is not None:
        addr = f.either
        mask &= records.is_address(rows, "src", addr) | records.is_address(rows, "dst", addr)
    if f.port is not None:
        either = (rows["sport"] == f.port) | (rows["dport"] == f.port)
        mask &= either & np.isin(rows["proto"], records.PORT_PROTOCOLS)
    return mask


def _filter_mask(rows: np.ndarray, q: SampleQuery) -> np.ndarray:
    """Rows in the query's window that match its filter (`matching` adds the prefixes)."""
    in_window = (rows["ts"] >= q.start_ns) & (rows["ts"] <= q.end_ns)
    return in_window & filter_mask(rows, q.filter)


def matching(rows: np.ndarray, q: SampleQuery) -> np.ndarray:
    """The rows that match the query: its window and filter, and the account's prefixes
    family by family (checked on the rows left, which are fewer and all in memory)."""
    rows = rows[_filter_mask(rows, q)]
    owned = records.owned(rows, q.prefixes)
    return rows if owned.all() else rows[owned]


def newest(rows: np.ndarray, limit: int) -> np.ndarray:
    """The newest `limit` rows, returned oldest first."""
    order = np.argsort(rows["ts"], kind="stable")
    return rows[order[-limit:]] if limit else rows[:0]


def open_store(
    url: str | None,
    data_dir: Path,
    retention: dt.timedelta,
    partition: int,
) -> SampleStore:
    """No URL or `segments://DIR`: embedded files; `clickhouse://host:port/db`: ClickHouse.
    Samples are kept for `retention`, in partitions of `partition` seconds."""
    if url and url.startswith("clickhouse://"):
        from edgepcap.control.samples.clickhouse import ClickHouseStore

        return ClickHouseStore(url, retention=retention, partition_seconds=partition)
    from edgepcap.control.samples.segments import SegmentStore

    root = Path(url.removeprefix("segments://")) if url else data_dir / "samples"
    return SegmentStore(root, retention=retention, partition_seconds=partition)


def open_sinks(store: SampleStore, url: str | None, key: str | None) -> DirectIngest | None:
    """Agents' own inserts (`direct`) when `url` is set: the ClickHouse store only."""
    if url is None:
        return None
    from edgepcap.control.samples.clickhouse import ClickHouseStore
    from edgepcap.control.samples.direct import DirectIngest

    if not isinstance(store, ClickHouseStore) or key is None:
        raise ValueError("agents insert samples themselves into the ClickHouse store only")
    return DirectIngest(store, url, key)
