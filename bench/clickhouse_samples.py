"""The sample history at scale, step `clickhouse`: the ingest figures (`sample_ingest`),
then sample captures and the traffic view over a day of samples for 50 accounts in
ClickHouse.

Every figure runs real processes: `edgepcap api` (1 worker) and Debian's
clickhouse-server (tests.support.clickhouse). The day is made inside ClickHouse
(`INSERT … SELECT FROM numbers`) with Zipf-distributed accounts, then dropped.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import httpx
import numpy as np
from clickhouse_driver import Client

from bench import samples
from bench.api import Api
from bench.figures import Figure, percentile
from bench.sample_ingest import (
    ACCOUNTS,
    account_net,
    api_ingest,
    direct_ingest,
    make_accounts,
    register,
)
from edgepcap.control.samples.chsql import SLICE_NS
from edgepcap.formats import samples as records

HOUR_NS = 3600 * 10**9


def fill_day(admin: Client, ids: list[str], n: int, end_ns: int, chunk: int) -> float:
    """`n` samples over the 24 h before `end_ns`, made by ClickHouse itself in time order
    (`chunk` rows a statement), accounts Zipf-distributed (s = 1); returns seconds taken."""
    weights = 1 / np.arange(1, len(ids) + 1)
    lut = np.repeat(np.arange(len(ids)), np.round(weights / weights.sum() * 1000).astype(int))
    accounts = "[" + ",".join(f"toFixedString('{a}', 32)" for a in ids) + "]"
    bases = [int(account_net(i).network_address) for i in range(len(ids))]
    step = 24 * HOUR_NS // n
    start = end_ns - step * n
    head = "450004b0000000004011" + "00" * 2
    pad = "00" * (records.SNAPLEN - 28)
    began = time.perf_counter()
    for lo in range(0, n, chunk):
        count = min(chunk, n - lo)
        admin.execute(
            f"""INSERT INTO samples (account, part, ts, orig_len, cap_len, sport, dport, proto,
                family, src_hi, src_lo, dst_hi, dst_lo, data, machine)
            SELECT {accounts}[a + 1], toUInt32(intDiv(t, {HOUR_NS})), t, toUInt32(1200),
                toUInt16(160), toUInt16(1024 + h % 60000), [53, 80, 443, 123][h % 4 + 1],
                toUInt8(17), toUInt8(4), toUInt64(0), bitOr({int(records.MAPPED)}, src),
                toUInt64(0), bitOr({int(records.MAPPED)}, dst),
                concat(unhex('{head}'), reinterpretAsString(toUInt32(src)),
                    reinterpretAsString(toUInt32(dst)), reinterpretAsString(h), unhex('{pad}')),
                concat('sim', toString(h % 100))
            FROM (SELECT number, cityHash64(number + {lo}) AS h,
                    {list(map(int, lut))}[h % {len(lut)} + 1] AS a,
                    toInt64({start} + (number + {lo}) * {step}) AS t,
                    h % 4294967296 AS src,
                    {bases}[a + 1] + 1 + intDiv(h, 7) % 6 AS dst
                  FROM numbers({count}))"""  # noqa: S608 - numbers and ids made here
        )
    return time.perf_counter() - began


def wait_sealed(admin: Client, end_ns: int, limit_s: float = 3600) -> float:
    """Until the API's sealer has summed every hour of the day that can be, and every
    10-minute slice of the hour after it (ClickHouse sums a span once no sample can land
    in it: MAX_SKEW_NS + SEAL_GRACE_NS after its end); returns seconds waited."""
    began = time.perf_counter()
    settled = min(end_ns, time.time_ns() - 330 * 10**9)
    last, last_slice = settled // HOUR_NS - 1, settled // SLICE_NS - 1
    while time.perf_counter() - began < limit_s:
        hours = admin.execute("SELECT max(hour), count() FROM sealed")[0]
        slices = admin.execute("SELECT max(slice), count() FROM sliced")[0]
        # The slice is summed, or its hour is (then it never will be).
        sliced = (slices[1] and slices[0] >= last_slice) or (
            hours[1] and (hours[0] + 1) * HOUR_NS > last_slice * SLICE_NS
        )
        if hours[1] and hours[0] >= last and sliced:
            break
        time.sleep(1)
    return time.perf_counter() - began


def queries(ch, n: int, rounds: int, chunk: int) -> dict:
    """A day of `n` samples for 50 accounts in ClickHouse (hour partitions), then sample
    captures (create → download, over HTTP) and traffic-view requests of the busiest
    accounts; the store dropped afterwards."""
    database = f"day_{int(time.time())}"
    api = Api(
        env={
            "EDGEPCAP_SAMPLE_INTERVAL": "0",
            "EDGEPCAP_SAMPLE_STORE": f"clickhouse://{ch.host}/{database}",
            "EDGEPCAP_SAMPLE_PARTITION": "3600",
            "EDGEPCAP_SAMPLE_RETENTION": str(25 * 3600),
        }
    )
    admin = Client("127.0.0.1", port=ch.port, password=ch.password, database=database)
    try:
        ids, tokens = make_accounts(api, ACCOUNTS)
        register(api, "bench01")
        end = time.time_ns() - 10**9
        fill_s = fill_day(admin, ids, n, end, chunk)
        seal_s = wait_sealed(admin, end)
        stored = admin.execute("SELECT count() FROM samples")[0][0]
        disk = admin.execute(
            "SELECT sum(bytes_on_disk), count() FROM system.parts "
            "WHERE database = %(d)s AND table = 'samples' AND active",
            {"d": database},
        )[0]
        captures, view = [], []
        per: dict[str, list[float]] = {}
        failed: dict[str, int] = {}
        clients = samples.account_clients(api.url, tokens, ids[:5])
        try:
            for q in range(rounds * 20):
                c = clients[ids[q % 5]]
                t = time.perf_counter()
                r = c.post(
                    "/pcaps",
                    json={
                        **samples.CAPTURE,
                        # The day's last 5 minutes (sealing it took longer than that).
                        "offset_time": dt.datetime.fromtimestamp(end / 1e9, dt.UTC).isoformat(),
                    },
                )
                pcap = r.json()["result"]
                body = c.get(f"/pcaps/{pcap['id']}/download").content
                captures.append((time.perf_counter() - t) * 1000)
                assert len(body) > 24, "no samples in the capture's window"
            # The 24 h the view keeps, back from now (sealing the day took minutes).
            since = time.time_ns() // 10**9 - 24 * 3600 + 60
            for _ in range(rounds):
                for a in ids[:3]:
                    for group_by, f in samples.TRAFFIC_MIX:
                        t = time.perf_counter()
                        name = " ".join([group_by, *f])
                        try:
                            r = clients[a].get(
                                "/traffic", params={"group_by": group_by, "since": since, **f}
                            )
                        except httpx.HTTPError:
                            r = None
                        ms = (time.perf_counter() - t) * 1000
                        if r is None or r.status_code != 200:  # e.g. ClickHouse's memory limit
                            failed[name] = failed.get(name, 0) + 1
                            api.wait()  # a worker that died is restarted by its parent
                            continue
                        assert r.json()["result"]["series"], name
                        view.append(ms)
                        per.setdefault(name, []).append(ms)
        finally:
            for c in clients.values():
                c.close()
        return {
            "samples": stored,
            "fill_s": fill_s,
            "seal_s": seal_s,
            "disk_bytes": disk[0],
            "parts": disk[1],
            "capture_ms": sorted(captures),
            "traffic_ms": sorted(view),
            "traffic_by_query_ms": per,
            "traffic_failed": failed,
        }
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()
        api.close()


def figure(quick: bool) -> list[Figure]:
    from tests.support.clickhouse import clickhouse_process

    out = []
    seconds = 3 if quick else 15
    embedded = api_ingest({}, seconds)
    with clickhouse_process(os.urandom(16).hex()) as ch:
        to_ch = api_ingest({"EDGEPCAP_SAMPLE_STORE": f"clickhouse://{ch.host}/api_ingest"}, seconds)
        for name, ing in (("embedded", embedded), ("ClickHouse", to_ch)):
            out.append(
                Figure(
                    f"sample ingest through one API worker, {name} store",
                    ing["kept_per_s"],
                    None,
                    "measured (sizes the direct path)",
                    ing["kept"] == ing["posted"],
                    "samples/s",
                    f"API process at {ing['api_cpu'] * 100:.0f} % of a core",
                    ing,
                )
            )
        ing = direct_ingest(ch, 4, 5 if quick else 30, 50_000)
        out.append(
            Figure(
                f"agents inserting into ClickHouse, {ing['machines']} machines, "
                f"{ing['seconds']:.0f} s",
                ing["per_s"],
                None,
                ">= 200000 samples/s sustained, 0 lost",
                ing["per_s"] >= 200_000 and ing["lost"] == 0 and ing["refused"] == 0,
                "samples/s",
                f"clickhouse-server at {ing['clickhouse_cpu'] * 100:.0f} % of a core; "
                f"{ing['lost']} lost",
                ing,
            )
        )
        n = 2_000_000 if quick else int(os.environ.get("EDGEPCAP_BENCH_DAY", 200_000_000))
        day = queries(ch, n, 1 if quick else 5, 20_000_000)
        cap = day["capture_ms"]
        p50, p99 = percentile(cap, 50), percentile(cap, 99)
        out.append(
            Figure(
                f"sample capture create+download, ClickHouse, {n / 1e6:g} M samples / 24 h, "
                f"{ACCOUNTS} accounts",
                p50,
                None,
                "p50 < 50 ms, p99 < 200 ms",
                p50 < 50 and p99 < 200,
                "ms p50",
                f"p99 {p99:.0f} ms; fill {day['fill_s']:.0f} s, "
                f"{day['disk_bytes'] / 2**30:.1f} GiB",
                day,
            )
        )
        per = day["traffic_by_query_ms"]
        for kind, names in (
            ("unfiltered", [k for k in per if " " not in k]),
            ("filtered", [k for k in per if " " in k]),
        ):
            ms = sorted(v for k in names for v in per[k]) or [float("inf")]
            out.append(
                Figure(
                    f"traffic view, ClickHouse, 24 h of the busiest accounts, {kind}, "
                    f"{n / 1e6:g} M samples",
                    percentile(ms, 99),
                    None,
                    "p99 < 300 ms",
                    percentile(ms, 99) < 300 and not day["traffic_failed"],
                    "ms p99",
                    f"p50 {percentile(ms, 50):.0f} ms over HTTP; slowest "
                    f"{max(names, key=lambda k: max(per[k]), default='-')}; sealing the day "
                    f"{day['seal_s']:.0f} s; failed {day['traffic_failed']}",
                    {k: v for k, v in day.items() if k != "capture_ms"},
                )
            )
    return out
