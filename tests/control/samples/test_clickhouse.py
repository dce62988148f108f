"""The ClickHouse store on a real server: many threads querying at once while expiry runs,
and what a caller is told when ClickHouse cannot answer."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time

import httpx
import pytest
from clickhouse_driver import Client

from edgepcap.control.errors import SamplesUnavailable
from edgepcap.control.samples import chhours, traffic
from edgepcap.control.samples.admission import MAX_SKEW_NS
from edgepcap.control.samples.clickhouse import ClickHouseStore
from edgepcap.control.samples.segments import SEAL_GRACE_NS, SegmentStore
from edgepcap.control.samples.traffic import TrafficQuery
from edgepcap.formats.filters import FilterV1
from tests.support.api import error_of
from tests.support.servers import new_account, start_server, stop_server
from tests.support.traffic import MINUTE, NETS, A, many_keys_over, records_over, wire_of

pytestmark = pytest.mark.clickhouse
counter = itertools.count()
HOUR = 3600 * traffic.NS


def new_store(host: str) -> ClickHouseStore:
    url = f"clickhouse://{host}/chs{next(counter)}_{int(time.time())}"
    return ClickHouseStore(url, dt.timedelta(hours=24), partition_seconds=60)


def query(now: int, group_by: str) -> TrafficQuery:
    step = 60 * traffic.NS
    start = (now - 2 * HOUR) // step * step
    return TrafficQuery(A, start, now, step, group_by, FilterV1(), tuple(NETS[A]))


def test_threads_query_at_once_while_expiry_runs(clickhouse):
    """Request threads and the supervisor's expiry share one store: each query gets its
    whole answer (one connection shared would interleave them)."""
    store = new_store(clickhouse)
    now = time.time_ns()
    for (machine, *_), part in records_over(now - HOUR, now, 3000, seed=4).items():
        store.append(wire_of(part), machine)
    asked = [query(now, g) for g in ("destination_port", "source_address", "machine")]
    want = [store.traffic(q) for q in asked]
    assert all(want)
    failures: list[BaseException] = []

    def reader() -> None:
        for _ in range(15):
            for q, w in zip(asked, want, strict=True):
                try:
                    got = store.traffic(q)
                    assert set(got) == set(w)
                    assert all((got[k].samples == w[k].samples).all() for k in w)
                except BaseException as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert store.expire(now) == 0
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    store.close()


def test_a_query_clickhouse_cannot_answer_is_a_clear_error(clickhouse):
    store = new_store(clickhouse)
    host, port = clickhouse.rsplit("@", 1)[-1].split(":")
    Client(host, port=int(port)).execute(f"DROP TABLE {store.database}.samples")
    with pytest.raises(SamplesUnavailable, match="could not answer"):
        store.traffic(query(time.time_ns(), "protocol"))
    store.close()


def test_the_traffic_view_answers_503_when_the_store_fails(clickhouse, tmp_path):
    """A failing query is a 503 with words, and the connection stays usable (an error
    left to the server's last resort closes it under the next request)."""
    database = f"chapi{next(counter)}_{int(time.time())}"
    env = {"EDGEPCAP_SAMPLE_STORE": f"clickhouse://{clickhouse}/{database}"}
    server = start_server(tmp_path / "api", None, env)
    try:
        a = new_account(server, "a", ("203.0.113.0/25",))
        host, port = clickhouse.rsplit("@", 1)[-1].split(":")
        Client(host, port=int(port)).execute(f"DROP TABLE {database}.samples")
        headers = {"Authorization": f"Bearer {a['api_token']}"}
        with httpx.Client(headers=headers, timeout=30) as c:
            for _ in range(3):  # the same keep-alive connection each time
                r = c.get(f"{server.api}/accounts/{a['id']}/traffic")
                assert r.status_code == 503
                code, message = error_of(r)
                assert code == 1501
                assert "sample store could not answer" in message
    finally:
        stop_server(server)


def test_heavy_hours_are_capped_as_the_embedded_store_caps_them(clickhouse, tmp_path):
    """More keys an hour than HOUR_GROUPS, a window starting on an hour: ClickHouse's
    answer from `samples` (capped in SQL), from its sealed hours (10-s and 5-minute rows)
    and from hours sealed before 5-minute rows existed all equal the embedded store's
    (capped by `tally`)."""
    now = time.time_ns()
    rows = many_keys_over(now - 2 * HOUR - 10 * MINUTE, now, 40_000, seed=9)
    store = new_store(clickhouse)
    store_url = f"clickhouse://{clickhouse}/{store.database}"
    embedded = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    for (machine, *_), part in rows.items():
        store.append(wire_of(part), machine)
        embedded.append(wire_of(part), machine)
    start = (now - 2 * HOUR) // HOUR * HOUR
    asked = [
        TrafficQuery(A, start, now, step * traffic.NS, g, FilterV1(**f), tuple(NETS[A]))
        for g in ("source_address", "source_port", "destination_port", "protocol", "machine")
        for f in ({}, {"protocol": 17}, {"destination_port": 53})
        for step in (10, 300)
    ]
    want = [embedded.traffic(q) for q in asked]
    assert any(traffic.OTHER in w for w in want)  # the cap was exercised
    for sealed in ("no", "yes", "before 5-minute rows"):
        if sealed == "yes":
            assert store.seal(now, {A: NETS[A]}.get) >= 2
        if sealed == "before 5-minute rows":
            # Hours sealed by a store that did not write 5-minute rows: their marks gain
            # `grains` = 1 when the store opens, and their 10-s rows are read.
            store.run("ALTER TABLE sealed DROP COLUMN grains")
            store.close()
            store = ClickHouseStore(store_url, dt.timedelta(hours=24), partition_seconds=60)
        for q, w in zip(asked, want, strict=True):
            got = store.traffic(q)
            assert set(got) == set(w), (q.group_by, q.filter, sealed)
            for key in w:
                assert (got[key].samples == w[key].samples).all(), (q.group_by, key, sealed)
                assert (got[key].bytes == w[key].bytes).all(), (q.group_by, key, sealed)
    store.close()


def test_the_hour_in_progress_is_read_from_its_slices(clickhouse, tmp_path):
    """An hour not sealed yet: each 10-minute slice no sample can land in any more is
    summed (capped per slice), and the view reads it from there; once the hour is
    sealed, from the hour. With every sample of the hour in one slice, the per-slice cap
    is the per-hour cap, and every answer equals the embedded store's."""
    base = (time.time_ns() // HOUR - 3) * HOUR
    rows = many_keys_over(base + 10 * MINUTE, base + 20 * MINUTE, 20_000, seed=4)
    store = new_store(clickhouse)
    embedded = SegmentStore(tmp_path / "s", dt.timedelta(hours=24), partition_seconds=60)
    for (machine, *_), part in rows.items():
        store.append(wire_of(part), machine)
        embedded.append(wire_of(part), machine)
    asked = [
        TrafficQuery(A, base, base + HOUR, step * traffic.NS, g, FilterV1(**f), tuple(NETS[A]))
        for g in ("source_address", "source_port", "protocol", "machine")
        for f in ({}, {"protocol": 17}, {"destination_port": 53})
        for step in (10, 300)
    ]
    want = [embedded.traffic(q) for q in asked]
    assert any(traffic.OTHER in w for w in want)  # the cap was exercised
    settle = MAX_SKEW_NS + SEAL_GRACE_NS + traffic.NS
    for sealed_to, covered in (
        (base + 20 * MINUTE, [(base + 10 * MINUTE, base + 20 * MINUTE - 1)]),
        (base + HOUR, [(base, base + HOUR - 1)]),
    ):
        store.seal(sealed_to + settle, {A: NETS[A]}.get)
        assert chhours.Summary(store.run, asked[0]).covered == covered
        for q, w in zip(asked, want, strict=True):
            got = store.traffic(q)
            assert set(got) == set(w), (q.group_by, q.filter, sealed_to)
            for key in w:
                assert (got[key].samples == w[key].samples).all(), (q.group_by, key)
                assert (got[key].bytes == w[key].bytes).all(), (q.group_by, key)
    store.close()
