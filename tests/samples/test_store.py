"""Both sample-store backends answer the same queries the same way."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import time

import numpy as np
import pytest

from edgepcap.filters import FilterV1
from edgepcap.samples import records
from edgepcap.samples.clickhouse import ClickHouseStore
from edgepcap.samples.segments import SegmentStore
from edgepcap.samples.store import SampleQuery
from tests.packets import udp

A, B = "a" * 32, "b" * 32
NETS = {
    A: [ipaddress.ip_network("203.0.113.0/25"), ipaddress.ip_network("2001:db8:a::/48")],
    B: [ipaddress.ip_network("203.0.113.128/25")],
}
counter = itertools.count()


@pytest.fixture(params=["segments", "clickhouse"])
def store(request, tmp_path):
    retention = dt.timedelta(hours=24)
    if request.param == "segments":
        s = SegmentStore(tmp_path / "samples", retention, partition_seconds=60)
    else:
        host = request.getfixturevalue("clickhouse")
        s = ClickHouseStore(
            f"clickhouse://{host}/t{next(counter)}_{int(time.time())}",
            retention,
            partition_seconds=60,
        )
    yield s
    s.close()


def batch(now_ns: int, specs: list[tuple[str, str, int, int, int]]) -> np.ndarray:
    """Wire records for (src, dst, sport, dport, ts offset in ms before now)."""
    snaps = [udp(s, d, sp, dp, b"p" * 200) for s, d, sp, dp, _ in specs]
    ts = [now_ns - off * 1_000_000 for *_, off in specs]
    rows = records.parse(snaps, ts, [len(x) for x in snaps])
    return records.attribute(rows, NETS)


def q(account: str, now_ns: int, seconds: int = 300, limit: int = 10_000, **f) -> SampleQuery:
    return SampleQuery(account, now_ns - seconds * 1_000_000_000, now_ns, FilterV1(**f), limit)


def test_query_by_account_window_filter_and_limit(store):
    now = time.time_ns()
    specs = []
    for i in range(50):
        specs.append(("198.51.100.1", "203.0.113.10", 1000 + i % 5, 53, 10 * i))
        specs.append(("198.51.100.2", "203.0.113.140", 2000, 80, 10 * i))
    specs.append(("2001:db8:c::1", "2001:db8:a::5", 3000, 443, 5))
    specs.append(("198.51.100.1", "203.0.113.10", 1000, 53, 400_000))  # outside 300 s
    assert store.append(batch(now, specs)) == len(specs)

    got = store.query(q(A, now))
    assert len(got) == 51
    assert (np.diff(got["ts"]) >= 0).all()  # oldest first
    assert all(
        records.join(r["dst_hi"], r["dst_lo"])
        in (ipaddress.ip_address("203.0.113.10"), ipaddress.ip_address("2001:db8:a::5"))
        for r in got
    )
    # The other account sees only its own.
    other = store.query(q(B, now))
    assert len(other) == 50 and set(other["dport"]) == {80}

    assert len(store.query(q(A, now, source_port=1003))) == 10
    assert len(store.query(q(A, now, destination_address="2001:db8:a::5"))) == 1
    assert (
        len(store.query(q(A, now, source_address="198.51.100.1", protocol=17, destination_port=53)))
        == 50
    )
    assert len(store.query(q(A, now, protocol=6))) == 0
    assert len(store.query(q(A, now, seconds=500))) == 52

    newest = store.query(q(A, now, limit=7))
    assert len(newest) == 7
    assert newest["ts"].min() >= np.sort(got["ts"])[-7]

    row = got[-1]
    assert row["cap_len"] == records.SNAPLEN
    assert row["orig_len"] == 20 + 8 + 200
    assert bytes(row["data"][:1]) == b"\x45"


def test_expire_drops_whole_old_partitions(store):
    now = time.time_ns()
    old = batch(now, [("198.51.100.1", "203.0.113.10", 1, 2, 180_000)])  # 3 minutes ago
    fresh = batch(now, [("198.51.100.1", "203.0.113.10", 1, 2, 0)])
    store.append(np.concatenate([old, fresh]))
    assert len(store.query(q(A, now))) == 2
    store.retention = dt.timedelta(seconds=60)
    assert store.expire(time.time_ns()) >= 1
    assert len(store.query(q(A, now))) == 1
