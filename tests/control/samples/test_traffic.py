"""The traffic view: every store counts what `traffic.aggregate` counts over the same
records, sealed or not, while compaction runs, per account and prefix; and `estimate`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import ipaddress
import itertools
import json
import os
import time

import numpy as np
import pytest

from edgepcap.control.samples import segments, traffic
from edgepcap.control.samples.clickhouse import ClickHouseStore
from edgepcap.control.samples.segments import SegmentStore
from edgepcap.control.samples.traffic import Counts, TrafficQuery
from edgepcap.formats.filters import FilterV1
from tests.support.traffic import (
    MINUTE,
    NETS,
    A,
    B,
    many_keys_over,
    records_over,
    rows_read,
    wire_of,
)

counter = itertools.count()
HOUR = 3600 * traffic.NS
FILTERS = [
    {},
    {"source_address": "198.51.100.3"},
    {"destination_address": "203.0.113.5"},
    {"destination_address": "2001:db8:a::2"},
    {"source_port": 1001},
    {"destination_port": 53},
    {"protocol": 1},
    {"address": "203.0.113.140"},
    {"port": 443},
]


@pytest.fixture(params=["segments", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def kind(request):
    return request.param


def open_store(kind, request, tmp_path):
    if kind == "segments":
        return SegmentStore(tmp_path / "samples", dt.timedelta(hours=24), partition_seconds=60)
    host = request.getfixturevalue("clickhouse")
    return ClickHouseStore(
        f"clickhouse://{host}/tr{next(counter)}_{int(time.time())}",
        dt.timedelta(hours=24),
        partition_seconds=60,
    )


@pytest.fixture(scope="module")
def history():
    """Three hours and a bit of records up to now, in appends of a machine and a minute."""
    now = time.time_ns()
    return now, records_over(now - 3 * HOUR - 20 * MINUTE, now, 6000, seed=3)


def fill(store, rows) -> None:
    for (machine, *_), part in rows.items():
        store.append(wire_of(part), machine)


def reference(rows, q: TrafficQuery):
    chunks = [
        (part["rows"], machine)
        for (machine, *_), part in rows.items()
        if part["id"] == q.account_id
    ]
    return traffic.aggregate(chunks, q)


def same(got, want) -> None:
    assert set(got) == set(want)
    for key in want:
        assert (got[key].samples == want[key].samples).all(), key
        assert (got[key].bytes == want[key].bytes).all(), key


def tq(account, now, group_by, step=60, hours=4, prefixes=None, **f) -> TrafficQuery:
    step_ns = step * traffic.NS
    start = (now - hours * HOUR) // step_ns * step_ns
    nets = tuple(NETS[account]) if prefixes is None else prefixes
    return TrafficQuery(account, start, now, step_ns, group_by, FilterV1(**f), nets)


def test_traffic_equals_the_reference_sealed_or_not(kind, request, tmp_path, history):
    now, rows = history
    store = open_store(kind, request, tmp_path)
    fill(store, rows)
    prefixes = {a: NETS[a] for a in (A, B)}.get
    # Every group with every filter for A; for B (the same code, another account's
    # files) every group unfiltered and every filter once; before sealing and after.
    asked = [
        *itertools.product((A,), traffic.GROUPS, FILTERS),
        *((B, group_by, {}) for group_by in traffic.GROUPS),
        *((B, "protocol", f) for f in FILTERS[1:]),
    ]
    for sealed in (False, True):
        if sealed:
            store.seal(now, prefixes)
        for account, group_by, f in asked:
            q = tq(account, now, group_by, step=120 if group_by == "protocol" else 60, **f)
            same(store.traffic(q), reference(rows, q))
    if kind == "segments":
        assert list((tmp_path / "samples" / "hours").iterdir())  # hours were summed
    else:
        assert store.run("SELECT count() FROM sealed")[0][0] >= 2 * 3  # both accounts
    store.close()


def test_a_window_cut_inside_sealed_hours_and_a_partial_last_bucket(tmp_path, history):
    now, rows = history
    store = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    store.seal(now, {a: NETS[a] for a in (A, B)}.get)
    for end in (now - 2 * HOUR - 7 * traffic.NS, now - HOUR // 2):
        for group_by in ("protocol", "destination_address", "machine"):
            start = end - HOUR - 25 * MINUTE
            start -= start % (30 * traffic.NS)
            q = TrafficQuery(A, start, end, 30 * traffic.NS, group_by, FilterV1(), tuple(NETS[A]))
            same(store.traffic(q), reference(rows, q))


def test_prefixes_lost_since_sealing_are_not_counted(kind, request, tmp_path, history):
    now, rows = history
    store = open_store(kind, request, tmp_path)
    fill(store, rows)
    store.seal(now, {a: NETS[a] for a in (A, B)}.get)
    v4_only = (NETS[A][0],)
    narrower = (ipaddress.ip_network("203.0.113.0/28"), NETS[A][1])
    for prefixes in (v4_only, narrower, ()):
        for group_by in ("protocol", "source_address", "destination_address"):
            q = tq(A, now, group_by, prefixes=prefixes)
            got, want = store.traffic(q), reference(rows, q)
            same(got, want)
    store.close()


def test_a_compaction_between_and_during_reads_counts_each_sample_once(
    tmp_path, history, monkeypatch
):
    now, rows = history
    store = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    q = tq(A, now, "destination_port")
    want = reference(rows, q)
    same(store.traffic(q), want)
    # Seal each partition just after a reader listed its raw segments: they vanish under it.
    listed = segments.raw_names
    sealer = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)

    def listing_then_sealing(directory):
        names = listed(directory)
        if names and directory.name == A:
            segments.sealing.seal_partition(directory.parent, A)
        return names

    monkeypatch.setattr(segments, "raw_names", listing_then_sealing)
    same(store.traffic(q), want)
    assert len(store.query(dataclasses.replace(q.window(), limit=10**6))) == int(
        sum(c.samples.sum() for c in want.values())
    )
    monkeypatch.undo()
    sealer.seal(now, {a: NETS[a] for a in (A, B)}.get)
    same(store.traffic(q), want)
    assert store.expire(now + 23 * HOUR) > 0  # the oldest hours go, summaries with them
    q = tq(A, now + 23 * HOUR, "protocol", hours=24)
    q = TrafficQuery(A, q.start_ns, now, q.step_ns, q.group_by, q.filter, q.prefixes)
    cutoff = now - HOUR
    kept = {k: v for k, v in rows.items() if (k[1] + 1) * MINUTE > cutoff}
    assert kept and len(kept) < len(rows)
    same(store.traffic(q), reference(kept, q))


def test_filtered_queries_of_summed_hours_read_their_columns(tmp_path, history, monkeypatch):
    now, rows = history
    store = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    store.seal(now, {a: NETS[a] for a in (A, B)}.get)
    read = rows_read(store, monkeypatch)  # partitions of which rows were read
    calls = []
    count = segments.hourcols.count
    monkeypatch.setattr(segments.hourcols, "count", lambda *a: calls.append(a) or count(*a))
    # Windows cut inside summed hours, a partial last bucket, a cut 10-s bucket.
    ends = (now - 2 * HOUR - 7 * traffic.NS, now - HOUR // 2 - 3 * traffic.NS, now)
    for end, f in itertools.product(ends, FILTERS[1:]):
        for group_by in ("protocol", "source_port", "destination_address", "machine"):
            start = end - HOUR - 25 * MINUTE
            start -= start % (30 * traffic.NS)
            q = TrafficQuery(A, start, end, 30 * traffic.NS, group_by, FilterV1(**f), NETS[A])
            same(store.traffic(q), reference(rows, q))
    assert calls
    # Of the summed hours, only the partitions at the windows' edges were read.
    summed = {int(h.name) for h in (tmp_path / "s" / "hours").iterdir()}
    assert 0 < len({p for p in read if p * MINUTE // HOUR in summed}) <= 4 * len(ends)
    # Prefixes grown since sealing: the strays (192.0.2.9) now count, filtered row by row.
    grown = (*NETS[A], ipaddress.ip_network("192.0.2.0/24"))
    for f in ({"address": "192.0.2.9"}, {"source_address": "192.0.2.9"}, {"protocol": 17}):
        q = tq(A, now, "source_address", prefixes=grown, **f)
        want = reference(rows, q)
        assert want
        same(store.traffic(q), want)


def test_hour_columns_cut_heavy_keys_as_the_partitions_would(tmp_path):
    """More keys an hour than HOUR_GROUPS: the columns' cut (by codes, or uncut with the
    strays) equals the count of the same hours from the sealed partitions."""
    now = time.time_ns()
    rows = many_keys_over(now - 2 * HOUR - 10 * MINUTE, now, 40_000, seed=9)
    store = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    store.seal(now, {A: NETS[A]}.get)
    grown = (*NETS[A], ipaddress.ip_network("192.0.2.0/24"))
    queries = [
        tq(A, now, g, step=s, hours=3, prefixes=p, **f)
        for g in ("source_address", "source_port", "protocol")
        for f in ({"destination_port": 53}, {"protocol": 17}, {"port": 443})
        for p in (tuple(NETS[A]), grown)
        for s in (10, 300)
    ]
    got = [store.traffic(q) for q in queries]
    assert any(traffic.OTHER in g for g in got)  # the cut was exercised
    for meta in (tmp_path / "s" / "hours").glob("*/*/meta.json"):
        old = json.loads(meta.read_text())
        del old["columns"]  # as summed before the columns: the partitions answer
        meta.write_text(json.dumps(old))
    for q, g in zip(queries, got, strict=True):
        same(g, store.traffic(q))


def test_estimate_ranks_sums_other_and_divides_the_last_bucket():
    q = TrafficQuery(A, 0, 25 * traffic.NS, 10 * traffic.NS, "protocol", FilterV1(), ())
    groups = {
        6: Counts(np.array([4, 0, 1]), np.array([400, 0, 100])),
        17: Counts(np.array([1, 1, 1]), np.array([10, 10, 10])),
        1: Counts(np.array([0, 0, 3]), np.array([0, 0, 30])),
        traffic.OTHER: Counts(np.array([0, 1, 0]), np.array([0, 5, 0])),
    }
    series = traffic.estimate(groups, q, 1, 100)
    assert [s.key for s in series] == ["6", "other"]
    top, other = series
    assert (top.samples, top.packets, top.bits) == (5, 500, 500 * 8 * 100)
    assert top.points[0] == [0, 40.0, 400 * 8 * 100 / 10]
    assert top.points[2] == [20, 20.0, 100 * 8 * 100 / 5]  # the last bucket covers 5 s
    assert other.samples == 3 + 3 + 1
    assert (
        top.packets_error == traffic.bound(5, 100) == int(np.ceil(1.96 * 100 * np.sqrt(5 * 0.99)))
    )
    assert [s.key for s in traffic.estimate(groups, q, 2, 100)] == ["6", "1", "other"]
    assert traffic.estimate({}, q, 5, 100) == []


@pytest.mark.clickhouse
def test_a_table_made_before_the_machine_column_gets_it(clickhouse):
    from clickhouse_driver import Client

    from edgepcap.control.samples import clickhouse as ch

    database = f"old{next(counter)}_{int(time.time())}"
    host, port = clickhouse.split(":")
    Client(host, port=int(port)).execute(f"CREATE DATABASE {database}")
    old = ch.SCHEMA.replace(",\n    machine String", "").replace("samples", f"{database}.samples")
    Client(host, port=int(port)).execute(old)
    now = time.time_ns()
    rows = records_over(now - 5 * MINUTE, now, 50, seed=5)
    store = ClickHouseStore(f"clickhouse://{clickhouse}/{database}", dt.timedelta(hours=24))
    fill(store, rows)
    q = tq(A, now, "machine", hours=1)
    same(store.traffic(q), reference(rows, q))
    store.close()


def test_an_hour_in_progress_counts_its_sealed_partitions_from_its_columns(
    tmp_path, history, monkeypatch
):
    """Sealed up to 40 minutes into an hour: those partitions count from the hour so far's
    columns, the rest from their own files; a newer one published while a reader reads the
    older, the summary replacing them, and retention, each count every sample once."""
    now, rows = history
    root = tmp_path / "s"
    store = SegmentStore(root, dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    nets = {a: NETS[a] for a in (A, B)}.get
    hour = (now - 2 * HOUR) // HOUR
    lag = segments.MAX_SKEW_NS + segments.SEAL_GRACE_NS
    at = hour * HOUR + 40 * MINUTE + lag
    store.seal(at, nets)
    hours = root / "hours" / f"{hour:08d}"
    assert segments.sealing.so_far(hours, A) == [f"{A}.sofar-{hour * 60 + 39:012d}"]
    asked = [
        (g, f)
        for g in ("protocol", "source_address", "destination_address", "machine", "source_port")
        for f in (FILTERS[0], FILTERS[2], FILTERS[5], FILTERS[7])
    ]
    for group_by, f in asked:
        q = tq(A, now, group_by, **f)
        same(store.traffic(q), reference(rows, q))
    # The next partition sealed while a reader maps the older columns: they vanish under it.
    sealer = SegmentStore(root, dt.timedelta(hours=24), partition_seconds=60)
    count = segments.hourcols.count
    sealed = []

    def sealing_then_counting(directory, *a):
        if not sealed and ".sofar-" in directory.name:
            sealed.append(sealer.seal(at + MINUTE, nets))
        return count(directory, *a)

    monkeypatch.setattr(segments.hourcols, "count", sealing_then_counting)
    q = tq(A, now, "destination_address", **FILTERS[5])
    same(store.traffic(q), reference(rows, q))
    assert sealed and segments.sealing.so_far(hours, A) == [f"{A}.sofar-{hour * 60 + 40:012d}"]
    monkeypatch.undo()
    for group_by, f in asked:
        q = tq(A, now, group_by, **f)
        same(store.traffic(q), reference(rows, q))
    # The hour complete: its summary replaces the columns so far.
    sealer.seal((hour + 1) * HOUR + 10 * MINUTE + lag, nets)
    assert (hours / A / "meta.json").exists() and not segments.sealing.so_far(hours, A)
    assert segments.sealing.so_far(root / "hours" / f"{hour + 1:08d}", A)
    for group_by, f in asked[::3]:
        q = tq(A, now, group_by, **f)
        same(store.traffic(q), reference(rows, q))
    # Retention drops the hour in progress's columns with the hour.
    later = (hour + 1) * HOUR + MINUTE + 24 * HOUR
    assert store.expire(later) > 0
    assert not (root / "hours" / f"{hour + 1:08d}").exists()
    cutoff = later - 24 * HOUR
    kept = {k: v for k, v in rows.items() if (k[1] + 1) * MINUTE > cutoff}
    for group_by, f in asked[::3]:
        q = tq(A, now, group_by, **f)
        same(store.traffic(q), reference(kept, q))


def test_one_sealer_at_a_time_per_store(tmp_path, history):
    """Two processes sealing the same files (another data dir on this store, a tool) would
    build and replace the same hour at once: the second waits, or leaves it to the first."""
    now, rows = history
    store = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    prefixes = {a: NETS[a] for a in (A, B)}.get
    fd = os.open(tmp_path / "s" / segments.SEAL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another sealer at work
        assert store.seal(now, prefixes) == 0
        assert not (tmp_path / "s" / "hours").exists()
    finally:
        os.close(fd)
    assert store.seal(now, prefixes, wait=True) > 0
    assert list((tmp_path / "s" / "hours").iterdir())
    q = tq(A, now, "destination_port", port=443)
    same(store.traffic(q), reference(rows, q))


def test_a_segment_landing_after_its_hour_was_summed_is_counted(tmp_path, history, monkeypatch):
    """Summed partitions are not listed while their directories are older than the
    summary's check; one a late segment lands in is, and its samples count."""
    now, rows = history
    root = tmp_path / "s"
    store = SegmentStore(root, dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    store.seal(now, {a: NETS[a] for a in (A, B)}.get)
    # As if sealed long ago: the partitions' directories older than the summaries' check.
    long_ago = now - 10 * HOUR
    for part in root.iterdir():
        if part.name.isdigit():
            os.utime(part, ns=(long_ago, long_ago))
    read = []
    real = store._read_partition
    monkeypatch.setattr(store, "_read_partition", lambda *a: read.append(a[0]) or real(*a))
    queries = [tq(A, now, g, **f) for g in ("protocol", "source_port") for f in FILTERS[:6:5]]
    for q in queries:
        same(store.traffic(q), reference(rows, q))
    metas = [json.loads(m.read_text()) for m in (root / "hours").glob(f"*/{A}/meta.json")]
    summed = {p for meta in metas for p in meta["partitions"]}
    assert len(metas) >= 2
    # Of the partitions the summaries counted, only those at the window's edges were read.
    assert len(set(read) & summed) <= 2
    # A late segment in a summed minute of A: listed, read and counted.
    minute, part = next(
        (key[1], part)
        for key, part in rows.items()
        if part["id"] == A and key[1] in summed and key[1] % 60 == 30
    )
    late = {**rows, ("late01", minute, A, 0): {"id": A, "rows": part["rows"].copy()}}
    store.append(wire_of(late[("late01", minute, A, 0)]), "late01")
    read.clear()
    for q in queries:
        same(store.traffic(q), reference(late, q))
    assert minute in read


def test_the_oldest_hour_partly_expired_is_summed_again(tmp_path, history, monkeypatch):
    """Retention drops the summary of an hour with its first partition; sealing then sums
    what is left of the hour, which a query reads instead of its partitions."""
    now, rows = history
    root = tmp_path / "s"
    store = SegmentStore(root, dt.timedelta(hours=24), partition_seconds=60)
    fill(store, rows)
    nets = {a: NETS[a] for a in (A, B)}.get
    store.seal(now, nets)
    summed = sorted(int(h.name) for h in (root / "hours").iterdir() if (h / A).exists())
    oldest = summed[0] + 1  # a whole hour of A's, not the history's first
    later = oldest * HOUR + 25 * MINUTE + 24 * HOUR
    assert store.expire(later) > 0
    hour_dir = root / "hours" / f"{oldest:08d}"
    assert not (hour_dir / A).exists()  # it counted what retention dropped
    store.seal(later, nets)
    meta = json.loads((hour_dir / A / "meta.json").read_text())
    cutoff = later - 24 * HOUR
    assert meta["partitions"] and all((p + 1) * MINUTE > cutoff for p in meta["partitions"])
    kept = {k: v for k, v in rows.items() if (k[1] + 1) * MINUTE > cutoff}
    read = rows_read(store, monkeypatch)
    for group_by, f in (("protocol", {}), ("source_port", {}), ("protocol", FILTERS[5])):
        q = tq(A, later, group_by, hours=24, **f)
        q = TrafficQuery(A, q.start_ns, now, q.step_ns, q.group_by, q.filter, q.prefixes)
        same(store.traffic(q), reference(kept, q))
    assert not set(read) & set(meta["partitions"])  # the summary answered them
    # The next partition to go takes this summary with it, and sealing sums the rest again.
    assert store.expire(later + MINUTE) > 0
    assert not (hour_dir / A).exists()
    store.seal(later + MINUTE, nets)
    again = json.loads((hour_dir / A / "meta.json").read_text())["partitions"]
    assert again == [p for p in meta["partitions"] if (p + 1) * MINUTE > cutoff + MINUTE]
