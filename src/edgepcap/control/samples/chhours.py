"""Hour summaries of the ClickHouse store: each whole hour no sample can land in any more
is counted once per group dimension into `hours` (`chsql`), so that a day's traffic view
reads some thousands of summed rows instead of the account's day of samples; until its
hour is, each 10-minute slice no sample can land in any more is counted into `slices`
the same way, so that the hour in progress is read from `samples` only for its last
slices.

`seal_span` writes a span (an hour or a slice) for every account that has samples in it
and prefixes now, dimension by dimension as one `INSERT … SELECT` over all those
accounts, then marks it (`sealed`, `sliced`) with the prefixes it counted under;
`Summary` reads the hours of a query's window that are marked under the account's
present prefixes, and the slices of its other hours, for the queries they can answer:
unfiltered, or filtered by protocol alone. Everything else (other filters, spans not
summed yet or summed under other prefixes, the window's last partial 10 s) is counted
from `samples` with the same per-hour cap.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from edgepcap.control.samples import chsql, tally
from edgepcap.control.samples.chsql import ANY, COARSE, HOUR, HOUR_NS, SLICE, T10_NS, Span
from edgepcap.control.samples.traffic import TrafficQuery

Run = Callable[..., list]
# A sealing statement's GROUP BY spills to disk past this, rather than fail on the limit.
SEALING = {"max_bytes_before_external_group_by": 500_000_000}
# Accounts are sealed together up to this many samples of the span a statement.
BATCH = 1_000_000


def nets_text(prefixes) -> str:
    """The prefixes as `sealed.nets` records them (order and duplicates aside)."""
    return ",".join(sorted({str(n) for n in prefixes}))


def seal_span(run: Run, span: Span, number: int, partition_ns: int, nets: dict[str, tuple]) -> None:
    """Counts the span's samples of each account of `nets` (inside its prefixes) into
    its table, then marks them; rows of a sealing cut short stay unmarked. A capped
    dimension keeps the heaviest keys of the span."""
    seal = secrets.randbits(63)
    params: dict[str, object] = {}
    mine = []
    for i, (account, prefixes) in enumerate(sorted(nets.items())):
        params[f"a{i}"] = account
        mine.append(f"(account = %(a{i})s AND {chsql.owned(prefixes, params, f'a{i}n')})")
    start, end = number * span.ns, (number + 1) * span.ns - 1
    cond = (
        f"part >= {start // partition_ns} AND part <= {end // partition_ns} "
        f"AND ts >= {start} AND ts <= {end} AND ({' OR '.join(mine)})"
    )
    for code, dim in enumerate(chsql.DIMS):
        keys = list(chsql.KEYS[dim])
        if tally.is_address(dim):
            # The span's heaviest addresses over all protocols (ANY).
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
            f"INSERT INTO {span.table} (account, {span.column}, seal, dim, proto, "  # noqa: S608
            f"{', '.join(keys)}, t10, samples, bytes) SELECT account, {number}, {seal}, "
            f"{code}, p, {', '.join(picked)}, b, n, s FROM ({select})",
            params,
            settings=SEALING,
        )
    if span.grains == 2:  # the 5-minute rows, from the span's own 10-s rows
        columns = f"account, {span.column}, seal, proto, k, fam, hi, lo, machine"
        run(
            f"INSERT INTO {span.table} ({columns}, dim, t10, samples, bytes) "  # noqa: S608
            f"SELECT {columns}, dim + {len(chsql.DIMS)}, intDiv(t10, {COARSE}) * {COARSE} "
            f"AS t, sum(samples), sum(bytes) FROM {span.table} WHERE {span.column} = "
            f"{number} AND seal = {seal} AND dim < {len(chsql.DIMS)} GROUP BY {columns}, dim, t"
        )
    run(
        f"INSERT INTO {span.marks} (account, {span.column}, seal, nets, grains) VALUES",
        [(a.encode(), number, seal, nets_text(p).encode(), span.grains) for a, p in nets.items()],
    )


class Summary:
    """What the summed spans answer of a query: the window's hours marked under the
    account's present prefixes (their 5-minute rows when the window's start and step are
    whole 5 minutes and the hour has them), then the marked slices of its other hours.
    `covered` are the inclusive ts ranges they count, `columns` reads those counts as
    columns (b, key columns..., samples, bytes)."""

    def __init__(self, run: Run, q: TrafficQuery) -> None:
        self.run, self.q = run, q
        self.dim = tally.DIMENSION[q.group_by]
        f = q.filter
        others = f.model_dump(exclude_none=True, exclude={"protocol"})
        by_proto = f.protocol is None or not tally.is_address(self.dim)
        self.usable = not others and f.protocol != ANY and by_proto
        # (span, its (number, seal) marks, dimension code, t10 range [t0, t1) read)
        self.reads: list[tuple[Span, list, int, int, int]] = []
        self.covered: list[tuple[int, int]] = []
        if not self.usable:
            return
        # Only 10-s buckets wholly inside the window (its start is a multiple of 10 s).
        t0, t1 = q.start_ns // T10_NS, q.end_ns // T10_NS
        code = chsql.DIMS.index(self.dim)
        h0, h1 = q.start_ns // HOUR_NS, q.end_ns // HOUR_NS
        hours = self._marks(HOUR, h0, h1)
        sealed = {h for h, _seal, _grains in hours}
        # 5-minute rows for hours the window's end does not cut, so that a cut hour is
        # read as it always is (its 10-s rows to the window's end).
        five = COARSE * T10_NS
        coarse = q.start_ns % five == 0 and q.step_ns % five == 0
        whole = t1 // COARSE * COARSE

        def by_fives(hour: int, grains: int) -> bool:
            return coarse and grains >= 2 and (hour + 1) * HOUR_NS <= whole * T10_NS

        fine = [(h, seal) for h, seal, grains in hours if not by_fives(h, grains)]
        self._read(HOUR, fine, code, t0, t1)
        fives = [(h, seal) for h, seal, grains in hours if by_fives(h, grains)]
        self._read(HOUR, fives, code + len(chsql.DIMS), t0, whole)
        open_hours = [h for h in range(h0, h1 + 1) if h not in sealed]
        if open_hours:
            per = HOUR_NS // SLICE.ns
            found = self._marks(SLICE, open_hours[0] * per, (open_hours[-1] + 1) * per - 1)
            slices = [(n, seal) for n, seal, _grains in found if n // per not in sealed]
            self._read(SLICE, slices, code, t0, t1)
        self.covered.sort()

    def _marks(self, span: Span, first: int, last: int) -> list:
        """(number, seal, grains) of the account's spans in [first, last] under its
        prefixes."""
        c = span.column
        return self.run(
            f"SELECT {c}, seal, grains FROM {span.marks} WHERE account = %(account)s "  # noqa: S608
            f"AND {c} >= %(first)s AND {c} <= %(last)s AND nets = %(nets)s LIMIT 1 BY {c}",
            {
                "account": self.q.account_id,
                "first": first,
                "last": last,
                "nets": nets_text(self.q.prefixes),
            },
        )

    def _read(self, span: Span, marks: list, code: int, t0: int, t1: int) -> None:
        """Reads `marks`' rows of dimension `code` in t10 [t0, t1): what they cover."""
        if not marks:
            return
        self.reads.append((span, marks, code, t0, t1))
        for number, _seal in marks:
            lo = max(number * span.ns, t0 * T10_NS)
            hi = min((number + 1) * span.ns, t1 * T10_NS)
            if lo < hi:
                self.covered.append((lo, hi - 1))

    def columns(self) -> list:
        if not self.covered:
            return []
        keys = ", ".join(chsql.KEYS[self.dim])
        protocol = self.q.filter.protocol
        if protocol is not None:
            proto = f"proto = {int(protocol)}"
        else:
            proto = f"proto = {ANY}" if self.dim in tally.CAPPED else "1"
        selects = []
        for span, marks, code, t0, t1 in self.reads:
            numbers = ", ".join(f"({int(n)}, {int(s)})" for n, s in marks)
            selects.append(
                f"SELECT intDiv(toInt64(t10) * {T10_NS} - %(qstart)s, %(step)s) AS b, "  # noqa: S608
                f"{keys}, sum(samples), sum(bytes) FROM {span.table} "
                f"WHERE account = %(account)s AND dim = {code} AND {proto} "
                f"AND ({span.column}, seal) IN ({numbers}) AND t10 >= {t0} AND t10 < {t1} "
                f"GROUP BY b, {keys}"
            )
        return self.run(
            " UNION ALL ".join(selects),
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
