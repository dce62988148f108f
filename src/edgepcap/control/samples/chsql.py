"""The ClickHouse store's SQL: its tables, the condition of an account's window and filter,
and the traffic view's counts with `tally`'s per-hour cap, for ClickHouse 18.16.

Tables (the sort keys and partitions are explained in `clickhouse`'s docstring):

* `samples`: every sample, as `SCHEMA`.
* `hours`: an hour's counts per 10-s bucket (`t10`, seconds / 10 since the epoch) and key,
  for one account and one group dimension (`dim`, an index of `DIMS`), written by sealing
  (`chhours`). `proto` is the samples' protocol for protocol and machine rows, and for
  port and address rows either ANY (the hour's heaviest keys over all its samples) or one
  protocol (the heaviest among that protocol's samples). The key is `k` (protocols,
  ports), `fam, hi, lo` (addresses) or `machine`; OTHER is `k = INT_OTHER` or `fam = 255`.
  Its rows are written again per 5 minutes (`COARSE`) under dimension code + len(DIMS).
* `sealed`: which (account, hour) `hours` holds, under which sealing (`seal`, so that
  the rows of a sealing cut short are never read), which prefixes (`nets`: rows are
  counted only inside the account's prefixes of sealing time) and whether the 5-minute
  rows were written (`grains` 2).
* `slices` and `sliced`: the same for each 10-minute slice of an hour not sealed yet
  (`SLICE`), the cap applied per slice.

Only constant column names and numbers are formatted into the SQL here; every value from
a request goes to the driver as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepcap.control.samples import tally
from edgepcap.formats import samples as records
from edgepcap.formats.filters import FilterV1

NS = 1_000_000_000
HOUR_NS = 3600 * NS
SLICE_NS = 600 * NS
T10_NS = 10 * NS
ANY = 255  # `hours.proto` of rows counted over every protocol
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
DIMS = (
    "protocol",
    "machine",
    "source_port",
    "destination_port",
    "source_address",
    "destination_address",
)
# Each dimension's key, from `samples`, by the `hours` column it fills (`tally.encode`'s
# key, with NO_PORT as -1).
KEYS = {
    "protocol": {"k": "toInt64(proto)"},
    "source_port": {"k": f"if(proto IN ({PORTS}), toInt64(sport), -1)"},
    "destination_port": {"k": f"if(proto IN ({PORTS}), toInt64(dport), -1)"},
    "source_address": {"fam": "family", "hi": "src_hi", "lo": "src_lo"},
    "destination_address": {"fam": "family", "hi": "dst_hi", "lo": "dst_lo"},
    "machine": {"machine": "machine"},
}
OTHER = {"k": str(tally.INT_OTHER), "fam": str(tally.ADDRESS_OTHER), "hi": "0", "lo": "0"}
HOUR_KEY = ("k", "fam", "hi", "lo", "machine")
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
SUMMARY = """
CREATE TABLE IF NOT EXISTS {table} (
    account FixedString(32),
    {column} UInt32,
    seal UInt64,
    dim UInt8,
    proto UInt8,
    k Int64,
    fam UInt8,
    hi UInt64,
    lo UInt64,
    machine String,
    t10 UInt32,
    samples UInt64,
    bytes UInt64
) ENGINE = MergeTree() PARTITION BY {partition} ORDER BY (account, dim, proto, {column}, t10)
"""
MARKS = """
CREATE TABLE IF NOT EXISTS {table} (
    account FixedString(32),
    {column} UInt32,
    seal UInt64,
    nets String,
    grains UInt8 DEFAULT 1
) ENGINE = MergeTree() PARTITION BY {partition} ORDER BY (account, {column})
"""


@dataclass(frozen=True)
class Span:
    """A length of time summed into a table of counts (`table`, as `SUMMARY`) and marked
    in another (`marks`, as `MARKS`), spans numbered ts // ns in `column`. Both tables
    are partitioned by hour, so that retention drops them as it drops `hours`."""

    table: str
    marks: str
    column: str
    ns: int
    grains: int = 1  # 2: its counts are written again per 5 minutes (`COARSE`)

    def schemas(self) -> tuple[str, str]:
        per_hour = HOUR_NS // self.ns
        partition = self.column if per_hour == 1 else f"intDiv({self.column}, {per_hour})"
        return (
            SUMMARY.format(table=self.table, column=self.column, partition=partition),
            MARKS.format(table=self.marks, column=self.column, partition=partition),
        )


HOUR = Span("hours", "sealed", "hour", HOUR_NS, grains=2)
# A sealed hour's counts are kept twice: per 10-s bucket, and per 5 minutes (`COARSE`
# t10s, under dimension code + len(DIMS)) for views whose start and step are whole
# 5 minutes. A key seen in many 10-s buckets of an hour (a busy port, a machine) is then
# up to 30 times fewer rows to read. `grains` marks an hour that has both (2).
COARSE = 30
# The hour in progress, a slice at a time: what the view would otherwise count from
# `samples` at every request shrinks to the slices not summed yet.
SLICE = Span("slices", "sliced", "slice", SLICE_NS)


def owned(prefixes: tuple, params: dict[str, object], tag: str = "n") -> str:
    """The condition of a source or destination in `prefixes`, family by family
    (`records.in_network` in SQL); its values added to `params`."""
    owned = []
    for i, net in enumerate(prefixes):
        names = [f"{tag}{i}_{k}" for k in ("family", "hi", "lo", "mask_hi", "mask_lo")]
        params.update(zip(names, records.bits(net), strict=True))
        family, hi, lo, mask_hi, mask_lo = (f"%({n})s" for n in names)
        owned += [
            f"(family = {family} AND bitAnd({side}_hi, {mask_hi}) = {hi} "
            f"AND bitAnd({side}_lo, {mask_lo}) = {lo})"
            for side in ("src", "dst")
        ]
    return f"({' OR '.join(owned) or '0'})"


def where(
    account_id: str,
    ranges: list[tuple[int, int]],
    partition_ns: int,
    f: FilterV1,
    prefixes: tuple,
) -> tuple[str, dict[str, object]]:
    """The SQL condition (and its parameters) of the account's samples in any of the
    inclusive `ranges` of ts matching `f` with a source or destination in `prefixes`."""
    params: dict[str, object] = {"account": account_id}
    spans = []
    for i, (start, end) in enumerate(ranges):
        params.update({f"s{i}": start, f"e{i}": end})
        params.update({f"ps{i}": start // partition_ns, f"pe{i}": end // partition_ns})
        spans.append(
            f"(ts >= %(s{i})s AND ts <= %(e{i})s AND part >= %(ps{i})s AND part <= %(pe{i})s)"
        )
    conds = ["account = %(account)s", f"({' OR '.join(spans) or '0'})", owned(prefixes, params)]
    for addr, side in ((f.source, "src"), (f.destination, "dst")):
        if addr is not None:
            hi, lo = records.split(addr)
            conds.append(
                f"family = %({side}_family)s AND {side}_hi = %({side}_hi)s "
                f"AND {side}_lo = %({side}_lo)s"
            )
            params.update({f"{side}_family": addr.version, f"{side}_hi": hi, f"{side}_lo": lo})
    if f.protocol is not None:
        conds.append("proto = %(proto)s")
        params["proto"] = f.protocol
    if f.source_port is not None:
        conds.append(f"sport = %(sport)s AND proto IN ({PORTS})")
        params["sport"] = f.source_port
    if f.destination_port is not None:
        conds.append(f"dport = %(dport)s AND proto IN ({PORTS})")
        params["dport"] = f.destination_port
    if f.either is not None:
        hi, lo = records.split(f.either)
        conds.append(
            "family = %(either_family)s AND ((src_hi = %(either_hi)s AND src_lo = "
            "%(either_lo)s) OR (dst_hi = %(either_hi)s AND dst_lo = %(either_lo)s))"
        )
        params.update({"either_family": f.either.version, "either_hi": hi, "either_lo": lo})
    if f.port is not None:
        conds.append(f"(sport = %(port)s OR dport = %(port)s) AND proto IN ({PORTS})")
        params["port"] = f.port
    return " AND ".join(conds), params


def counts(
    dim: str,
    cond: str,
    groups: dict[str, str],
    bucket: str,
    array_join: str = "",
    hours: list[int] | None = None,
) -> str:
    """SELECT of the samples matching `cond` counted per `groups` (name: expression),
    bucket `b` (an expression) and the dimension's key (`KEYS`' columns); for a capped
    dimension only the `tally.HOUR_GROUPS` heaviest keys of each `groups` value keep their
    own (ties by key, as `tally.reduce`), the rest count as OTHER. Columns: the groups,
    the key columns, b, n (samples), s (original bytes).

    `hours`: the groups are the hour alone (`h`) and these are its values; each hour's
    heaviest are then found by a sort cut at HOUR_GROUPS, where `LIMIT … BY` sorts every
    key of every hour (most of such a query's time when keys are many)."""
    keys = KEYS[dim]
    src = f"samples {array_join} WHERE {cond}"
    by = [*groups, *keys]
    cols = [
        expr if expr == name else f"{expr} AS {name}" for name, expr in {**groups, **keys}.items()
    ]
    if tally.DIMENSION[dim] in tally.CAPPED:
        if hours is not None:
            top = " UNION ALL ".join(
                f"SELECT {', '.join(by)} FROM (SELECT {', '.join(cols)}, count() AS c "  # noqa: S608
                f"FROM {src} AND ts >= {h * HOUR_NS} AND ts < {(h + 1) * HOUR_NS} "
                f"GROUP BY {', '.join(by)} ORDER BY c DESC, {', '.join(keys)} "
                f"LIMIT {tally.HOUR_GROUPS})"
                for h in hours
            )
        else:
            top = (
                f"SELECT {', '.join(by)} FROM (SELECT {', '.join(cols)}, count() AS c "  # noqa: S608
                f"FROM {src} GROUP BY {', '.join(by)} "
                f"ORDER BY {', '.join(groups)}, c DESC, {', '.join(keys)}) "
                f"LIMIT {tally.HOUR_GROUPS} BY {', '.join(groups)}"
            )
        inner = f"SELECT {', '.join(cols)}, {bucket} AS b, orig_len FROM {src}"  # noqa: S608
        whole = f"({', '.join(by)})"
        # The set is built once and named: repeating the IN per key column would have
        # ClickHouse run the subquery once per column.
        first, *others = keys
        picked = [f"if(({whole} IN ({top})) AS top, {first}, {OTHER[first]}) AS {first}2"]
        picked += [f"if(top, {k}, {OTHER[k]}) AS {k}2" for k in others]
        return (
            f"SELECT {', '.join(groups)}, {', '.join(picked)}, b, count() AS n, "  # noqa: S608
            f"sum(orig_len) AS s FROM ({inner}) "
            f"GROUP BY {', '.join(groups)}, {', '.join(f'{k}2' for k in keys)}, b"
        )
    return (
        f"SELECT {', '.join(cols)}, {bucket} AS b, count() AS n, sum(orig_len) AS s "  # noqa: S608
        f"FROM {src} GROUP BY {', '.join(by)}, b"
    )
