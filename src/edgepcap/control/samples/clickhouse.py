"""The scale-out sample store: a ClickHouse server over its native protocol.

Kept to SQL that ClickHouse 18.16 (Debian's package) understands (`chsql` has it).

`samples`: MergeTree partitioned by our own partition number, ordered by (account, ts).
Every read is one account's window (a sample capture's newest `limit` rows, a traffic
view's buckets), so (account, ts) makes each a range of the primary index, read from that
account's granules only; the prefixes and filters are then evaluated on those rows. The
partition is time alone, so retention is `DROP PARTITION` of whole hours and a day's query
opens few parts: run it with EDGEPCAP_SAMPLE_PARTITION=3600 (the 60 s default suits the
embedded store; in ClickHouse it would mean 1 440 partitions a day, a part per partition
each insert touches, and every day-long query opening all of them). Samples an agent
inserts itself (`direct`) reach the same table through a buffer.

A sample capture reads the newest rows first: ClickHouse 18.16 cannot read a MergeTree in
descending key order, so `ORDER BY ts DESC LIMIT n` over a day would read the account's
whole day; instead slices of the window, newest first and growing, are asked until one
holds `limit` rows (most captures: the first).

The traffic view (`chhours`): `hours`, partitioned by hour, ordered by (account, dim,
proto, hour, t10), holds each sealed hour's counts per 10-s bucket and key (and again
per 5 minutes, read by views whose start and step are whole 5 minutes), so a query
reads one range of it: the account's rows of one dimension and protocol (or ANY) over
the window's hours, in time order. `sealed` (partitioned by hour, ordered by (account,
hour)) says which hours are summed, under which prefixes. Until an hour is sealed, its
10-minute slices are summed the same way into `slices` and `sliced` (partitioned by
hour too), so the hour in progress is read from `samples` only for its last slices.
Sealing runs on the supervisor's sealing thread for hours and slices that ended
MAX_SKEW_NS + SEAL_GRACE_NS ago; retention drops the tables' old partitions together.
What the summaries cannot answer (filters other than a protocol, the slices not summed
yet, spans summed under other prefixes) is one GROUP BY over those ranges of `samples`,
capped per hour in SQL.

What is exact (`tally`'s rules, with two differences): a port or address key's counts
in an hour are kept when it is among the `tally.HOUR_GROUPS` heaviest of that hour's
matching samples; in a sealed hour that the window's start cuts, the heaviest are those of
the whole hour (the summary's), not of its part inside the window; in an hour not sealed
yet, those of each summed slice, and of the rest of the hour read from `samples`. Every
bucket's total stays exact; with fewer than HOUR_GROUPS keys a slice the answer equals
`aggregate`'s.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from urllib.parse import urlsplit

import numpy as np
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from edgepcap.control.errors import SamplesUnavailable
from edgepcap.control.samples import chhours, chsql, tally
from edgepcap.control.samples.admission import MAX_SKEW_NS
from edgepcap.control.samples.chsql import COLUMNS, HOUR_NS, SCHEMA, SLICE_NS
from edgepcap.control.samples.segments import SEAL_GRACE_NS
from edgepcap.control.samples.store import SampleQuery
from edgepcap.control.samples.traffic import Groups, TrafficQuery
from edgepcap.formats import samples as records

log = logging.getLogger(__name__)
NS = 1_000_000_000
# What a query may take before ClickHouse stops it: a request answers an error, not a hang.
QUERY_SECONDS = 20
# ClickHouse's codes for a query it stopped on a limit, in the words a user is told.
LIMITS = {241: "over its memory limit", 159: "over its time limit", 160: "over its time limit"}
# A sample capture's first slice of its window, newest first; each next one is 8 times
# longer, until one holds `limit` rows or the window is read. A simple capture's whole
# window (at most 300 s) is one query: two queries of it were slower at 50 M samples than
# one (BENCHMARKS.md, "Sample ingest and ClickHouse at scale").
FIRST_SLICE_NS = 300 * NS
TABLES = ("samples", "hours", "sealed", "slices", "sliced")


def database_of(url: str) -> str:
    """The database a clickhouse:// URL names (checked: it goes into SQL as a name)."""
    database = urlsplit(url).path.strip("/") or "default"
    if not database.replace("_", "").isalnum():
        raise ValueError(f"bad ClickHouse database name {database!r}")
    return database


