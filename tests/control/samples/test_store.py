"""Both sample-store backends answer the same queries the same way."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import time
import tracemalloc

import numpy as np
import pytest

from edgepcap.control.samples.clickhouse import ClickHouseStore
from edgepcap.control.samples.segments import SegmentStore
from edgepcap.control.samples.store import SampleQuery
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1
from tests.support.packets import udp
from tests.support.samples import claim

A, B = "a" * 32, "b" * 32
# An account holding ::/80, as could be given before IPv6 prefixes over ::ffff:0:0/96 were
# refused: it covers every IPv4-mapped address, so only the family tells its samples apart.
LEGACY, LEGACY_NET = "c" * 32, ipaddress.ip_network("::/80")
VICTIM, MAPPED_VICTIM = "203.0.113.10", "::ffff:203.0.113.10"  # A's IPv4, and its mapped form
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


def q(
    account: str,
    now_ns: int,
    seconds: int = 300,
    limit: int = 10_000,
    prefixes: tuple | None = None,
    **f,
) -> SampleQuery:
    """The account's query; its prefixes are NETS' unless given."""
    nets = tuple(NETS[account]) if prefixes is None else prefixes
    return SampleQuery(
        account, now_ns - seconds * 1_000_000_000, now_ns, FilterV1(**f), limit, nets
    )


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


def test_address_and_port_match_either_direction(store):
    now = time.time_ns()
    specs = [
        ("198.51.100.1", "203.0.113.10", 40000, 53, 10),  # a query to 203.0.113.10:53
        ("203.0.113.10", "198.51.100.1", 53, 40000, 20),  # its answer
        ("203.0.113.11", "198.51.100.1", 53, 40001, 30),  # another host's answer
        ("198.51.100.1", "203.0.113.10", 40002, 80, 40),  # another port
        ("2001:db8:c::1", "2001:db8:a::5", 53, 53, 50),  # IPv6, both ports 53
    ]
    assert store.append(batch(now, specs)) == len(specs)

    def ports_of(**f) -> list[tuple[int, int]]:
        return [(int(r["sport"]), int(r["dport"])) for r in store.query(q(A, now, **f))]

    assert sorted(ports_of(address="203.0.113.10", port=53)) == [(53, 40000), (40000, 53)]
    assert sorted(ports_of(address="203.0.113.10")) == [(53, 40000), (40000, 53), (40002, 80)]
    assert sorted(ports_of(port=53)) == [(53, 53), (53, 40000), (53, 40001), (40000, 53)]
    # Either-way fields AND the others: only the answer comes from port 53.
    assert ports_of(address="203.0.113.10", source_port=53) == [(53, 40000)]
    assert ports_of(address="2001:db8:a::5", port=53) == [(53, 53)]


def test_expire_drops_whole_old_partitions(store):
    now = time.time_ns()
    old = batch(now, [("198.51.100.1", "203.0.113.10", 1, 2, 180_000)])  # 3 minutes ago
    fresh = batch(now, [("198.51.100.1", "203.0.113.10", 1, 2, 0)])
    store.append(np.concatenate([old, fresh]))
    assert len(store.query(q(A, now))) == 2
    store.retention = dt.timedelta(seconds=60)
    assert store.expire(time.time_ns()) >= 1
    assert len(store.query(q(A, now))) == 1


def test_attribution_files_a_sample_only_under_a_prefix_of_its_family():
    snaps = [udp("198.51.100.1", VICTIM, 1000, 53), udp("2001:db8:c::1", MAPPED_VICTIM, 1000, 53)]
    rows = records.parse(snaps, [time.time_ns()] * 2, [len(s) for s in snaps])
    wire = records.attribute(rows, {**NETS, LEGACY: [LEGACY_NET]})
    owners = sorted((bytes(w["account"]).hex(), int(w["family"])) for w in wire)
    # The IPv4 packet is A's alone; the IPv6 one to ::ffff:203.0.113.10 is not A's.
    assert owners == [(A, 4), (LEGACY, 6)]


def test_an_ipv6_sample_to_a_mapped_address_is_not_in_the_ipv4_history(store):
    now = time.time_ns()
    store.append(
        np.concatenate(
            [
                claim([("198.51.100.1", VICTIM)], A, now - 3_000_000),
                # Filed under A although neither address is in A's prefixes of its family.
                claim([("2001:db8:c::1", MAPPED_VICTIM)], A, now - 2_000_000),
                # A's by its IPv6 source, but its destination is not the IPv4 address.
                claim([("2001:db8:a::1", MAPPED_VICTIM)], A, now - 1_000_000),
            ]
        )
    )
    got = store.query(q(A, now))
    assert list(got["family"]) == [4, 6]
    assert records.join(got["src_hi"][1], got["src_lo"][1], 6) == ipaddress.ip_address(
        "2001:db8:a::1"
    )
    only_v4 = store.query(q(A, now, destination_address=VICTIM))
    assert list(only_v4["family"]) == [4]
    assert bytes(only_v4["data"][0][:1]) == b"\x45"  # an IPv4 header
    assert len(store.query(q(A, now, destination_address="2001:db8:a::1"))) == 0


def test_a_v6_prefix_over_the_mapped_range_never_answers_v4_records(store):
    now = time.time_ns()
    store.append(
        np.concatenate(
            [
                # IPv4 samples that got into the account's history.
                claim([("198.51.100.1", VICTIM), (VICTIM, "198.51.100.7")], LEGACY, now - 1_000),
                claim([("2001:db8:c::1", "::1:2:3")], LEGACY, now),
            ]
        )
    )
    got = store.query(q(LEGACY, now, prefixes=(LEGACY_NET,)))
    assert list(got["family"]) == [6]
    assert records.join(got["dst_hi"][0], got["dst_lo"][0], 6) == ipaddress.ip_address("::1:2:3")
    assert len(store.query(q(LEGACY, now, prefixes=(LEGACY_NET,), source_address=VICTIM))) == 0


def test_a_sample_capture_reads_with_memory_bounded_by_its_answer(tmp_path):
    """A window of 400 000 records (~85 MB) answered with its newest 10 000: the store reads
    it a chunk at a time, never the whole window at once."""
    store = SegmentStore(tmp_path / "samples", dt.timedelta(hours=24), partition_seconds=60)
    now = time.time_ns()
    template = batch(now, [("198.51.100.1", VICTIM, 1000, 53, 0)])[0]
    n = 400_000
    for part in range(2):  # two partitions, two segments each
        for half in range(2):
            wire = np.repeat(template, n // 4)
            end = now - part * 60_000_000_000
            wire["ts"] = end - 1_000 * np.arange(half, n // 2, 2)[::-1]
            store.append(wire, "ord01")
    del wire
    tracemalloc.start()
    try:
        rows = store.query(q(A, now, seconds=150, limit=10_000))
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 10_000 and (np.diff(rows["ts"]) >= 0).all()
    assert rows["ts"][-1] == now  # the newest of all
    window = n * records.STORED.itemsize
    assert peak < window / 2, (peak, window)


def test_the_newest_rows_of_a_long_window_come_back_whole_and_oldest_first(store):
    """A window longer than one read (the ClickHouse store reads newest slices first, each
    longer than the last), snapshots of several lengths: the newest `limit` records come
    back exactly as stored, field by field and byte by byte."""
    now = time.time_ns()
    sizes = (0, 17, 100, 200)
    snaps = [
        udp("198.51.100.1", "203.0.113.10", 1000 + i, 53, bytes([i % 251]) * sizes[i % 4])
        for i in range(400)
    ]
    ts = [now - i * 9 * 10**9 for i in range(400)]  # one every 9 s over an hour
    wire = records.attribute(records.parse(snaps, ts, [len(x) for x in snaps]), NETS)
    assert store.append(wire) == 400

    got = store.query(q(A, now, seconds=3600, limit=350))
    want = np.sort(wire[wire["ts"] >= now - 3600 * 10**9], order="ts")[-350:]
    assert len(got) == 350
    for name in records.STORED.names:
        assert (got[name] == want[name]).all(), name
    assert set(got["cap_len"]) == {28, 45, 128, records.SNAPLEN}
