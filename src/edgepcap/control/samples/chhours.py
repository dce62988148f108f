"""Hour summaries of the ClickHouse store: each whole hour no sample can land in any more
is counted once per group dimension into `hours` (`chsql`), so that a day's traffic view
reads some thousands of summed rows instead of the account's day of samples.

`seal_hour` writes an hour for every account that has samples in it and prefixes now,
dimension by dimension as one `INSERT … SELECT` over all those accounts, then marks it in
`sealed` with the prefixes it counted under; `Summary` reads the hours of a query's window
that are marked under the account's present prefixes, for the queries they can answer:
unfiltered, or filtered by protocol alone. Everything else (other filters, hours not
sealed yet or sealed under other prefixes, the window's last partial 10 s) is counted
from `samples` with the same per-hour cap.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from edgepcap.control.samples import chsql, tally
from edgepcap.control.samples.chsql import ANY, HOUR_NS, T10_NS
from edgepcap.control.samples.traffic import TrafficQuery

Run = Callable[..., list]
# A sealing statement's GROUP BY spills to disk past this, rather than fail on the limit.
SEALING = {"max_bytes_before_external_group_by": 500_000_000}
# Accounts are sealed together up to this many samples of the hour a statement.
BATCH = 1_000_000


def nets_text(prefixes) -> str:
    """The prefixes as `sealed.nets` records them (order and duplicates aside)."""
    return ",".join(sorted({str(n) for n in prefixes}))


def seal_hour(run: Run, hour: int, partition_ns: int, nets: dict[str, tuple]) -> None:
    """Counts the hour's samples of each account of `nets` (inside its prefixes) into
    `hours`, then marks them in `sealed`; rows of a sealing cut short stay unmarked."""
    seal = secrets.randbits(63)
    params: dict[str, object] = {}
    mine = []
    for i, (account, prefixes) in enumerate(sorted(nets.items())):
        params[f"a{i}"] = account
        mine.append(f"(account = %(a{i})s AND {chsql.owned(prefixes, params, f'a{i}n')})")
    start, end = hour * HOUR_NS, (hour + 1) * HOUR_NS - 1
    cond = (
        f"part >= {start // partition_ns} AND part <= {end // partition_ns} "
        f"AND ts >= {start} AND ts <= {end} AND ({' OR '.join(mine)})"
    )
    for code, dim in enumerate(chsql.DIMS):
        keys = list(chsql.KEYS[dim])
        if tally.is_address(dim):
            # The hour's heaviest addresses over all protocols (ANY).
            join, groups = "", {"account": "account", "p": f"toUInt8({ANY})"}
        elif dim in tally.CAPPED:
            # Both the heaviest ports over all protocols (ANY) and those of each protocol.
            join = f"ARRAY JOIN [toUInt8({ANY}), proto] AS p"
            groups = {"account": "account", "p": "p"}
        else:
            join, groups = "", {"account": "account", "p": "proto"}
        picked = [f"{k}2" for k in keys] if dim in tally.CAPPED else keys
        select = chsql.counts(dim, cond, groups, f"intDiv(ts, {T10_NS})", join)
        run(
            f"INSERT INTO hours (account, hour, seal, dim, proto, {', '.join(keys)}, t10, "  # noqa: S608
            f"samples, bytes) SELECT account, {hour}, {seal}, {code}, p, "
            f"{', '.join(picked)}, b, n, s FROM ({select})",
            params,
            settings=SEALING,
        )
    run(
        "INSERT INTO sealed (account, hour, seal, nets) VALUES",
        [(a.encode(), hour, seal, nets_text(p).encode()) for a, p in nets.items()],
    )


class Summary:
    """What the sealed hours answer of a query: `covered` are the inclusive ts ranges
    they count, `columns` reads those counts as columns (b, key columns..., samples,
    bytes)."""

    def __init__(self, run: Run, q: TrafficQuery) -> None:
        self.run, self.q = run, q
        self.dim = tally.DIMENSION[q.group_by]
        f = q.filter
        others = f.model_dump(exclude_none=True, exclude={"protocol"})
        by_proto = f.protocol is None or not tally.is_address(self.dim)
        self.usable = not others and f.protocol != ANY and by_proto
        self.sealed: list[tuple[int, int]] = []
        self.covered: list[tuple[int, int]] = []
        if not self.usable:
            return
        # Only 10-s buckets wholly inside the window (its start is a multiple of 10 s).
        self.t0, self.t1 = q.start_ns // T10_NS, q.end_ns // T10_NS
        self.sealed = run(
            "SELECT hour, seal FROM sealed WHERE account = %(account)s AND hour >= %(h0)s "
            "AND hour <= %(h1)s AND nets = %(nets)s LIMIT 1 BY hour",
            {
                "account": q.account_id,
                "h0": q.start_ns // HOUR_NS,
                "h1": q.end_ns // HOUR_NS,
                "nets": nets_text(q.prefixes),
            },
        )
        for hour, _seal in sorted(self.sealed):
            lo = max(hour * HOUR_NS, self.t0 * T10_NS)
            hi = min((hour + 1) * HOUR_NS, self.t1 * T10_NS)
            if lo < hi:
                self.covered.append((lo, hi - 1))

    def columns(self) -> list:
        if not self.covered:
            return []
        keys = list(chsql.KEYS[self.dim])
        protocol = self.q.filter.protocol
        if protocol is not None:
            proto = f"proto = {int(protocol)}"
        else:
            proto = f"proto = {ANY}" if self.dim in tally.CAPPED else "1"
        hours = ", ".join(f"({int(h)}, {int(s)})" for h, s in self.sealed)
        return self.run(
            f"SELECT intDiv(toInt64(t10) * {T10_NS} - %(qstart)s, %(step)s) AS b, "  # noqa: S608
            f"{', '.join(keys)}, sum(samples), sum(bytes) FROM hours "
            f"WHERE account = %(account)s AND dim = {chsql.DIMS.index(self.dim)} AND {proto} "
            f"AND (hour, seal) IN ({hours}) AND t10 >= {self.t0} AND t10 < {self.t1} "
            f"GROUP BY b, {', '.join(keys)}",
            {"account": self.q.account_id, "qstart": self.q.start_ns, "step": self.q.step_ns},
            columnar=True,
        )


def uncovered(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end] (inclusive) less the sorted, disjoint inclusive `covered` ranges."""
    out, at = [], start
    for lo, hi in covered:
        if lo > at:
            out.append((at, min(lo - 1, end)))
        at = max(at, hi + 1)
    if at <= end:
        out.append((at, end))
    return out