class ClickHouseStore:
    """Samples in one ClickHouse table (`chsql.SCHEMA`) of the URL's database, with the
    traffic view's hour summaries, created if missing. `append` inserts a batch in
    columns; `query` selects the newest `limit` of the account's rows in the window, with
    the filter and prefixes as SQL; `seal` sums the hours no sample can reach any more;
    `expire` drops the partitions past the retention."""

    def __init__(self, url: str, retention: dt.timedelta, partition_seconds: int = 3600) -> None:
        parts = urlsplit(url)
        self.database = database_of(url)
        self.server = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 9000,
            "user": parts.username or "default",
            "password": parts.password or "",
            "settings": {"strings_as_bytes": True},
        }
        admin = Client(**self.server)
        admin.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        admin.disconnect()
        # A client serves one query at a time: each thread (request threads, the
        # supervisor's expiry and sealing) has its own, or their queries would share one
        # connection.
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        for schema in (SCHEMA, *chsql.HOUR.schemas(), *chsql.SLICE.schemas()):
            self.client.execute(schema)
        # Tables made before these columns (marks made before `grains`: their hours have
        # 10-s rows alone).
        self._add_column("samples", "machine String DEFAULT ''")
        for marks in (chsql.HOUR.marks, chsql.SLICE.marks):
            self._add_column(marks, "grains UInt8 DEFAULT 1")
        self.retention = retention
        self.partition_ns = partition_seconds * NS
        self._sealed_upto: int | None = None  # the last hour sealed, once known
        self._sliced_upto: int | None = None  # the last slice sealed, once known

    def _add_column(self, table: str, column: str) -> None:
        """Adds `column` ("name type ...") to `table` if it lacks it: 18.16 has no ADD
        COLUMN IF NOT EXISTS."""
        name = column.split()[0]
        have = self.client.execute(
            "SELECT name FROM system.columns WHERE database = %(db)s AND table = %(t)s",
            {"db": self.database, "t": table},
        )
        if name.encode() not in {n for (n,) in have}:
            self.client.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def new_client(self) -> Client:
        """A client of the store's database (one per thread: a client is not shared)."""
        return Client(**self.server, database=self.database)

    @property
    def client(self) -> Client:
        """This thread's client."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.new_client()
            with self._lock:
                self._clients.append(client)
        return client

    def run(self, sql: str, params: object = None, settings: dict | None = None, **kw) -> list:
        """A statement for a request or the sealer: ClickHouse's failures become
        `SamplesUnavailable` saying why in words (the details go to the log)."""
        try:
            return self.client.execute(
                sql,
                params,
                settings={"max_execution_time": QUERY_SECONDS, **(settings or {})},
                **kw,
            )
        except ch_errors.ServerException as exc:
            log.warning("the sample store refused a query: %s", str(exc).splitlines()[0][:300])
            why = LIMITS.get(exc.code, f"ClickHouse error {exc.code}")
            raise SamplesUnavailable(
                f"the sample store could not answer ({why}); retry, or ask for a shorter "
                "window or a narrower filter"
            ) from exc
        except (ch_errors.Error, OSError, EOFError) as exc:
            log.warning("the sample store is unreachable: %s", exc)
            raise SamplesUnavailable(
                "the sample store is unreachable right now; retry in a few seconds"
            ) from exc

    def append(self, wire: np.ndarray, machine: str = "") -> int:
        if len(wire) == 0:
            return 0
        accounts = [bytes(a).hex().encode() for a in wire["account"]]
        cols: list[list] = [accounts, (wire["ts"] // self.partition_ns).tolist()]
        cols += [wire[name].tolist() for name in COLUMNS]
        cap = wire["cap_len"]
        data = wire["data"]
        cols.append([data[i, : cap[i]].tobytes() for i in range(len(wire))])
        cols.append([machine.encode()] * len(wire))
        self.client.execute(
            f"INSERT INTO samples (account, part, {', '.join(COLUMNS)}, data, machine) VALUES",
            cols,
            columnar=True,
        )
        return len(wire)

    def query(self, q: SampleQuery) -> np.ndarray:
        if not q.prefixes or q.limit <= 0:
            return np.zeros(0, dtype=records.STORED)
        slices: list[list] = []  # newest first, each a list of columns newest first
        got = 0
        end, span = q.end_ns, FIRST_SLICE_NS
        while end >= q.start_ns and got < q.limit:
            start = max(q.start_ns, end - span + 1)
            where, params = chsql.where(
                q.account_id, [(start, end)], self.partition_ns, q.filter, q.prefixes
            )
            cols = self.run(
                f"SELECT {', '.join(COLUMNS)}, data FROM samples WHERE {where} "  # noqa: S608
                f"ORDER BY ts DESC LIMIT {int(q.limit) - got}",
                params,
                columnar=True,
            )
            if cols:
                slices.append(cols)
                got += len(cols[0])
            end, span = start - 1, span * 8
        return _stored(slices, got)

    def traffic(self, q: TrafficQuery) -> Groups:
        t = tally.Tally(q)
        if not q.prefixes:
            return {}
        summary = chhours.Summary(self.run, q)
        self._add(t, summary.columns())  # b, keys..., samples, bytes
        rest = chhours.uncovered(q.start_ns, q.end_ns - 1, summary.covered)
        if rest:
            where, params = chsql.where(q.account_id, rest, self.partition_ns, q.filter, q.prefixes)
            params.update({"qstart": q.start_ns, "step": q.step_ns})
            groups = {"h": f"intDiv(ts, {HOUR_NS})"} if t.capped else {}
            bucket = "intDiv(ts - %(qstart)s, %(step)s)"
            hours = list(range(rest[0][0] // HOUR_NS, rest[-1][1] // HOUR_NS + 1))
            sql = chsql.counts(t.dim, where, groups, bucket, hours=hours if t.capped else None)
            cols = self.run(sql, params, columnar=True)  # h?, keys..., b, samples, bytes
            if cols:
                self._add(t, [cols[-3], *cols[len(groups) : -3], cols[-2], cols[-1]])
        return t.groups()

    @staticmethod
    def _add(t: tally.Tally, cols: list) -> None:
        """Columns (bucket, key columns..., samples, bytes) into the tally as arrays."""
        if not cols or not len(cols[0]):
            return
        buckets, *keys, samples, nbytes = cols
        if tally.is_address(t.dim):
            codes = np.zeros(len(buckets), dtype=tally.ADDRESS)
            for name, col in zip(tally.ADDRESS.names, keys, strict=True):
                codes[name] = col
        elif t.dim == "machine":
            names = sorted(set(keys[0]))
            number = dict(zip(names, t.code([n.decode() for n in names]).tolist(), strict=True))
            codes = np.array([number[n] for n in keys[0]], dtype=np.int64)
        else:
            codes = np.array(keys[0], dtype=np.int64)
        t.add(
            codes,
            np.array(buckets, dtype=np.int64),
            np.array(samples, dtype=np.int64),
            np.array(nbytes, dtype=np.int64),
        )

    def seal(self, now_ns: int, prefixes) -> int:
        """Sums every hour no sample can reach any more into `hours`, then every such
        10-minute slice of the hours not summed yet into `slices`, for each account with
        samples in it that `prefixes` knows (None: counted from `samples` when asked);
        returns how many hours were summed."""
        settled = now_ns - MAX_SKEW_NS - SEAL_GRACE_NS
        ready = settled // HOUR_NS  # the first open hour
        if self._sealed_upto is None:
            last = self.run("SELECT max(hour), count() FROM sealed")[0]
            first, stored = self.run("SELECT min(part), count() FROM samples")[0]
            if not stored:
                return 0
            oldest = first * self.partition_ns // HOUR_NS - 1
            self._sealed_upto = int(last[0]) if last[1] else oldest
        sealed = 0
        for hour in range(self._sealed_upto + 1, ready):
            sealed += self._seal_span(chsql.HOUR, hour, prefixes)
            self._sealed_upto = hour
        per = HOUR_NS // SLICE_NS
        if self._sliced_upto is None:
            last = self.run("SELECT max(slice), count() FROM sliced")[0]
            self._sliced_upto = int(last[0]) if last[1] else -1
        first = max(self._sliced_upto + 1, (self._sealed_upto + 1) * per)
        for number in range(first, settled // SLICE_NS):
            self._seal_span(chsql.SLICE, number, prefixes)
            self._sliced_upto = number
        return sealed

    def _seal_span(self, span: chsql.Span, number: int, prefixes) -> bool:
        """Sums one span for its accounts, in statements of up to `chhours.BATCH`
        samples; whether it held any."""
        lo, hi = number * span.ns, (number + 1) * span.ns - 1
        accounts = self.run(
            "SELECT account, count() AS n FROM samples WHERE part >= %(p0)s "
            "AND part <= %(p1)s AND ts >= %(lo)s AND ts <= %(hi)s GROUP BY account "
            "ORDER BY n DESC",
            {"p0": lo // self.partition_ns, "p1": hi // self.partition_ns, "lo": lo, "hi": hi},
        )
        batch: dict[str, tuple] = {}
        size = 0
        for account, n in accounts:
            own = prefixes(account.decode())
            if own:
                if batch and size + n > chhours.BATCH:
                    chhours.seal_span(self.run, span, number, self.partition_ns, batch)
                    batch, size = {}, 0
                batch[account.decode()] = tuple(own)
                size += n
        if batch:
            chhours.seal_span(self.run, span, number, self.partition_ns, batch)
        return bool(accounts)

    def expire(self, now_ns: int) -> int:
        cutoff = now_ns - int(self.retention.total_seconds() * NS)
        dropped = 0
        for table in TABLES:
            rows = self.client.execute(
                "SELECT DISTINCT partition FROM system.parts "
                "WHERE database = %(db)s AND table = %(t)s AND active",
                {"db": self.database, "t": table},
            )
            span = self.partition_ns if table == "samples" else HOUR_NS
            for (partition,) in rows:
                number = int(partition)
                if (number + 1) * span <= cutoff:
                    self.client.execute(f"ALTER TABLE {table} DROP PARTITION {number}")
                    dropped += table == "samples"
        return dropped

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.disconnect()


def _stored(slices: list[list], n: int) -> np.ndarray:
    """The rows of columnar results (`COLUMNS` then `data`, each newest first, slices
    newest first) as `records.STORED`, oldest first: column by column, the blobs laid
    into the fixed-size data field in one masked copy (a row at a time costs more than
    the query)."""
    out = np.zeros(n, dtype=records.STORED)
    if not n:
        return out
    for i, name in enumerate(COLUMNS):
        column = [v for cols in slices for v in cols[i]]
        out[name] = np.array(column[::-1], dtype=out.dtype[name])
    blobs = [b for cols in slices for b in cols[-1]][::-1]
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    flat = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    out["data"][np.arange(records.SNAPLEN) < lengths[:, None]] = flat
    return out
