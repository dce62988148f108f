"""The scale-out sample store: a ClickHouse server over its native protocol.

Kept to SQL that ClickHouse 18.16 (Debian's package) understands: MergeTree partitioned by
our own partition number, ordered by (account, ts); retention drops whole partitions.

Why that key: every query is one account's window (a sample capture's newest `limit` rows,
a traffic view's buckets), so (account, ts) makes each a range of the primary index, read
from the one account's granules only; the prefixes and filters are then evaluated on those
rows. The partition is time alone, so retention is `DROP PARTITION` of whole hours and a
day's query opens few parts: run it with EDGEPCAP_SAMPLE_PARTITION=3600 (the 60 s default
suits the embedded store; in ClickHouse it would mean 1 440 partitions a day, a part per
partition each insert touches, and every day-long query opening all of them). Samples an
agent inserts itself (`direct`) reach the same table through a buffer.
The traffic view is one GROUP BY (bucket, key) with the same WHERE as sample captures;
port and address groups keep the window's `tally.HOUR_GROUPS` heaviest keys (a subquery)
and sum the rest as `traffic.OTHER`, then `tally.Tally` keeps `MAX_GROUPS` of them.
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
from edgepcap.control.samples import tally
from edgepcap.control.samples.store import SampleQuery
from edgepcap.control.samples.traffic import Groups, TrafficQuery
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

log = logging.getLogger(__name__)
NS = 1_000_000_000
# What a query may take before ClickHouse stops it: a request answers an error, not a hang.
QUERY_SECONDS = 20
# ClickHouse's codes for a query it stopped on a limit, in the words a user is told.
LIMITS = {241: "over its memory limit", 159: "over its time limit", 160: "over its time limit"}
COLUMNS = (
    "ts",
    "orig_len",
    "cap_len",
    "sport",
    "dport",
    "proto",
    "family",
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
)
PORTS = ", ".join(str(int(p)) for p in records.PORT_PROTOCOLS)
# Each dimension's group key in SQL (`tally.encode`'s, with NO_PORT as -1).
KEYS = {
    "protocol": ["toInt64(proto)"],
    "source_port": [f"if(proto IN ({PORTS}), toInt64(sport), -1)"],
    "destination_port": [f"if(proto IN ({PORTS}), toInt64(dport), -1)"],
    "source_address": ["family", "src_hi", "src_lo"],
    "destination_address": ["family", "dst_hi", "dst_lo"],
    "machine": ["machine"],
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    account FixedString(32),
    part UInt32,
    ts Int64,
    orig_len UInt32,
    cap_len UInt16,
    sport UInt16,
    dport UInt16,
    proto UInt8,
    family UInt8,
    src_hi UInt64,
    src_lo UInt64,
    dst_hi UInt64,
    dst_lo UInt64,
    data String,
    machine String
) ENGINE = MergeTree() PARTITION BY part ORDER BY (account, ts)
"""


class ClickHouseStore:
    """Samples in one ClickHouse table (`SCHEMA`) of the URL's database, created if
    missing. `append` inserts a batch in columns; `query` selects the newest `limit` of
    the account's rows in the window, with the filter and prefixes as SQL; `expire` drops the
    partitions past the retention."""

    def __init__(self, url: str, retention: dt.timedelta, partition_seconds: int = 3600) -> None:
        parts = urlsplit(url)
        self.database = parts.path.strip("/") or "default"
        if not self.database.replace("_", "").isalnum():
            raise ValueError(f"bad ClickHouse database name {self.database!r}")
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
        # supervisor's expiry) has its own, or their queries would share one connection.
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        self.client.execute(SCHEMA)
        # Tables made before the machine column: 18.16 has no ADD COLUMN IF NOT EXISTS.
        have = self.client.execute(
            "SELECT name FROM system.columns WHERE database = %(db)s AND table = 'samples'",
            {"db": self.database},
        )
        if b"machine" not in {name for (name,) in have}:
            self.client.execute("ALTER TABLE samples ADD COLUMN machine String DEFAULT ''")
        self.retention = retention
        self.partition_ns = partition_seconds * NS

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

    def run(self, sql: str, params: dict[str, object] | None = None, **kw) -> list:
        """A read for a user's request: ClickHouse's failures become `SamplesUnavailable`
        saying why in words (the details go to the log)."""
        try:
            return self.client.execute(
                sql, params, settings={"max_execution_time": QUERY_SECONDS}, **kw
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

    def _where(
        self,
        account_id: str,
        start_ns: int,
        end_ns: int,
        f: FilterV1,
        prefixes: tuple,
    ) -> tuple[str, dict[str, object]]:
        """The SQL condition (and its parameters) of the account's samples in
        [start_ns, end_ns] matching `f` with a source or destination in `prefixes`."""
        where = [
            "account = %(account)s",
            "ts >= %(start)s",
            "ts <= %(end)s",
            "part >= %(first)s",
            "part <= %(last)s",
        ]
        params: dict[str, object] = {
            "account": account_id,
            "start": start_ns,
            "end": end_ns,
            "first": start_ns // self.partition_ns,
            "last": end_ns // self.partition_ns,
        }
        # The account's prefixes, family by family (records.in_network in SQL).
        owned = []
        for i, net in enumerate(prefixes):
            names = [f"n{i}_{k}" for k in ("family", "hi", "lo", "mask_hi", "mask_lo")]
            params.update(zip(names, records.bits(net), strict=True))
            family, hi, lo, mask_hi, mask_lo = (f"%({n})s" for n in names)
            owned += [
                f"(family = {family} AND bitAnd({side}_hi, {mask_hi}) = {hi} "
                f"AND bitAnd({side}_lo, {mask_lo}) = {lo})"
                for side in ("src", "dst")
            ]
        where.append(f"({' OR '.join(owned)})")
        for addr, side in ((f.source, "src"), (f.destination, "dst")):
            if addr is not None:
                hi, lo = records.split(addr)
                where.append(
                    f"family = %({side}_family)s AND {side}_hi = %({side}_hi)s "
                    f"AND {side}_lo = %({side}_lo)s"
                )
                params.update({f"{side}_family": addr.version, f"{side}_hi": hi, f"{side}_lo": lo})
        if f.protocol is not None:
            where.append("proto = %(proto)s")
            params["proto"] = f.protocol
        if f.source_port is not None:
            where.append(f"sport = %(sport)s AND proto IN ({PORTS})")
            params["sport"] = f.source_port
        if f.destination_port is not None:
            where.append(f"dport = %(dport)s AND proto IN ({PORTS})")
            params["dport"] = f.destination_port
        if f.either is not None:
            hi, lo = records.split(f.either)
            where.append(
                "family = %(either_family)s AND ((src_hi = %(either_hi)s AND src_lo = "
                "%(either_lo)s) OR (dst_hi = %(either_hi)s AND dst_lo = %(either_lo)s))"
            )
            params.update({"either_family": f.either.version, "either_hi": hi, "either_lo": lo})
        if f.port is not None:
            where.append(f"(sport = %(port)s OR dport = %(port)s) AND proto IN ({PORTS})")
            params["port"] = f.port
        # Only constant column names and placeholders are joined here; every value goes
        # to the driver as a parameter.
        return " AND ".join(where), params

    def query(self, q: SampleQuery) -> np.ndarray:
        if not q.prefixes:
            return np.zeros(0, dtype=records.STORED)
        where, params = self._where(q.account_id, q.start_ns, q.end_ns, q.filter, q.prefixes)
        rows = self.run(
            f"SELECT {', '.join(COLUMNS)}, data FROM samples WHERE {where} "  # noqa: S608
            f"ORDER BY ts DESC LIMIT {int(q.limit)}",
            params,
        )
        out = np.zeros(len(rows), dtype=records.STORED)
        for i, row in enumerate(reversed(rows)):
            for name, value in zip(COLUMNS, row, strict=False):
                out[i][name] = value
            blob = row[-1]
            out[i]["data"][: len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        return out

    def traffic(self, q: TrafficQuery) -> Groups:
        t = tally.Tally(q)
        if not q.prefixes:
            return {}
        where, params = self._where(q.account_id, q.start_ns, q.end_ns - 1, q.filter, q.prefixes)
        params.update({"qstart": q.start_ns, "step": q.step_ns})
        keys = KEYS[t.dim]
        if t.capped:
            # The window's heaviest keys by samples; the others as the OTHER sentinel.
            whole = f"({', '.join(keys)})" if len(keys) > 1 else keys[0]
            top = (
                f"SELECT {whole} FROM samples WHERE {where} GROUP BY {whole} "  # noqa: S608
                f"ORDER BY count() DESC LIMIT {tally.HOUR_GROUPS}"
            )
            other = (
                [str(tally.ADDRESS_OTHER), "0", "0"] if len(keys) > 1 else [str(tally.INT_OTHER)]
            )
            keys = [f"if({whole} IN ({top}), {k}, {o})" for k, o in zip(keys, other, strict=True)]
        names = [f"k{i}" for i in range(len(keys))]
        columns = ", ".join(f"{k} AS {n}" for k, n in zip(keys, names, strict=True))
        rows = self.run(
            f"SELECT intDiv(ts - %(qstart)s, %(step)s) AS b, {columns}, count(), "  # noqa: S608
            f"sum(orig_len) FROM samples WHERE {where} GROUP BY b, {', '.join(names)}",
            params,
        )
        if not rows:
            return {}
        buckets = np.array([r[0] for r in rows], dtype=np.int64)
        samples = np.array([r[-2] for r in rows], dtype=np.int64)
        nbytes = np.array([r[-1] for r in rows], dtype=np.int64)
        if tally.is_address(t.dim):
            keys = np.array([r[1:4] for r in rows], dtype=tally.ADDRESS)
        elif t.dim == "machine":
            names = sorted({r[1].decode() for r in rows})
            codes = dict(zip(names, t.code(names).tolist(), strict=True))
            keys = np.array([codes[r[1].decode()] for r in rows], dtype=np.int64)
        else:
            keys = np.array([r[1] for r in rows], dtype=np.int64)
        t.add(keys, buckets, samples, nbytes)
        return t.groups()

    def seal(self, now_ns: int, prefixes: object) -> int:
        """Nothing to seal: ClickHouse merges its parts itself."""
        return 0

    def expire(self, now_ns: int) -> int:
        cutoff = now_ns - int(self.retention.total_seconds() * NS)
        rows = self.client.execute(
            "SELECT DISTINCT partition FROM system.parts "
            "WHERE database = %(db)s AND table = 'samples' AND active",
            {"db": self.database},
        )
        dropped = 0
        for (partition,) in rows:
            number = int(partition)
            if (number + 1) * self.partition_ns <= cutoff:
                self.client.execute(f"ALTER TABLE samples DROP PARTITION {number}")
                dropped += 1
        return dropped

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.disconnect()
